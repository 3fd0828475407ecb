"""Run folders are never overwritten or mixed, checkpoints are written atomically and loaded safely, and every bad
input (a broken file under ``dl1 report``, an output folder that cannot be written, a repeated grid key) is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dl1 import experiments
from dl1.cli import main
from dl1.errors import DL1Error, UsageError
from dl1.run.files import write_json
from dl1.run.folder import Run
from dl1.run.lock import LOCK_NAME, RunLock
from dl1.train import load_checkpoint, save_checkpoint

SMOKE_ARGS = ["--smoke"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes (folders as empty entries)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished mlp-pytorch smoke run (2 epochs, checkpoints/last.pt and best.pt)."""
    out = tmp_path_factory.mktemp("trained")
    summary = experiments.execute("mlp-pytorch", [], smoke=True, out_dir=out, quiet=True)
    return Path(summary["run_dir"])


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(trained_run, target)
    return target


# -- a run folder that holds a run ----------------------------------------------------------------------------------
def test_run_dir_holding_a_run_is_refused_without_resume(run_copy, capsys):
    before = snapshot(run_copy)
    assert main(["run", "mlp-pytorch", "--smoke", "--run_dir", str(run_copy)]) == 2
    err = one_error_line(capsys)
    assert "already holds a run" in err and f"--resume {run_copy}" in err
    assert snapshot(run_copy) == before


def test_resume_continues_in_its_folder_and_releases_the_lock(run_copy):
    summary = experiments.execute("mlp-pytorch", ["--resume", str(run_copy), "--epochs", "3"], smoke=True,
                                  quiet=True)
    assert Path(summary["run_dir"]) == run_copy
    epochs = [r["epoch"] for r in map(json.loads, (run_copy / "metrics.jsonl").read_text().splitlines())
              if r["split"] == "train"]
    assert epochs == [1, 2, 3]
    assert len((run_copy / "argv.txt").read_text().splitlines()) == 2
    assert not (run_copy / LOCK_NAME).exists()


def test_resume_of_a_truncated_checkpoint_changes_nothing(run_copy, capsys):
    last = run_copy / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    before = snapshot(run_copy)
    assert main(["run", "mlp-pytorch", "--smoke", "--resume", str(run_copy)]) == 1
    assert "cannot read checkpoint" in one_error_line(capsys)
    assert snapshot(run_copy) == before


def test_resume_of_another_experiments_folder_changes_nothing(run_copy, capsys):
    before = snapshot(run_copy)
    assert main(["run", "vae", "--smoke", "--resume", str(run_copy)]) == 2
    assert "run of 'mlp-pytorch'" in one_error_line(capsys)
    assert snapshot(run_copy) == before


def test_resume_into_different_sizes_changes_nothing(run_copy, capsys):
    """The checkpoint reads but does not fit: the error comes from inside load_state_dict, after the Run exists."""
    before = snapshot(run_copy)
    assert main(["run", "mlp-pytorch", "--smoke", "--resume", str(run_copy), "--hidden_dims", "7"]) == 1
    assert "does not fit" in one_error_line(capsys)
    assert snapshot(run_copy) == before


def test_resume_of_a_hostile_checkpoint_is_refused_and_changes_nothing(run_copy, tmp_path, capsys):
    marker = tmp_path / "pwned"
    state = load_checkpoint(run_copy / "checkpoints" / "last.pt")
    state["extra"] = Payload(str(marker))
    torch.save(state, run_copy / "checkpoints" / "last.pt")
    before = snapshot(run_copy)
    assert main(["run", "mlp-pytorch", "--smoke", "--resume", str(run_copy)]) == 1
    err = one_error_line(capsys).replace(str(tmp_path), "")
    assert "refused" in err and "weights_only" not in err
    assert not marker.exists() and snapshot(run_copy) == before


class Payload:
    """Creates a file when unpickled (if anything ever unpickled it)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


class Custom:
    pass


def test_weights_only_refusal_is_one_line_without_the_advice(tmp_path):
    torch.save({"model": torch.ones(2), "obj": Custom()}, tmp_path / "custom.pt")
    with pytest.raises(DL1Error) as err:
        load_checkpoint(tmp_path / "custom.pt")
    message = str(err.value).replace(str(tmp_path), "")
    assert "\n" not in message and "cannot read checkpoint" in message and "refused" in message
    assert "weights_only" not in message and "False" not in message


# -- locks ------------------------------------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dl1.run.lock import RunLock
    Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
    RunLock(sys.argv[1]).acquire()
    print("ready", flush=True)
    time.sleep(120)
""")


