"""Requeue-safe runs on the real CLI: SIGTERM/SIGUSR1 save and stop (exit 75, one line), ``--resume auto`` continues
exactly, starts fresh, or takes over a folder that a run left before its first checkpoint; a resume that asks for
fewer iterations than trained is refused; under torchrun a signal to one rank stops every rank at the same step."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dl1.experiments import EXPERIMENTS, make_config

GPT = ["run", "gpt", "--smoke", "--max_iters", "200", "--eval_interval", "100", "--log_interval", "5",
       "--sample_tokens", "10", "--final_sample_tokens", "10", "--threads", "1"]
EXIT_STOPPED = 75


def dl1(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dl1", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DL1_PROGRESS": "0"}, **kwargs)


def records(run: Path) -> list[dict]:
    """Every logged number of a run but wall times and speeds (which no two runs share)."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["split"] != "speed":
            out.append({k: v for k, v in r.items() if k not in ("time", "eval_s")})
    return out


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    needle = f'"step": {step},'
    while time.time() < end and proc.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and needle in metrics.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"the run never reached step {step} (exit {proc.poll()})")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("straight")
    proc = dl1(*GPT, "--run_dir", str(tmp / "run"), "--resume", "auto", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "run"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
def test_a_stop_signal_saves_mid_interval_and_resume_auto_continues_exactly(uninterrupted, tmp_path, sig):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dl1", *GPT, "--run_dir", str(run), "--resume", "auto"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DL1_PROGRESS": "0"})
    wait_for_step(run, 130, proc)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_STOPPED, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"stopped by {sig}" in lines[0] and "--resume" in lines[0], err
    assert "Traceback" not in out + err and not (run / "summary.json").exists()
    import torch

    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["partial"]["batch"] > 0 and 130 <= state["step"] < 200  # saved inside the second interval
    again = dl1(*GPT, "--run_dir", str(run), "--resume", "auto", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from {run / 'checkpoints' / 'last.pt'}" in again.stdout
    assert records(run) == records(uninterrupted)
    summary, reference = (json.loads((r / "summary.json").read_text()) for r in (run, uninterrupted))
    assert summary["final"] == reference["final"] and summary["sample"] == reference["sample"]


def test_resume_auto_takes_over_a_folder_left_before_its_first_checkpoint(uninterrupted, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text('{"experiment": "gpt"}')
    (run / "metrics.jsonl").write_text('{"step": 5, "split": "train_iter", "loss": 9.0}\n')
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / "run.lock").write_text(dead.stdout)  # the lock of a process that no longer exists
    (tmp_path / "keep.txt").write_text("not a record")
    plain = dl1(*GPT, "--run_dir", str(run), cwd=tmp_path)  # without --resume auto the folder is refused
    assert plain.returncode == 2 and "already holds a run" in plain.stderr
    proc = dl1(*GPT, "--run_dir", str(run), "--resume", "auto", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [line for line in proc.stderr.splitlines() if "--resume auto" in line]
    assert len(notes) == 1 and "no checkpoint" in notes[0] and "cleared" in notes[0]
    assert records(run) == records(uninterrupted) and (tmp_path / "keep.txt").exists()


def test_resume_auto_refuses_a_folder_in_use_and_needs_a_run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dl1.run.lock import RunLock; "
                               f"RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = dl1(*GPT, "--run_dir", str(run), "--resume", "auto", cwd=tmp_path)
        assert proc.returncode == 1 and f"in use by process {holder.pid}" in proc.stderr
        assert (run / "metrics.jsonl").exists()  # nothing cleared
    finally:
        holder.kill()
        holder.wait()
    proc = dl1(*GPT, "--resume", "auto", cwd=tmp_path)
    assert proc.returncode == 2 and "--resume auto needs --run_dir" in proc.stderr


def test_resuming_with_fewer_iterations_than_trained_is_refused(uninterrupted, tmp_path):
    config = (uninterrupted / "config.json").read_bytes()
    fewer = [a if a != "200" else "150" for a in GPT]
    proc = dl1(*fewer, "--run_dir", str(uninterrupted), "--resume", str(uninterrupted), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "trained 2 epoch(s), 200 optimisation step(s), more than the 150 steps" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (uninterrupted / "config.json").read_bytes() == config


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow  # three torchrun starts: about 40 s on two cores
def test_under_torchrun_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    base = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "dl1", *GPT]
    env = {**os.environ, "DL1_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    straight = subprocess.run([*base, "--run_dir", str(tmp_path / "a")], capture_output=True, text=True,
                              timeout=300, env=env)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run = tmp_path / "b"
    proc = subprocess.Popen([*base, "--run_dir", str(run), "--resume", "auto"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    wait_for_step(run, 130, proc)
    workers = _children(proc.pid)
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGTERM)  # one rank only (rank 1 is started second)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "stopped by SIGTERM" in err and "exit status 75" in err
    import torch

    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["partial"]["ranks"]) == 2
    again = subprocess.run([*base, "--run_dir", str(run), "--resume", "auto"], capture_output=True, text=True,
                           timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = records(tmp_path / "a"), records(run)
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    for x, y in zip(a, b, strict=True):  # the ranks' loss window is averaged at the save: equal up to rounding
        for k, v in x.items():
            assert y[k] == (pytest.approx(v, rel=1e-5) if isinstance(v, float) else v), (k, x, y)


@pytest.mark.parametrize("name", sorted(n for n, e in EXPERIMENTS.items()
                                        if "resume" in e.field_names() and not e.evaluation_only))
def test_every_resumable_experiment_accepts_resume_auto(name):
    """``--resume auto`` is what the SLURM scripts pass to every experiment: no Config refuses it as a missing path."""
    assert make_config(name, ["--resume", "auto"], smoke=True).resume == "auto"
