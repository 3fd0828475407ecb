"""NumPy MLP training speed against the machine's matrix-product floor, and against the PyTorch MLP.

    python benchmarks/mlp_numpy.py [--quick] [--threads 1 2] [--shapes cifar10 fashion-mnist] [--out FILE]

For each thread count a fresh subprocess (``OMP_NUM_THREADS`` = ``OPENBLAS_NUM_THREADS`` = ``MKL_NUM_THREADS`` = n,
``torch.set_num_threads(n)``) measures, on synthetic float32 data of the dataset's shape (CIFAR-10: 45,000 × 3072;
Fashion-MNIST: 55,000 × 784; 10 classes; the course's MLP, 1 × 128, batch 128, full batches only):

* **floor**: an "epoch" that does only the float32 matrix products of the training steps, at the MLP's exact shapes
  and memory layouts (forward ``X Wᵀ`` per layer, backward ``doutᵀ X`` per layer, ``dout W`` for every layer but the
  first) with preallocated outputs: the epoch's FLOPs over the machine's rate at those shapes (GFLOP/s column).  No
  implementation that does these products can be faster.  Each product's own rate (timed alone, best of several
  rounds) is in the JSON;
* **numpy**: one training epoch of ``dl1.numpy_nn.MLP`` through the experiment's own ``train_epoch`` (shuffle, batch
  gather, forward, loss, backward, SGD);
* **torch**: the same epoch with ``dl1.models.mlp.MLP`` (``TensorBatches``, ``F.cross_entropy``, ``optim.SGD``).

The three are interleaved epoch by epoch (after one warm-up epoch each) and the best of ``--repeats`` is kept, so a
change of machine load hits them alike.

The table shows numpy / floor (goal <= 1.2 at 1 thread) and numpy / torch (goal <= 1).  ``--quick`` uses 6,400
samples per epoch: a check that it works, not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dl1.bench_env import describe, write_json

SHAPES = {"cifar10": (45_000, 3072), "fashion-mnist": (55_000, 784)}
QUICK_SAMPLES = 6400
N_CLASSES = 10
FLOOR_GOAL = 1.2  # numpy epoch / matrix-product floor at 1 thread


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/mlp_numpy.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"{QUICK_SAMPLES} samples per epoch (a check, not a result)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="BLAS/torch thread counts to measure")
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES), help="data shapes")
    p.add_argument("--hidden_dims", type=int, nargs="+", default=[128], help="hidden layer sizes")
    p.add_argument("--batch_size", type=int, default=128, help="mini-batch size")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per implementation (the best is kept)")
    p.add_argument("--no_torch", action="store_true", help="skip the PyTorch MLP")
    p.add_argument("--out", default="runs/bench/mlp_numpy.json", help="JSON results file")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # internal: run one thread count
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------------
# measurements (run inside the per-thread-count worker process)
# ---------------------------------------------------------------------------------------------------------------------

def best_time(fn, inner: int, rounds: int = 7) -> float:
    """Smallest mean time of ``fn()`` over ``rounds`` rounds of ``inner`` calls (seconds per call)."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def gemm_products(sizes: list[int], batch: int) -> list[tuple[str, int, float, object]]:
    """The matrix products of one training step at the MLP's shapes and layouts: (name, layer, FLOPs, call)."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    products = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        x = rng.standard_normal((batch, fan_in), dtype=f32)                      # (B, M)
        w = rng.standard_normal((fan_out, fan_in), dtype=f32)                    # (N, M)
        dout = rng.standard_normal((batch, fan_out), dtype=f32)                  # (B, N)
        y, dw, dx = np.empty((batch, fan_out), f32), np.empty_like(w), np.empty_like(x)
        flops = 2.0 * batch * fan_in * fan_out
        products.append(("X Wt", i, flops, lambda x=x, w=w, y=y: np.matmul(x, w.T, out=y)))
        products.append(("doutT X", i, flops, lambda x=x, dout=dout, dw=dw: np.matmul(dout.T, x, out=dw)))
        if i > 0:  # the input layer needs no input gradient
            products.append(("dout W", i, flops, lambda w=w, dout=dout, dx=dx: np.matmul(dout, w, out=dx)))
    return products


def product_rates(products: list) -> list[dict]:
    """Each product timed alone (best of several rounds): the machine's float32 rate at that shape."""
    rows = []
    for name, layer, flops, fn in products:
        t = best_time(fn, inner=max(3, int(2e7 / flops)))
        rows.append({"layer": layer, "product": name, "gflop": flops / 1e9, "seconds": t, "gflops": flops / t / 1e9})
    return rows


def floor_epoch(products: list, batches: int) -> float:
    """Wall time of an "epoch" that does only the step's matrix products, ``batches`` times (the floor)."""
    calls = [fn for *_, fn in products]
    t0 = time.perf_counter()
    for _ in range(batches):
        for fn in calls:
            fn()
    return time.perf_counter() - t0


