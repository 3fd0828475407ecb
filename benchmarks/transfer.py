"""Seconds per epoch of the ResNet-18 linear probe with and without feature caching, CIFAR-sized images at 224 px.

    python benchmarks/transfer.py [--quick] [--threads 1] [--device cpu]

Both sides run the real ``dl1 run resnet-transfer`` code (``--weights random``: the cost does not depend on the weight
values) on fake 32x32 CIFAR-10 files in the real format, resized to 224 px: "uncached" (``--cache_features off``)
runs the frozen backbone on every training and validation image every epoch; "cached" (``--cache_features on``)
computes the 512-d features once before the first epoch and trains ``fc`` on them.  An epoch is training plus
validation plus the checkpoint write.  Epoch 1 of the cached run is shown with the one-off feature extraction added.
Both runs are measured in the same process, one after the other, with the same thread count.  Goals (ratio =
uncached / cached seconds): epoch 1 >= 0.9 (the one-off extraction costs about one uncached epoch's backbone passes)
and, from the second epoch on, >= 10.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from dl1.bench_env import describe, write_json

QUICK = {"n_train": 80, "n_val": 16, "epochs": 3}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/transfer.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"small data ({QUICK}): a check that it works, not a result")
    p.add_argument("--n_train", type=int, default=1280, help="train+validation images (fake CIFAR-10 train set)")
    p.add_argument("--n_val", type=int, default=256, help="validation images split off the train set")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2 to see the cached steady state)")
    p.add_argument("--batch_size", type=int, default=128, help="mini-batch size (course default 128)")
    p.add_argument("--image_size", type=int, default=224, help="side the 32x32 images are resized to")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader workers of the image pipeline")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--out", default="runs/bench/transfer.json", help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.n_val, args.epochs = QUICK["n_train"], QUICK["n_val"], QUICK["epochs"]
    if args.epochs < 2:
        p.error("--epochs must be >= 2")
    return args


def run_probe(args: argparse.Namespace, data_dir: Path, out_dir: Path, cache: str) -> dict:
    from dl1.experiments import execute

    argv = ["--dataset", "cifar10", "--data_dir", str(data_dir), "--weights", "random", "--epochs", str(args.epochs),
            "--batch_size", str(args.batch_size), "--val_size", str(args.n_val), "--image_size", str(args.image_size),
            "--num_workers", str(args.num_workers), "--device", args.device, "--cache_features", cache]
    return execute("resnet-transfer", argv, out_dir=out_dir / cache, quiet=True)["fit"]


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    import torch

    from dl1.data.fake import write_cifar

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar(tmp, "cifar10", n_train=args.n_train, n_test=16)
        fits = {c: run_probe(args, Path(tmp), Path(tmp) / "runs", c) for c in ("off", "on")}
    off, on = fits["off"]["epoch_s"], fits["on"]["epoch_s"]
    cache_s = fits["on"]["feature_cache_s"]
    steady_off, steady_on = statistics.median(off[1:]), statistics.median(on[1:])
    threads = args.threads if not args.num_workers else f"{args.threads} + {args.num_workers} loader workers"
    rows = [{"case": "epoch 1 (cached: + feature extraction)", "epoch": 1, "threads": threads,
             "ours": on[0] + cache_s, "reference": off[0], "ratio": off[0] / (on[0] + cache_s), "goal": ">= 0.9"},
            {"case": f"epochs 2-{args.epochs} (median)", "epoch": "2+", "threads": threads, "ours": steady_on,
             "reference": steady_off, "ratio": steady_off / steady_on, "goal": ">= 10"}]
    result = {"benchmark": "transfer", "device": args.device, "threads": args.threads, "quick": args.quick,
              "n_train": args.n_train - args.n_val, "n_val": args.n_val, "image_size": args.image_size,
              "batch_size": args.batch_size, "epoch_s_uncached": off, "epoch_s_cached": on,
              "feature_cache_s": cache_s, "rows": rows}
    print(f"ResNet-18 probe, {args.n_train - args.n_val} train + {args.n_val} val fake CIFAR images at "
          f"{args.image_size} px, batch {args.batch_size}, device {args.device}, {args.threads} torch thread(s)")
    print(f"{'epoch':<40} {'uncached s':>11} {'cached s':>10} {'speed-up':>9}")
    for r in rows:
        print(f"{r['case']:<40} {r['reference']:>11.3f} {r['ours']:>10.3f} {r['ratio']:>8.1f}x")
    print(f"(feature extraction, once: {cache_s:.3f} s; goals: epoch 1 >= 0.9x, from epoch 2 >= 10x)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(describe())
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
