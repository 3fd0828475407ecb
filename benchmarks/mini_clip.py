"""Seconds per training epoch of dl1's mini-CLIP on Fashion-MNIST at 1 and 2 torch threads, against a bare loop.

    python benchmarks/mini_clip.py [--quick] [--threads 1 2] [--steps 0] [--device cpu]

"ours" is the real thing: ``dl1 run mini-clip`` (default model and batch size, ``--epochs 1``, no prompts), its
Trainer's own training time of the epoch (``training.train_time_s``: batches + steps, no validation).  "bare" is the
same computation written as a plain loop in this file: the same model config, batches of the same size from the same
uint8 images, every distinct caption encoded once per step and gathered, open_clip's ``ClipLoss``, the same AdamW and
temperature cap; no Trainer, schedule, checks or logging.  It is timed in the same process right before and right
after "ours", and the mean of the two is the baseline (a drift of the machine's load cancels).  ratio = ours / bare:
what the experiment's machinery costs (goal: at most 5 % over the bare loop).  ``--steps N`` times N steps instead of a
whole epoch and scales both to one epoch (the row then says so).  Needs Fashion-MNIST.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from dl1.bench_env import describe, write_json

QUICK = {"steps": 5, "threads": [1]}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/mini_clip.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"{QUICK}: a check that it works, not a result")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU thread counts to measure")
    p.add_argument("--steps", type=int, default=0, help="training steps timed (0 = a whole epoch)")
    p.add_argument("--batch_size", type=int, default=256, help="image-caption pairs per step (mini-clip's default)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--data_dir", default=None, help="folder with FashionMNIST/raw/ (default: dl1's look-up)")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--out", default="runs/bench/mini_clip.json", help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    return args


def ours(args, threads: int, tmp: Path) -> dict:
    """One epoch (or ``--steps``) of ``dl1 run mini-clip``, timed by its Trainer."""
    from dl1.experiments import execute

    argv = ["--epochs", "1", "--prompts", "none", "--no-test_noise", "--threads", str(threads), "--device",
            args.device, "--batch_size", str(args.batch_size), "--seed", str(args.seed),
            "--max_batches", str(args.steps)] + (["--data_dir", args.data_dir] if args.data_dir else [])
    summary = execute("mini-clip", argv, out_dir=tmp / f"ours-{threads}", quiet=True)
    return summary["training"]


def bare(args, steps: int) -> float:
    """Seconds of ``steps`` steps of the plain loop (the same work as the experiment's training step)."""
    import torch
    import torch.nn.functional as F
    from open_clip.loss import ClipLoss

    from dl1.data.fashion_clip import CLASSES, FashionBatches, caption_table, training_arrays
    from dl1.models.clip import (
        OPENAI_MEAN,
        OPENAI_STD,
        build_mini_clip,
        clamp_temperature,
        contrastive_optimizer,
        mini_clip_config,
    )
    from dl1.models.clip_templates import FASHION_TEMPLATES

    data = training_arrays(args.data_dir, 5000, args.seed)
    bundle = build_mini_clip(mini_clip_config(), seed=args.seed)
    model = bundle.model.to(args.device).train()
    captions = bundle.tokenizer(caption_table(FASHION_TEMPLATES)).to(args.device)
    optimizer = contrastive_optimizer(model, 3e-3, 0.1)
    loss_fn = ClipLoss()
    batches = FashionBatches(data["x_train"], data["y_train"], args.batch_size, OPENAI_MEAN, OPENAI_STD,
                             shuffle=True, seed=args.seed, n_templates=len(FASHION_TEMPLATES), n_classes=len(CLASSES),
                             drop_last=True, device=args.device)
    start = time.perf_counter()
    for i, (images, _, which) in enumerate(batches):
        if i == steps:
            break
        text = F.normalize(model.encode_text(captions)[which], dim=-1)
        image = F.normalize(model.encode_image(images), dim=-1)
        loss = loss_fn(image, text, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clamp_temperature(model)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("DL1_PROGRESS", "0")
    import torch

    from dl1.run.env import env_info

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in args.threads:
            torch.set_num_threads(t)
            bare(args, 2)  # warm-up: both loops then start with the same process state
            before = bare(args, args.steps or 10**9)
            training = ours(args, t, Path(tmp))
            torch.set_num_threads(t)
            steps = training["steps"]
            per_epoch = (55_000 // args.batch_size) / steps  # the default split: 55,000 training images
            plain = (before + bare(args, steps)) / 2  # bare timed before and after ours: the load's drift cancels
            rows.append({"case": "epoch" if not args.steps else f"epoch (from {steps} steps)", "threads": t,
                         "batch_size": args.batch_size, "steps": steps, "ours_s": training["train_time_s"] * per_epoch,
                         "baseline": plain * per_epoch, "ratio": training["train_time_s"] / plain,
                         "goal": "<= 1.05", "epoch_s": training["train_time_s"] * per_epoch,
                         "cpu_s": training["train_cpu_s"] * per_epoch})
    print(f"mini-CLIP training epoch (55,000 Fashion-MNIST images, batch {args.batch_size}), device {args.device}"
          + (" (--quick: not a result)" if args.quick else ""))
    print(f"{'threads':>7} {'steps':>6} {'epoch s':>8} {'bare s':>8} {'ours/bare':>9} {'cpu s':>8}")
    for r in rows:
        print(f"{r['threads']:>7} {r['steps']:>6} {r['ours_s']:>8.1f} {r['baseline']:>8.1f} {r['ratio']:>9.3f} "
              f"{r['cpu_s']:>8.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"benchmark": "mini_clip", "args": vars(args), "rows": rows,
                     "env": env_info(args.device)})
    print(describe())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