def numpy_trainer(x: np.ndarray, y: np.ndarray, hidden: list[int], batch: int):
    """A function that runs one training epoch of the NumPy MLP (the experiment's own ``train_epoch``)."""
    from dl1.experiments.runners.mlp_numpy import train_epoch
    from dl1.numpy_nn import MLP, SGD

    model = MLP(x.shape[1], hidden, N_CLASSES, dtype=np.float32, rng=np.random.default_rng(0))  # as the experiment
    opt = SGD(model.parameters(), lr=0.01)
    return lambda epoch: train_epoch(model, opt, x, y, batch, np.random.default_rng(epoch))


def torch_trainer(x: np.ndarray, y: np.ndarray, hidden: list[int], batch: int):
    """A function that runs one training epoch of the PyTorch MLP (same data, batch size and plain SGD)."""
    import torch
    import torch.nn.functional as F

    from dl1.data.loaders import TensorBatches
    from dl1.models.mlp import MLP

    torch.manual_seed(0)
    model = MLP(x.shape[1], hidden, N_CLASSES)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def epoch_fn(epoch: int) -> None:
        for xb, yb in TensorBatches(tx, ty, batch_size=batch, shuffle=True, seed=0, epoch=epoch, drop_last=True):
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return epoch_fn


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure_shape(args: argparse.Namespace, name: str) -> dict:
    """Floor, NumPy and PyTorch epochs interleaved (so load changes hit all three alike); best of the repeats."""
    n, d = SHAPES[name]
    n = QUICK_SAMPLES if args.quick else n
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)                            # (N, D)
    y = rng.integers(0, N_CLASSES, n)
    batches = n // args.batch_size
    products = gemm_products([d, *args.hidden_dims, N_CLASSES], args.batch_size)
    runners = {"floor_s": lambda e: floor_epoch(products, batches), "numpy_s": numpy_trainer(x, y, args.hidden_dims,
                                                                                             args.batch_size)}
    if not args.no_torch:
        runners["torch_s"] = torch_trainer(x, y, args.hidden_dims, args.batch_size)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for epoch in range(args.repeats + 1):  # epoch 0 warms up
        for key, fn in runners.items():
            times[key].append(timed(fn, epoch))
    step_flops = sum(f for _, _, f, _ in products)
    row = {"samples": n, "inputs": d, "batches": batches, "epoch_gflop": step_flops * batches / 1e9,
           **{k: min(v[1:]) for k, v in times.items()}, "all_times": times, "products": product_rates(products)}
    row["gflops"] = row["epoch_gflop"] / row["floor_s"]
    return row


def worker(args: argparse.Namespace) -> dict:
    """All measurements at one thread count (the BLAS thread count was fixed by the environment)."""
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.worker)
    return {"threads": args.worker, "shapes": {name: measure_shape(args, name) for name in args.shapes}}


# ---------------------------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------------------------

def run_worker(args: argparse.Namespace, argv: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker with {threads} thread(s) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    head = (f"{'shape':<14} {'threads':>7} {'samples':>8} {'GFLOP/s':>8} {'floor s':>8} {'numpy s':>8} "
            f"{'torch s':>8} {'numpy/floor':>11} {'numpy/torch':>11}")
    lines = [head, "-" * len(head)]
    for res in results:
        for name, r in res["shapes"].items():
            torch_s = r.get("torch_s")
            lines.append(f"{name:<14} {res['threads']:>7} {r['samples']:>8} {r['gflops']:>8.1f} {r['floor_s']:>8.3f} "
                         f"{r['numpy_s']:>8.3f} {torch_s if torch_s else float('nan'):>8.3f} "
                         f"{r['numpy_s'] / r['floor_s']:>11.2f} "
                         f"{(r['numpy_s'] / torch_s) if torch_s else float('nan'):>11.2f}")
    return "\n".join(lines)


def ratio_rows(results: list[dict]) -> list[dict]:
    """Rows for ``dl1 bench``: numpy / floor (goal <= 1.2 at 1 thread; none at more threads, where the floor's products
    use every core perfectly and the element-wise passes do not) and numpy / torch (goal <= 1) per shape and thread
    count."""
    rows = []
    for res in results:
        for name, r in res["shapes"].items():
            rows.append({"case": f"{name} epoch numpy/floor", "threads": res["threads"], "ours_s": r["numpy_s"],
                         "floor": r["floor_s"], "ratio": r["numpy_s"] / r["floor_s"],
                         "goal": f"<= {FLOOR_GOAL}" if res["threads"] == 1 else None})  # the goal is set at 1 thread
            if r.get("torch_s"):
                rows.append({"case": f"{name} epoch numpy/torch", "threads": res["threads"], "ours_s": r["numpy_s"],
                             "baseline": r["torch_s"], "ratio": r["numpy_s"] / r["torch_s"], "goal": "<= 1"})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return 0
    results = [run_worker(args, argv, t) for t in args.threads]
    print(f"NumPy MLP epoch vs matrix-product floor and PyTorch MLP (hidden {args.hidden_dims}, batch "
          f"{args.batch_size}, float32, synthetic data{', QUICK' if args.quick else ''}; cpu_count {os.cpu_count()})")
    print(table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"benchmark": "mlp_numpy", "quick": args.quick, "hidden_dims": args.hidden_dims,
                     "batch_size": args.batch_size, "cpu_count": os.cpu_count(), "rows": ratio_rows(results),
                     "results": results})
    print(describe())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