def _hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_second_process_on_a_run_folder_is_refused_then_a_killed_owners_lock_is_taken_over(tmp_path, capsys):
    folder = tmp_path / "shared"
    holder = _hold(folder)
    try:
        assert (folder / LOCK_NAME).read_text().strip() == str(holder.pid)
        with pytest.raises(DL1Error, match=f"in use by process {holder.pid}"):
            Run("t", {}, directory=folder, quiet=True)
    finally:
        holder.kill()
        holder.wait()
    run = Run("t", {}, directory=folder, quiet=True)  # the killed process's lock is stale now
    assert "taking over the lock" in capsys.readouterr().err
    assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
    run.close()
    assert not (folder / LOCK_NAME).exists()


def test_cli_refuses_a_folder_in_use_with_one_line(tmp_path):
    folder = tmp_path / "busy"
    holder = _hold(folder)
    try:
        proc = subprocess.run([sys.executable, "-m", "dl1", "run", "gnn", "--sizes", "4", "--max_walk_length", "2",
                               "--run_dir", str(folder)], capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and f"in use by process {holder.pid}" in proc.stderr
    assert [p.name for p in folder.iterdir()] == [LOCK_NAME]  # the holder's lock only: nothing written


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_note(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "stale"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(f"{dead.pid}\n")
    run = Run("t", {}, directory=folder, quiet=True)
    assert f"from process {dead.pid}" in capsys.readouterr().err
    run.close()
    assert not (folder / LOCK_NAME).exists()


def test_lock_released_after_error_and_interrupt(tmp_path, monkeypatch):
    module = experiments.load("gnn")

    def interrupted(cfg, run):
        run.log(1, "train", {"loss": 1.0})
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiments.execute("gnn", [], run_dir=tmp_path / "a", quiet=True)
    assert (tmp_path / "a" / "metrics.jsonl").exists() and not (tmp_path / "a" / LOCK_NAME).exists()

    def broken(cfg, run):
        raise DL1Error("no data")

    monkeypatch.setattr(module, "run", broken)
    with pytest.raises(DL1Error):
        experiments.execute("gnn", [], out_dir=tmp_path / "runs", quiet=True)
    assert not (tmp_path / "runs").exists()  # nothing recorded: the folder and the parents it made are gone


def test_failure_before_the_first_record_empties_an_existing_folder(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("kept")
    monkeypatch.setattr(experiments.load("gnn"), "run", lambda cfg, run: (_ for _ in ()).throw(DL1Error("x")))
    with pytest.raises(DL1Error):
        experiments.execute("gnn", [], run_dir=folder, quiet=True)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_two_runs_of_one_process_share_the_lock(tmp_path):
    first = Run("t", {}, root=tmp_path, quiet=True)
    second = Run("t", {}, directory=first.dir, quiet=True)
    first.close()
    assert (first.dir / LOCK_NAME).exists()  # still held by the second
    second.close()
    assert not (first.dir / LOCK_NAME).exists()
    assert RunLock(first.dir).held is False


# -- atomic writes --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704")])
def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch, error):
    path = save_checkpoint(tmp_path / "last.pt", {"w": torch.ones(3), "step": 1})
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, tmp_path / "scratch.pt")
        f.write((tmp_path / "scratch.pt").read_bytes()[:100])  # part of the file, then the disk is full
        raise error

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DL1Error) as err:
        save_checkpoint(path, {"w": torch.zeros(3), "step": 2})
    assert "\n" not in str(err.value) and "previous one is kept" in str(err.value)
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_failed_json_write_removes_its_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(DL1Error, match="cannot write"):
        write_json(path, {"a": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1} and not list(tmp_path.glob("*.tmp"))


# -- output folders -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--out_dir", "--run_dir"])
def test_output_folder_that_is_a_file_is_refused(tmp_path, capsys, flag):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker, blocker / "below"):
        assert main(["run", "gnn", "--sizes", "4", flag, str(target)]) == 2
        assert "is a file" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_output_folder_not_writable_is_refused(tmp_path, capsys, monkeypatch):
    import dl1.run.reader

    monkeypatch.setattr(dl1.run.reader.os, "access", lambda path, mode: False)
    assert main(["run", "gnn", "--sizes", "4", "--out_dir", str(tmp_path / "new" / "runs")]) == 1
    assert "not writable" in one_error_line(capsys)
    assert not (tmp_path / "new").exists()


