"""dl1 under a real SLURM cluster, started here: Debian's slurmctld, slurmd and munge (installed when missing), one
node, configured in a temporary folder.  Through the batch scripts of scripts/slurm/: a 2-rank smoke GPT (the
multi-node script: srun + torchrun with a c10d rendezvous) records world size 2; a job that gets
``scancel --signal=TERM`` mid-training saves, is requeued by its script, and finishes with exactly the metrics of an
uninterrupted run.  The daemons are stopped by their pid files however the test ends."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, need

pytestmark = pytest.mark.slurm

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
PROGRAMS = ["slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "munged"]
SCRIPTS = ROOT / "scripts" / "slurm"
GPT = ["run", "gpt", "--smoke", "--max_iters", "200", "--eval_interval", "100", "--log_interval", "5",
       "--sample_tokens", "10", "--final_sample_tokens", "10", "--threads", "1"]


def _installed() -> bool:
    return all(shutil.which(p) or Path("/usr/sbin", p).exists() for p in PROGRAMS)


def _install() -> bool:
    """Debian's SLURM and munge, when missing and apt and root are at hand (about 40 packages, under a minute)."""
    if _installed():
        return True
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in ([], ["update"]):
        if attempt:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        proc = subprocess.run(["apt-get", "install", "-y", "-q", *PACKAGES], env=env, capture_output=True,
                              timeout=600)
        if proc.returncode == 0:
            break
    return _installed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class Cluster:
    """One node (this machine) of a cluster whose whole state lives in ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.pid_files = {name: root / f"{name}.pid" for name in ("munged", "slurmctld", "slurmd")}

    def write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "munge", "logs"):
            (r / d).mkdir(mode=0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        cores = os.cpu_count() or 1
        self.conf.write_text("\n".join([
            "ClusterName=dl1test", f"SlurmctldHost={self.host}", "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge",  # cred_expire: how long a requeued job waits (120 s)
            f"AuthInfo=socket={r / 'munge' / 'munge.socket'},cred_expire=10",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={self.pid_files['slurmctld']}", f"SlurmdPidFile={self.pid_files['slurmd']}",
            f"SlurmctldLogFile={r / 'logs' / 'slurmctld.log'}", f"SlurmdLogFile={r / 'logs' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SwitchType=switch/none",
            "MpiDefault=none", "SchedulerType=sched/builtin", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none", "JobCompType=jobcomp/none", "ReturnToService=2",
            "JobRequeue=1", "KillWait=30", "MinJobAge=600", "SlurmdTimeout=60", "InactiveLimit=0",
            f"NodeName={self.host} CPUs={cores} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))

    def start(self) -> None:
        r = self.root
        subprocess.run([_program("munged"), "--force", f"--key-file={r / 'munge' / 'munge.key'}",
                        f"--socket={r / 'munge' / 'munge.socket'}", f"--pid-file={self.pid_files['munged']}",
                        f"--log-file={r / 'logs' / 'munged.log'}", f"--seed-file={r / 'munge' / 'munge.seed'}"],
                       check=True, capture_output=True, timeout=30)
        subprocess.run([_program("slurmctld"), "-f", str(self.conf), "-c"], env=self.env, check=True,
                       capture_output=True, timeout=30)
        subprocess.run([_program("slurmd"), "-f", str(self.conf), "-N", self.host], env=self.env, check=True,
                       capture_output=True, timeout=30)
        end = time.time() + 60
        while time.time() < end:
            info = self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip()
            if info in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise AssertionError(f"the SLURM node never came up: {info!r}\n{self.logs()}")

    def stop(self) -> None:
        """Stop the daemons this cluster started, by their pid files (slurmd first)."""
        for name in ("slurmd", "slurmctld", "munged"):
            path = self.pid_files[name]
            try:
                pid = int(path.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: {proc.stderr}")
        return proc

    def submit(self, script: Path, dl1_args: list[str], cwd: Path, *options: str, env: dict | None = None) -> str:
        """sbatch from ``cwd`` with the test's environment (its venv's python and torchrun first on PATH)."""
        venv_bin = str(Path(sys.executable).parent)
        job_env = {**self.env, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "DL1_PROGRESS": "0",
                   "OMP_NUM_THREADS": "1", **(env or {})}
        proc = subprocess.run(["sbatch", "--parsable", *options, str(script), *dl1_args], cwd=cwd, env=job_env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def wait(self, job_id: str, timeout: float = 240) -> dict[str, str]:
        end = time.time() + timeout
        while time.time() < end:
            info = self.job(job_id)
            if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
                return info
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} did not end within {timeout} s: {self.job(job_id)}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((self.root / "logs").glob("*")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    need("SLURM (slurmctld, slurmd, slurm-client, munge)", _install(),
         "make test-slurm (apt-get install slurmctld slurmd slurm-client munge, as root)")
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    c.write_config()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _output(folder: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(folder.glob("slurm-*.out")))


def test_two_ranks_through_the_multi_node_script_record_world_size_2(cluster, tmp_path):
    run = tmp_path / "run"
    job = cluster.submit(SCRIPTS / "multi_node.sbatch", GPT[:2] + ["--smoke"], tmp_path, "--nodes=1",
                         "--cpus-per-task=2", env={"DL1_NPROC": "2", "DL1_RUN_DIR": str(run),
                                                   "DL1_RDZV_PORT": str(_free_port())})
    info = cluster.wait(job)
    out = _output(tmp_path)
    assert info["JobState"] == "COMPLETED", out + cluster.logs()
    assert json.loads((run / "env.json").read_text())["world_size"] == 2, out
    assert (run / "summary.json").exists() and "dl1-slurm: finished" in out
    assert "torchrun --nproc_per_node=2 -m dl1 run gpt" in (run / "argv.txt").read_text()


def test_scancel_term_mid_training_saves_requeues_and_ends_as_an_uninterrupted_run(cluster, tmp_path):
    straight = tmp_path / "straight"
    proc = subprocess.run([sys.executable, "-m", "dl1", *GPT, "--run_dir", str(straight)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "DL1_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "run"
    job = cluster.submit(SCRIPTS / "single_node.sbatch", GPT, tmp_path, "--cpus-per-task=1",
                         env={"DL1_NPROC": "1", "DL1_RUN_DIR": str(run)})
    end = time.time() + 180
    while time.time() < end:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and '"step": 130,' in metrics.read_text():
            break
        assert cluster.job(job).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), _output(tmp_path)
        time.sleep(0.05)
    else:
        raise AssertionError(f"the job never reached step 130\n{_output(tmp_path)}\n{cluster.logs()}")
    cluster.run("scancel", "--signal=TERM", job)
    info = cluster.wait(job, timeout=300)
    out = _output(tmp_path)
    assert info["JobState"] == "COMPLETED", out + cluster.logs()
    assert int(info["Restarts"]) == 1, out
    assert "stopped by SIGTERM" in out and "exit status 75" in out and "requeueing job" in out, out
    assert "resumed from" in out and "dl1-slurm: finished" in out, out

    def records(folder: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("time", "eval_s")}
                for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if r["split"] != "speed"]

    assert records(run) == records(straight)
    assert json.loads((run / "summary.json").read_text())["final"] == \
        json.loads((straight / "summary.json").read_text())["final"]
