"""Every experiment that trains a torch model, data parallel over two CPU processes (gloo), against one process with
the same global batch: both ranks end with identical weights, and the run's final metrics (and weights) equal the
single-process run's to the tolerance stated per experiment.

Equal up to float summation order (1e-5 relative, measured 1e-7 to 1e-9): each rank takes its share of the very global
batch one process takes; the GPT's windows, the VAE's reparameterisation noise and the AAE's prior samples are drawn
for the whole global batch from a stream seeded by (seed, step), each rank keeping its own rows.  The GPT runs without
dropout here (dropout masks come from each rank's own random stream).  One spawn of two ranks runs all six in turn
(one process group), then one ``torchrun`` runs ``gpt --smoke`` end to end as a user would.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

# experiment -> (overrides on top of SMOKE, relative tolerance of metrics and weights)
CASES = {
    "mlp-pytorch": ({"epochs": 2}, 1e-5),
    "gpt": ({"dropout": 0.0}, 1e-5),
    "resnet-transfer": ({}, 1e-5),
    "clip-prompt": ({}, 1e-4),
    "vae": ({}, 1e-5),
    "aae": ({}, 1e-5),
}
SKIP_SPLITS = {"speed", "sample", "baseline"}
SKIP_KEYS = {"step", "epoch", "eval_s", "index", "n", "time"}


def _capture_trainers(store: list) -> None:
    from dl1.train import engine

    fit = engine.Trainer.fit

    def recording_fit(self, *args, **kwargs):
        store.append(self)
        return fit(self, *args, **kwargs)

    engine.Trainer.fit = recording_fit


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.detach().float().cpu().clone() for name, m in trainer.modules.items()
            for k, v in getattr(m, "module", m).state_dict().items() if v.is_floating_point()}


def _names() -> list[str]:
    """All cases, or those named in DL1_DDP_CASES (comma-separated: to iterate on one experiment)."""
    chosen = [n for n in os.environ.get("DL1_DDP_CASES", "").split(",") if n]
    return chosen or list(CASES)


def _run(name: str, folder: str, store: list) -> None:
    """Run one case; an error is written beside the run (the test names it) instead of ending the other cases."""
    import traceback

    from dl1.experiments import execute

    tag = os.environ.get("RANK", "s")
    try:
        execute(name, smoke=True, overrides=CASES[name][0], run_dir=folder, quiet=True)
        torch.save(_weights(store[-1]), os.path.join(folder, f"weights{tag}.pt"))
    except BaseException:  # noqa: BLE001 - reported by the test of this case
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"error{tag}.txt"), "w") as fh:
            fh.write(traceback.format_exc())


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      DL1_PROGRESS="0")
    torch.set_num_threads(1)
    from dl1.train import distributed

    distributed.init_distributed("gloo", init_method=f"file://{init_file}")
    store: list = []
    _capture_trainers(store)
    for name in _names():
        _run(name, os.path.join(out_dir, name, "ddp"), store)
    store.clear()  # the captured trainers hold their wrappers: gone before the group is left (distributed.cleanup)
    distributed.cleanup()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, 2, str(out / "init"), str(out))) for r in (0, 1)]
    for p in procs:
        p.start()
    from dl1.train import engine

    original = engine.Trainer.fit
    store: list = []  # meanwhile, the single-process runs in this process
    _capture_trainers(store)
    try:
        for name in _names():
            _run(name, str(out / name / "single"), store)
    finally:
        engine.Trainer.fit = original
    for p in procs:
        p.join(timeout=600)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return out


def _final(folder) -> dict[str, dict[str, float]]:
    last: dict[str, dict[str, float]] = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["split"] in SKIP_SPLITS:
            continue
        last[record["split"]] = {k: v for k, v in record.items() if isinstance(v, int | float)
                                 and not isinstance(v, bool) and k not in SKIP_KEYS}
    return last


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_match_one_process(runs, name):
    if name not in _names():
        pytest.skip("not in DL1_DDP_CASES")
    tolerance = CASES[name][1]
    ddp, single = runs / name / "ddp", runs / name / "single"
    errors = sorted(p for f in (ddp, single) if f.is_dir() for p in f.glob("error*.txt"))
    assert not errors, "\n".join(f"{p.parent.name}/{p.name}:\n{p.read_text()[-1500:]}" for p in errors)
    w0, w1 = (torch.load(ddp / f"weights{r}.pt", weights_only=True) for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0), "ranks ended with other weights"
    ws = torch.load(single / "weightss.pt", weights_only=True)
    for k in ws:
        scale = ws[k].abs().max().item() or 1.0
        assert (w0[k] - ws[k]).abs().max().item() <= tolerance * max(scale, 1.0), k
    env = json.loads((ddp / "env.json").read_text())
    assert env["world_size"] == 2 and env["distributed"]["backend"] == "gloo"
    assert json.loads((single / "env.json").read_text())["world_size"] == 1
    a, b = _final(ddp), _final(single)
    assert a.keys() == b.keys() and "train" in a
    compared = 0
    for split in a:
        for key in a[split].keys() & b[split].keys():
            x, y = a[split][key], b[split][key]
            assert math.isclose(x, y, rel_tol=tolerance, abs_tol=tolerance), (split, key, x, y)
            compared += 1
    assert compared >= 3


def test_torchrun_gpt_smoke(tmp_path):
    """The README's command: torchrun with two gloo ranks trains the smoke GPT; rank 0 writes the folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DL1_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dl1", "run", "gpt", "--smoke", "--run_dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    env_json = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env_json["world_size"] == 2 and env_json["distributed"]["backend"] == "gloo"
    assert summary["iters"] == 20 and math.isfinite(summary["final"]["val_loss"])
    argv = (tmp_path / "run" / "argv.txt").read_text()
    assert argv.startswith("torchrun --nproc_per_node=2 -m dl1 run gpt")
    assert proc.stdout.count("[gpt] done:") == 1  # rank 0 speaks for the run, the other rank prints nothing


def test_two_nodes_on_one_machine(tmp_path):
    """The README's two-machine command, both "nodes" on this machine: two torchrun agents meet at one c10d
    rendezvous endpoint (one rank each) and train the smoke VAE as one run of world size 2."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DL1_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_id",
           "dl1-test", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "-m", "dl1", "run", "vae",
           "--smoke", "--run_dir", str(tmp_path / "run")]
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in nodes]
    assert all(p.returncode == 0 for p in nodes), [err[-1500:] for _, err in outputs]
    env_json = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env_json["world_size"] == 2 and env_json["distributed"]["backend"] == "gloo"
    argv = (tmp_path / "run" / "argv.txt").read_text()
    assert argv.startswith("torchrun --nnodes=2 --nproc_per_node=1 -m dl1 run vae")
    assert math.isfinite(json.loads((tmp_path / "run" / "summary.json").read_text())["test_bpd"])