# -- dl1 report on broken files -------------------------------------------------------------------------------------
def _fake_run(folder: Path, experiment: str = "not-an-experiment") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"experiment": experiment, "lr": 0.1}))
    (folder / "summary.json").write_text(json.dumps({"test": {"acc": 0.5}}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "split": "train", "loss": 1.0 / s}) + "\n"
                                                  for s in (1, 2, 3)))
    return folder


@pytest.mark.parametrize("name, content", [("config.json", b'{"experiment": "gnn", "lr'),
                                           ("config.json", b"\x89PNG\r\n\x1a\n\x00\x00"),
                                           ("summary.json", b'{"test": {"acc": 0.'),
                                           ("summary.json", b"\xff\xfe\x00binary"),
                                           ("config.json", b"[1, 2]")])
def test_report_on_a_broken_file_is_one_line(tmp_path, capsys, name, content):
    run = _fake_run(tmp_path / "r")
    (run / name).write_bytes(content)
    assert main(["report", str(run)]) == 1
    assert name in one_error_line(capsys)


def test_report_skips_a_broken_run_among_good_ones(tmp_path, capsys):
    _fake_run(tmp_path / "sweep" / "a")
    _fake_run(tmp_path / "sweep" / "b")
    (_fake_run(tmp_path / "sweep" / "c") / "config.json").write_bytes(b"\x00\x01")
    assert main(["report", str(tmp_path / "sweep"), "--out", str(tmp_path / "cmp.md")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped" in err[0] and "/c" in err[0]
    assert (tmp_path / "sweep" / "a" / "report.md").exists() and (tmp_path / "cmp.md").exists()


def test_report_leaves_out_binary_metric_lines_with_a_warning(tmp_path, capsys):
    run = _fake_run(tmp_path / "r")
    with open(run / "metrics.jsonl", "ab") as fh:
        fh.write(b"\x00\xff\xfe garbage\n[1, 2]\n{\"step\": 4, \"split\": \"tr")
    assert main(["report", str(run)]) == 0
    assert "3 line(s)" in one_error_line(capsys)
    assert "## Results" in (run / "report.md").read_text()


def test_report_out_that_is_a_folder_is_refused(tmp_path, capsys):
    _fake_run(tmp_path / "s" / "a")
    _fake_run(tmp_path / "s" / "b")
    assert main(["report", str(tmp_path / "s"), "--out", str(tmp_path)]) == 2
    assert "is a folder" in one_error_line(capsys)


# -- sweep ----------------------------------------------------------------------------------------------------------
def test_sweep_repeated_grid_key_is_a_usage_error(tmp_path):
    from dl1.sweep import main as sweep_main

    with pytest.raises(UsageError, match="given twice"):
        sweep_main(["gnn", "--grid", "seed=1,2", "--grid", "seed=3", "--sweep_dir", str(tmp_path / "s")])
    assert not (tmp_path / "s").exists()


def test_sweep_resumes_from_a_checkpoint_and_moves_an_unfinished_run_aside(tmp_path, trained_run):
    from dl1.sweep import _resume_flags

    resumable = tmp_path / "lr=0.1"
    shutil.copytree(trained_run, resumable)
    assert _resume_flags(resumable, resumable=True) == ["--resume", str(resumable)]
    unfinished = _fake_run(tmp_path / "lr=0.2")
    assert _resume_flags(unfinished, resumable=True) == [] and not unfinished.exists()
    assert [p.name.startswith("lr=0.2-") for p in (tmp_path / ".failed").iterdir()] == [True]
    assert _resume_flags(tmp_path / "lr=0.3", resumable=True) == []


# -- pipes ----------------------------------------------------------------------------------------------------------
def test_list_into_a_closed_pipe_ends_quietly():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before dl1 writes (what `dl1 list | head -1` amounts to)
    try:
        proc = subprocess.run([sys.executable, "-m", "dl1", "list"], stdout=write, stderr=subprocess.PIPE, text=True,
                              timeout=60)
    finally:
        os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr and proc.stderr.strip() == ""
