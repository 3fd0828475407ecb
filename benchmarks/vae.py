"""VAE training throughput on Fashion-MNIST-sized 4-bit data: one epoch of the real training code against a bare loop
of the same work, measured in the same run, at 1 and 2 CPU threads.

    python benchmarks/vae.py [--quick] [--threads 1 2] [--repeats 1] [--device cpu]

"ours" is one epoch of the real ``dl1 run vae`` training code (``dl1.experiments.vae.train``: TensorBatches, the shared
Trainer, validation, checkpoints, samples) on random 4-bit images of the real sizes (54 000 train / 6 000 validation;
the content does not change the cost).  "bare" is the same work with nothing around it: forward + backward + Adam over
training batches sliced beforehand, then no-grad forwards over the validation split in the experiment's evaluation
batches.  The two are measured in alternating rounds (``--repeats``), with the same thread count; the ratio is
epoch / bare (the round with the median ratio is shown).  Goal: <= 1.10, i.e. batching, metric averaging, logging,
checkpoints and samples add at most 10 %.  On the CPU, forwards and ``backward_step`` are also timed inside the epoch
(hooks), which splits it into forward/backward, validation and the rest.  One-time process costs (imports, first
kernels) are paid in a warm-up before the timings and reported apart.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from dl1.bench_env import describe, write_json

QUICK = {"n_train": 2048, "n_val": 512}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/vae.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"small data ({QUICK}): a check that it works, not a result")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU thread counts to measure")
    p.add_argument("--repeats", type=int, default=1, help="alternating rounds of epoch and bare loop per thread count")
    p.add_argument("--n_train", type=int, default=54000, help="training images per epoch")
    p.add_argument("--n_val", type=int, default=6000, help="validation images evaluated after the epoch")
    p.add_argument("--batch_size", type=int, default=128, help="mini-batch size (course default 128)")
    p.add_argument("--num_filters", type=int, default=32, help="VAE channels (course default 32)")
    p.add_argument("--z_dim", type=int, default=20, help="latent size (course default 20)")
    p.add_argument("--device", default="cpu", help="torch device (thread counts only matter on the CPU)")
    p.add_argument("--seed", type=int, default=42, help="seed")
    p.add_argument("--out", default="runs/bench/vae.json", help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.n_val = QUICK["n_train"], QUICK["n_val"]
    return args


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed_training(model, device, enabled: bool = True):
    """Accumulate seconds of training forwards (grad enabled), validation forwards and ``Trainer.backward_step``."""
    import torch

    from dl1.train import Trainer

    clock = {"forward": 0.0, "backward_step": 0.0, "eval_forward": 0.0}
    start: list[float] = []

    def pre(module, args):
        _sync(device)
        start.append(time.perf_counter())

    def post(module, args, out):
        _sync(device)
        key = "forward" if torch.is_grad_enabled() else "eval_forward"
        clock[key] += time.perf_counter() - start.pop()

    original = Trainer.backward_step

    def backward_step(self, *a, **k):
        _sync(device)
        t0 = time.perf_counter()
        original(self, *a, **k)
        _sync(device)
        clock["backward_step"] += time.perf_counter() - t0

    if not enabled:
        yield clock
        return
    handles = [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]
    Trainer.backward_step = backward_step
    try:
        yield clock
    finally:
        Trainer.backward_step = original
        for h in handles:
            h.remove()


def warm_up(args: argparse.Namespace, data: dict, device) -> float:
    """One-time process costs kept out of the epoch timings (the first optimiser imports torch._dynamo, the first
    convolutions pick their kernels); returns their seconds."""
    import torch

    from dl1.models.vae import VAE

    t0 = time.perf_counter()
    model = VAE(args.num_filters, args.z_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        _, _, bpd = model(data["train"][: args.batch_size].long())
        bpd.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def measure_ours(args: argparse.Namespace, data: dict, device) -> dict[str, float]:
    """Seconds of one epoch of the experiment's own training function; on the CPU also its forward/backward and
    validation seconds, timed inside it with hooks (on CUDA that would need a synchronisation per call and change
    what is measured, so the epoch runs untouched there)."""
    import torch

    from dl1.experiments.runners.vae import train
    from dl1.experiments.vae import Config
    from dl1.models.vae import VAE
    from dl1.run.folder import Run

    cfg = Config(z_dim=args.z_dim, num_filters=args.num_filters, batch_size=args.batch_size, epochs=1,
                 seed=args.seed, sample_every=10_000)
    torch.manual_seed(args.seed)
    model = VAE(args.num_filters, args.z_dim).to(device)
    instrument = device.type != "cuda"
    with tempfile.TemporaryDirectory() as tmp, timed_training(model, device, enabled=instrument) as clock:
        run = Run("vae-bench", {}, directory=Path(tmp) / "run", quiet=True)
        _sync(device)
        t0 = time.perf_counter()
        train(cfg, run, model, data, device)
        _sync(device)
        total = time.perf_counter() - t0
    result = {"epoch_s": total, "instrumented": instrument}
    if instrument:
        compute, validation = clock["forward"] + clock["backward_step"], clock["eval_forward"]
        result.update(forward_backward_s=compute, validation_s=validation, outside_s=total - compute - validation,
                      outside_share=(total - compute - validation) / total)
    return result


def measure_bare(args: argparse.Namespace, data: dict, device) -> dict[str, float]:
    """Seconds of the epoch's work alone: forward + backward + Adam over pre-sliced training batches, then no-grad
    forwards over the validation split in the evaluation's batches of 500 (no batching, logging, checkpoints)."""
    import torch

    from dl1.models.vae import VAE

    torch.manual_seed(args.seed)
    model = VAE(args.num_filters, args.z_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, v = data["train"], data["val"]
    batches = [x[i:i + args.batch_size].long() for i in range(0, len(x), args.batch_size)]
    val_batches = [v[i:i + 500].long() for i in range(0, len(v), 500)]
    _sync(device)
    t0 = time.perf_counter()
    model.train()
    for b in batches:
        _, _, bpd = model(b)
        opt.zero_grad(set_to_none=True)
        bpd.backward()
        opt.step()
    _sync(device)
    t1 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        for b in val_batches:
            model(b)
    _sync(device)
    t2 = time.perf_counter()
    return {"train_s": t1 - t0, "validation_s": t2 - t1, "bare_s": t2 - t0}


def measure_threads(args: argparse.Namespace, data: dict, device, threads: int) -> dict:
    """``--repeats`` alternating rounds of epoch and bare loop at ``threads`` threads; the round with the median
    ratio becomes the row."""
    import statistics

    import torch

    torch.set_num_threads(threads)
    rounds = []
    for _ in range(args.repeats):
        ours, bare = measure_ours(args, data, device), measure_bare(args, data, device)
        rounds.append({**ours, **{f"bare_{k}" if k != "bare_s" else k: v for k, v in bare.items()},
                       "ratio": ours["epoch_s"] / bare["bare_s"]})
    median = statistics.median_low([r["ratio"] for r in rounds])
    row = next(r for r in rounds if r["ratio"] == median)
    return {"case": "epoch vs bare fwd+bwd+Adam+val loop", "threads": threads, **row, "ours": row["epoch_s"],
            "reference": row["bare_s"], "goal": "<= 1.10", "ratios": [r["ratio"] for r in rounds]}


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    import os

    os.environ.setdefault("DL1_PROGRESS", "0")
    import torch

    from dl1.run.device import choose_device
    from dl1.run.env import env_info

    device = choose_device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    data = {"train": torch.randint(16, (args.n_train, 1, 28, 28), generator=g, dtype=torch.uint8).to(device),
            "val": torch.randint(16, (args.n_val, 1, 28, 28), generator=g, dtype=torch.uint8).to(device)}
    warmup = warm_up(args, data, device)
    rows = [measure_threads(args, data, device, threads) for threads in args.threads]
    print(f"VAE epoch on {args.n_train} train + {args.n_val} val 4-bit 28x28 images, batch {args.batch_size}, "
          f"c={args.num_filters}, z={args.z_dim}, device {device}, {args.repeats} round(s)"
          + (" (--quick: not a result)" if args.quick else ""))
    print(f"{'threads':>7} {'epoch s':>9} {'bare s':>8} {'epoch/bare':>10} {'goal':>7} {'fwd+bwd s':>10} {'val s':>7} "
          f"{'outside s':>10} {'outside %':>10}")
    for r in rows:
        inside = (f"{r['forward_backward_s']:>10.2f} {r['validation_s']:>7.2f} {r['outside_s']:>10.2f} "
                  f"{100 * r['outside_share']:>9.1f}%" if r["instrumented"] else f"{'(not timed inside on CUDA)':>39}")
        print(f"{r['threads']:>7} {r['epoch_s']:>9.2f} {r['bare_s']:>8.2f} {r['ratio']:>10.3f} {r['goal']:>7} {inside}")
    print("bare = forward + backward + Adam over pre-sliced batches, then the validation forwards, same thread count, "
          "alternating with the epoch; goal: the epoch at most 10 % over the bare loop")
    print(f"one-time process warm-up (imports, kernel selection), not in the epochs: {warmup:.2f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "vae", "args": vars(args), "rows": rows, "warmup_s": warmup, "env": env_info(device)}
    write_json(out, result)
    print(describe())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
