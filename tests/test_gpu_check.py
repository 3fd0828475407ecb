"""scripts/gpu_check.py on a CPU: the dry run's table (smoke rows run, gpt under torchrun with two gloo ranks, real
rows planned with their inputs checked), a failing row and the exit status, the budget, the per-row timeout, and the
equality checks the script runs on the GPU."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
EXPERIMENTS = ("mlp-pytorch", "resnet-transfer", "clip-prompt", "vae", "aae", "gpt")


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def check(args, tmp, timeout=600):
    """Run the script; return (exit code, its JSON report, stdout)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(tmp / "out"), *args],
                          capture_output=True, text=True, timeout=timeout)
    report_path = tmp / "out" / "gpu_check.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return proc.returncode, report, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from dl1.data.fake import write_idx

    root = tmp_path_factory.mktemp("gpu_check_data")
    write_idx(root, "fashion-mnist", gz=True)
    (root / "tiny_shakespeare.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50)
    return root


@pytest.fixture(scope="module")
def dry_run(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check_dry")
    # bf16 runs on a CPU, fp16 needs CUDA (fp32, the CPU default's third precision, runs the same way)
    return check(["--dry_run", "--data_dir", str(data), "--precisions", "bf16,fp16", "--jobs", "2"],
                 tmp) + (tmp,)


def test_dry_run_table(dry_run, data):
    code, report, out, tmp = dry_run
    assert code == 0, out[-3000:]
    rows = report["rows"]
    keys = [(r["experiment"], r["data"], r["precision"], r["ranks"], r["launch"]) for r in rows]
    assert len(keys) == len(set(keys))
    by = {(r["experiment"], r["data"] == "smoke", r["precision"], r["ranks"]): r for r in rows}
    for e in EXPERIMENTS:
        for p in ("bf16", "fp16"):
            assert (e, True, p, 1) in by and (e, False, p, 1) in by, (e, p)
    for e in ("gpt", "vae"):  # the real runs under torchrun (planned), two ranks on a CPU
        assert by[(e, False, "bf16", 2)]["launch"] == "torchrun"
        assert by[(e, False, "bf16", 2)]["status"] == "planned"
    ran = [r for r in rows if r["status"] == "ok"]
    assert {(r["experiment"], r["ranks"]) for r in ran} == {*((e, 1) for e in EXPERIMENTS), ("gpt", 2)}
    for r in ran:  # the run folder's own numbers
        assert r["data"] == "smoke" and r["precision"] == "bf16"
        assert r["steps"] > 0 and (r["steps_per_s"] or 0) > 0, r
        assert math.isfinite(r["final_loss"]), r
        assert Path(r["run_dir"], "summary.json").is_file()
    torchrun = by[("gpt", True, "bf16", 2)]
    assert json.loads(Path(torchrun["run_dir"], "env.json").read_text())["world_size"] == 2
    assert all(r["status"] == "needs CUDA" and r["steps"] is None for r in rows if r["precision"] == "fp16"
               and r["experiment"] not in ("resnet-transfer", "clip-prompt"))
    for e in ("mlp-pytorch", "vae", "aae", "gpt"):
        assert by[(e, False, "bf16", 1)]["status"] == "planned"
    for e in ("resnet-transfer", "clip-prompt"):  # no ImageNet/CLIP weights, no CIFAR-100 here
        row = by[(e, False, "bf16", 1)]
        assert row["status"] == "skipped" and "CIFAR-100" in row["error"]
    for r in rows:  # every row's command is printed, the real rows' with the data
        assert " ".join(r["command"][-6:]) in out
    assert str(data / "tiny_shakespeare.txt") in by[("gpt", False, "bf16", 1)]["command"]
    assert report["checks"]["status"] == "planned" and report["failed"] == 0
    md = (tmp / "out" / "gpu_check.md").read_text()
    assert md.count("\n| ") == len(rows) + 1 and "| experiment | data | precision | ranks |" in md


def test_failing_rows_and_the_budget(data, tmp_path):
    """A missing --txt_file fails gpt's real rows (reported, exit 1); with no time left nothing else starts."""
    code, report, out = check(["--data_dir", str(data), "--experiments", "gpt", "--precisions", "fp32,fp16",
                               "--txt_file", str(tmp_path / "missing.txt"), "--budget_s", "0"], tmp_path)
    assert code == 1, out[-2000:]
    status = {(r["data"] == "smoke", r["precision"], r["launch"]): r["status"] for r in report["rows"]}
    assert status == {(True, "fp32", "python"): "not run: budget", (True, "fp16", "python"): "needs CUDA",
                      **{(False, p, launch): "failed" for p in ("fp32", "fp16") for launch in ("python", "torchrun")}}
    assert all("missing.txt" in r["error"] for r in report["rows"] if r["status"] == "failed")
    assert report["checks"]["status"] == "not run: budget" and report["failed"] == 6  # 4 + 2 not run
    assert "failed: --txt_file" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_a_row_that_fails_or_hangs(tmp_path):
    g = load_script()
    env = g.child_env("cpu")
    row = g.Row("gpt", "smoke", "fp32", 1, "python", run_dir=str(tmp_path / "run"))
    row.command = [sys.executable, "-m", "dl1", "run", "gpt", "--smoke", "--device", "cpu", "--txt_file",
                   str(tmp_path / "nowhere.txt"), "--run_dir", row.run_dir]
    g.execute_row(row, 120, tmp_path / "logs", env)
    assert row.status == "failed" and row.error.startswith("error: text file not found"), row.error
    slow = g.Row("gpt", "smoke", "fp32", 1, "python", command=[sys.executable, "-c", "import time; time.sleep(60)"])
    g.execute_row(slow, 1, tmp_path / "logs", env)
    assert slow.status == "failed" and slow.error == "timed out after 1 s" and slow.wall_s < 30


def test_error_line():
    g = load_script()
    assert g.error_line("warning\nerror: --precision fp16 needs a CUDA device\n") == \
        "error: --precision fp16 needs a CUDA device"
    assert g.error_line("Traceback (most recent call last):\n  File x\nTypeError: bad amp\n") == "TypeError: bad amp"
    assert g.error_line("W... torchrun noise\nerror (rank 1 of 2): mnist not found\n"
                        "Traceback (most recent call last):\n"
                        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n") == \
        "error (rank 1 of 2): mnist not found"


def test_equality_checks_pass_on_cpu():
    result = load_script().equality_checks("cpu")
    assert result["passed"], result
    assert set(result["values"]) == set(result["tolerances"])
