"""No command overwrites another run's records, and a stopped sweep leaves no orphan (the real ``dl1`` commands).

* ``dl1 sweep``: two grid values that sanitise to one folder name (``dA/t.txt`` and ``dA-t.txt``) get two folders,
  each with a short hash of its exact value, checked before the first run starts; each run records its own value.
* SIGTERM to ``dl1 sweep`` is forwarded to its running run's process group; the sweep waits for the run to end,
  exits 143, and no process still holds the run's folder; rerunning the same command continues the run to the end.
  A combination whose folder another live process holds is reported as still running, not FAILED, and left alone.
* ``dl1 tour``: tour folders are created exclusively, so two tours into one ``--out_dir`` never share one.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dl1.errors import UsageError
from dl1.run.lock import lock_holder
from dl1.sweep import folder_names


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DL1_PROGRESS": "0"}


def _dl1(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dl1", *args], cwd=cwd, capture_output=True, text=True, env=_env(),
                          timeout=timeout)


def _text(path: Path, letters: str, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    path.write_text("".join(rng.choice(letters) for _ in range(4000)))


# -- sweep folder names ----------------------------------------------------------------------------------------------
def test_folder_names_are_injective():
    assert folder_names([{"seed": "1"}, {"seed": "2"}]) == ["seed=1", "seed=2"]  # no collision: names as before
    a, b, c = folder_names([{"txt_file": "dA/t.txt"}, {"txt_file": "dA-t.txt"}, {"txt_file": "other"}])
    assert a != b and c == "txt_file=other"
    assert a.startswith("txt_file=dA-t.txt-") and b.startswith("txt_file=dA-t.txt-")
    assert len({n.casefold() for n in folder_names([{"k": "A"}, {"k": "a"}])}) == 2  # one folder where case is ignored
    with pytest.raises(UsageError, match="would share the run folder"):
        folder_names([{"seed": "1"}, {"seed": "1"}])


def test_sweep_gives_colliding_values_their_own_folders(tmp_path):
    _text(tmp_path / "dA" / "t.txt", "abcdefgh \n", 1)
    _text(tmp_path / "dA-t.txt", "ijklmnop \n", 2)
    proc = _dl1("sweep", "gpt", "--grid", "txt_file=dA/t.txt,dA-t.txt", "--sweep_dir", "sweep", "--", "--smoke",
                "--max_iters", "4", "--eval_interval", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = sorted(p for p in (tmp_path / "sweep").iterdir() if (p / "config.json").is_file())
    assert len(runs) == 2
    recorded = {json.loads((r / "config.json").read_text())["txt_file"]: r.name for r in runs}
    assert set(recorded) == {"dA/t.txt", "dA-t.txt"}  # each run kept its own value: neither resumed the other
    assert proc.stdout.count(": ok") == 2 and "FAILED" not in proc.stdout
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    assert all(s["iters"] == 4 for s in summaries)


def test_sweep_refuses_values_that_would_share_a_folder_before_any_run(tmp_path):
    proc = _dl1("sweep", "mlp-numpy", "--grid", "seed=3,3", "--sweep_dir", "sweep", "--", "--smoke", cwd=tmp_path)
    assert proc.returncode == 2 and "would share the run folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "sweep").exists()


# -- SIGTERM to a sweep ----------------------------------------------------------------------------------------------
SWEEP = ["sweep", "gpt", "--grid", "seed=7", "--sweep_dir", "sweep", "--", "--smoke", "--max_iters", "600",
         "--eval_interval", "30"]


def test_sigterm_to_a_sweep_stops_its_run_and_a_rerun_continues_it(tmp_path):
    folder = tmp_path / "sweep" / "seed=7"
    sweep = subprocess.Popen([sys.executable, "-m", "dl1", *SWEEP], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 300
        while not (folder / "checkpoints" / "last.pt").exists():  # the run has trained and saved once
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[1][-2000:]
            time.sleep(0.2)
        holder = lock_holder(folder)
        assert holder is not None and holder != sweep.pid  # the run, a process of its own
        sweep.send_signal(signal.SIGTERM)
        out, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err and "FAILED" not in out
    assert lock_holder(folder) is None  # the run ended with the sweep: no orphan still writing the folder
    assert not (folder / "summary.json").exists()
    rerun = _dl1(*SWEEP, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "seed=7: ok" in rerun.stdout and "FAILED" not in rerun.stdout
    assert json.loads((folder / "summary.json").read_text())["iters"] == 600
    log = (tmp_path / "sweep" / "seed=7.log").read_text()
    assert "already holds a run" not in log and "[gpt] resumed from" in log  # continued, not refused or restarted


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s run lock (an earlier sweep's run still at work)."""
    code = ("import sys, time\nfrom dl1.run.lock import RunLock\nRunLock(sys.argv[1]).acquire()\nprint('held', "
            "flush=True)\ntime.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                              env=_env())
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_combination_another_process_is_running_is_left_alone_not_failed(tmp_path):
    folder = tmp_path / "sweep" / "seed=1"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"experiment": "mlp-numpy", "seed": 1}))
    holder = _hold_lock(folder)
    try:
        proc = _dl1("sweep", "mlp-numpy", "--grid", "seed=1", "--sweep_dir", "sweep", "--", "--smoke", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1
    assert f"still running in process {holder.pid}" in proc.stdout and "FAILED" not in proc.stdout
    assert "still running in other processes: seed=1" in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "run.lock"]  # nothing started there


# -- tour folders ----------------------------------------------------------------------------------------------------
def test_two_tours_at_once_get_two_folders(tmp_path):
    out = tmp_path / "tours"
    args = ["tour", "--budget", "quick", "--parts", "clip-zeroshot", "--data_dir", str(tmp_path / "no-data"),
            "--out_dir", str(out)]
    tours = [subprocess.Popen([sys.executable, "-m", "dl1", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    results = [t.communicate(timeout=300) for t in tours]
    assert all(t.returncode == 0 for t in tours), [err[-1000:] for _, err in results]
    folders = sorted(p for p in out.iterdir() if p.is_dir() and p.name != "cache")
    assert len(folders) == 2
    pages = {line.split("report: ", 1)[1].strip() for o, _ in results for line in o.splitlines() if "report: " in line}
    assert len(pages) == 2 and all((f / "report.md").is_file() and (f / "report.html").is_file() for f in folders)


def test_tour_folder_is_created_exclusively(tmp_path, monkeypatch):
    """With one clock second for all: the next free name each time, and a planted link is never written through."""
    import dl1.tour as tour

    class Frozen:
        @staticmethod
        def now():
            from datetime import datetime

            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(tour, "datetime", Frozen)
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "tours"
    out.mkdir()
    (out / "20260102-030405").symlink_to(outside, target_is_directory=True)
    first, second = tour.new_tour_dir(out), tour.new_tour_dir(out)
    assert (first.name, second.name) == ("20260102-030405-2", "20260102-030405-3")
    assert not first.is_symlink() and not second.is_symlink() and not any(outside.iterdir())
