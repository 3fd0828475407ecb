"""Bounded waits under torchrun (two gloo ranks on this CPU, the real ``dl1 run`` command).

A rank that stops answering (SIGSTOP: a hung node, a stuck file system) must not leave the others waiting for torch's
default 30 minutes: ``--dist_timeout`` bounds every collective, the rank that waited says in one line which rank it is
and why it stops, and torchrun then ends the job (it sends the stopped rank SIGTERM, then SIGKILL 30 s later: a
grace period torchrun fixes on this path, whatever its ``--shutdown_timeout``; measured: the job ends ~40 s after the
stop with ``--dist_timeout 5``).  A rank whose peer is killed says so in one line too, not with
gloo's 36-line traceback.  Each rank's stderr is read from torchrun's per-rank log files (``--redirects 3``), so the
launcher's own failure summary is not mixed in; no rank prints a warning (DDP's ``broadcast_buffers`` deprecation
warning was printed by every rank at every start).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dl1.train.distributed import lost_peer

TIMEOUT = 5  # --dist_timeout of these runs, seconds
MARGIN = 60  # torchrun's 30 s grace for the stopped rank, and a busy machine; torch's default wait is 1800 s
LONG_GPT = ["-m", "dl1", "run", "gpt", "--smoke", "--max_iters", "1000000", "--eval_interval", "1000000",
            "--dist_timeout", str(TIMEOUT)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DL1_PROGRESS": "0"}


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def _wait_for_training(agents: list[subprocess.Popen], run_dir: Path, ranks: int = 2) -> dict[int, int]:
    """{rank: pid} of the workers once rank 0 has started logging its run (then a little more training)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        workers = {_rank_of(c): c for a in agents for c in _children(a.pid)}
        workers.pop(None, None)
        if len(workers) == ranks and (run_dir / "metrics.jsonl").exists():
            time.sleep(2)  # well into the training loop: every step all-reduces
            return workers
        if any(a.poll() is not None for a in agents):
            out = [a.communicate()[1][-2000:] for a in agents]
            pytest.fail(f"torchrun ended before training started: {out}")
        time.sleep(0.2)
    pytest.fail("the ranks did not start training in 240 s")


def _rank_logs(log_dir: Path) -> dict[int, list[str]]:
    """{global rank: non-empty lines of its stderr} from torchrun's per-rank log files (local rank = folder name)."""
    out: dict[int, list[str]] = {}
    for path in log_dir.rglob("stderr.log"):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        out.setdefault(int(path.parent.name), []).extend(lines)
    return out


def _cleanup(pids: list[int]) -> None:
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break


def test_a_stopped_rank_ends_the_job_within_dist_timeout_with_one_line(tmp_path):
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--log_dir",
           str(logs), "--redirects", "3", *LONG_GPT, "--run_dir", str(run_dir)]
    torchrun = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    workers: dict[int, int] = {}
    try:
        workers = _wait_for_training([torchrun], run_dir)
        os.kill(workers[1], signal.SIGSTOP)  # rank 1 hangs: rank 0 waits in its next all-reduce
        started = time.monotonic()
        try:
            torchrun.communicate(timeout=TIMEOUT + MARGIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the job still ran {TIMEOUT + MARGIN} s after rank 1 stopped (--dist_timeout {TIMEOUT})")
        waited = time.monotonic() - started
    finally:
        _cleanup(list(workers.values()))
        if torchrun.poll() is None:
            torchrun.kill()
            torchrun.communicate()
    assert torchrun.returncode != 0
    assert not any(Path(f"/proc/{pid}").exists() and _rank_of(pid) is not None for pid in workers.values())
    lines = _rank_logs(logs)
    assert len(lines[0]) == 1, lines[0]  # one line, no traceback, no warning at start
    assert re.fullmatch(rf"error \(rank 0 of 2\): lost contact with another rank: no answer within --dist_timeout "
                        rf"{TIMEOUT} s \(a rank stopped or hung\) \(.*[Tt]imed out.*\)", lines[0][0]), lines[0][0]
    assert not any("Traceback" in line or "Warning" in line for line in lines.get(1, []))
    print(f"job ended {waited:.1f} s after rank 1 stopped (--dist_timeout {TIMEOUT})")


def test_a_killed_rank_leaves_its_peer_one_line(tmp_path):
    """Two torchrun agents ("nodes", one rank each) meet at one rendezvous; rank 1's process is killed, and rank 0,
    on the other node, stops at its next all-reduce with one line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    agents, logs = [], [tmp_path / "logs_a", tmp_path / "logs_b"]
    for log_dir in logs:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_id",
               "dl1-peer-loss", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--log_dir",
               str(log_dir), "--redirects", "3", *LONG_GPT, "--run_dir", str(run_dir)]
        agents.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()))
    workers: dict[int, int] = {}
    try:
        workers = _wait_for_training(agents, run_dir)
        os.kill(workers[1], signal.SIGKILL)
        for agent in agents:
            try:
                agent.communicate(timeout=TIMEOUT + MARGIN)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a node still ran {TIMEOUT + MARGIN} s after rank 1 was killed")
    finally:
        _cleanup(list(workers.values()))
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.communicate()
    assert all(a.returncode != 0 for a in agents)
    lines = [line for log_dir in logs for rank_lines in _rank_logs(log_dir).values() for line in rank_lines]
    assert len(lines) == 1, lines  # the survivor's one line; the killed rank says nothing, no warning at start
    assert re.fullmatch(r"error \(rank 0 of 2\): lost contact with another rank: its connection closed \(a rank "
                        r"exited or was killed\) \(.+\)", lines[0]), lines[0]


def test_lost_peer_names_only_backend_connection_errors():
    timed_out = RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out "
                             "waiting 5000ms for recv operation to complete")
    assert lost_peer(timed_out).startswith("lost contact with another rank: no answer")
    assert "unbound_buffer.cc" not in lost_peer(timed_out)
    reset = RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:1: "
                         "Connection reset by peer. This is typically caused by a remote worker hanging")
    assert lost_peer(reset) == ("lost contact with another rank: its connection closed (a rank exited or was killed) "
                                "(Read error [127.0.0.1]:1: Connection reset by peer)")
    assert lost_peer(RuntimeError("CUDA out of memory")) is None
    assert lost_peer(ValueError("gloo timed out")) is None
