"""CLIP zero-shot evaluation throughput: a full pass (data loading, CLIP preprocessing, transfer, encode_image,
logits, top-k counting) against the bare ``encode_image`` rate on the same batches, measured in the same run.

    python benchmarks/clip_zeroshot.py [--quick] [--arch ViT-B/32] [--batch_sizes 32 256] [--num_workers N]

Two ways of feeding the model are measured: ``pil`` (CLIP's PIL preprocessing per image in DataLoader workers, as the
course) and ``batch`` (raw uint8 batches preprocessed on the model's device by ``BatchPreprocess``, the same numbers).
The images are CIFAR-10 test-batch files in the real format (random pixels, written by ``dl1.data.fake``) read by
torchvision's CIFAR reader, so the loading and preprocessing work is the real one; the model has RANDOM weights
(speed does not depend on them).  The full pass is ``dl1.experiments.clip_zeroshot.evaluate`` (what ``dl1 run
clip-zeroshot`` runs), DataLoader start-up included.  The bare rate times ``encode_image`` alone (same float16
autocast on CUDA) on the same batches, already preprocessed and already on the device.  ratio = full / bare; the goal
is >= 0.9 (loading and preprocessing are not the bottleneck).  Each figure is the best of ``--repeats`` passes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from dl1.bench_env import describe, write_json

QUICK = {"images": 96, "batch_sizes": [32], "repeats": 1}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/clip_zeroshot.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"tiny run ({QUICK}): checks that it works, not a result")
    p.add_argument("--arch", default="ViT-B/32", help="CLIP architecture (random weights)")
    p.add_argument("--images", type=int, default=None,
                   help="images per pass (default: 10000 = the CIFAR test split on CUDA, 512 on CPU)")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=None,
                   help="batch sizes to measure (default: 32 = the course's, and 256)")
    p.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (default: min(16, CPUs))")
    p.add_argument("--preprocess", nargs="+", default=["pil", "batch"], choices=("pil", "batch"),
                   help="preprocessing paths to measure: pil (DataLoader workers) and/or batch (on the device)")
    p.add_argument("--repeats", type=int, default=2, help="passes per measurement; the best one counts")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="runs/bench/clip_zeroshot.json", help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        args.images = args.images or QUICK["images"]
        args.batch_sizes = args.batch_sizes or QUICK["batch_sizes"]
        args.repeats = QUICK["repeats"]
    args.batch_sizes = args.batch_sizes or [32, 256]
    return args


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_rate(model, batches, device, repeats: int) -> float:
    """Images/s of ``encode_image`` alone on preprocessed batches already on ``device`` (best of ``repeats``)."""
    import torch

    from dl1.models.clip import encode_images

    n = sum(len(b) for b in batches)
    best = 0.0
    with torch.inference_mode():
        encode_images(model, batches[0])  # warm-up (kernels, autocast caches)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            for b in batches:
                encode_images(model, b)
            _sync(device)
            best = max(best, n / (time.perf_counter() - t0))
    return best


def full_rate(cfg, zs, clip, dataset, device, repeats: int) -> tuple[float, dict]:
    """Images/s of the experiment's whole evaluation pass (best of ``repeats``), how it was fed and its top-1."""
    from dl1.experiments.runners.clip_zeroshot import evaluate, make_batches

    best, how, top1 = 0.0, {}, float("nan")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        batches, prepare, how = make_batches(cfg, dataset, clip, device)  # DataLoader start-up is part of the pass
        metrics = evaluate(zs, batches, device, len(zs.classnames), prepare=prepare)
        _sync(device)
        best, top1 = max(best, metrics["n"] / (time.perf_counter() - t0)), metrics["top1"]
    return best, {**how, "top1": top1}


def measure(args: argparse.Namespace) -> tuple[list[dict], dict]:
    import torch

    from dl1.data.clip import BatchPreprocess, load_clip_dataset
    from dl1.data.fake import write_cifar
    from dl1.experiments.clip_zeroshot import Config
    from dl1.experiments.runners.clip_zeroshot import make_batches
    from dl1.hub.clip import random_clip
    from dl1.models.clip import ZeroshotCLIP
    from dl1.run.device import choose_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    images = args.images or (10_000 if device.type == "cuda" else 512)
    clip = random_clip(args.arch, device=device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar(tmp, "cifar10", n_train=5, n_test=images, seed=0)
        dataset = load_clip_dataset("cifar10", "test", clip.preprocess, tmp)
        t0 = time.perf_counter()
        zs = ZeroshotCLIP(clip, dataset.classes, device=device)
        text_s = time.perf_counter() - t0
        for bs in args.batch_sizes:
            pil = Config(batch_size=bs, num_workers=args.num_workers, preprocess="pil")
            loader, _, _ = make_batches(pil, dataset, clip, device)
            batches = [x.to(device) for x, _ in loader]  # the same batches, preprocessed, on the device
            bare = bare_rate(clip.model, batches, device, args.repeats)
            on_device = BatchPreprocess.from_preprocess(clip.preprocess).to(device)
            diff = (on_device(torch.from_numpy(dataset.data[:bs]).to(device)) - batches[0]).abs().max().item()
            del batches
            for mode in args.preprocess:
                cfg = Config(batch_size=bs, num_workers=args.num_workers, preprocess=mode)
                full, how = full_rate(cfg, zs, clip, dataset, device, args.repeats)
                workers = how["num_workers"]  # DataLoader worker processes (one torch thread each) on top
                threads = torch.get_num_threads()
                rows.append({"batch_size": bs, "images": images, "preprocess": how["preprocess"],
                             "num_workers": workers, "torch_threads": threads,
                             "threads": f"{threads} + {workers} workers" if workers else threads,
                             "full_img_s": round(full, 2), "bare_img_s": round(bare, 2), "top1": how["top1"],
                             "batch_vs_pil_max_abs_diff": diff,
                             "ratio": round(full / bare, 3), "goal": ">= 0.9"})
    info = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu", "arch": args.arch, "weights": "random", "text_features_s": round(text_s, 3),
            "amp": "float16 autocast" if device.type == "cuda" else "none (float32)"}
    return rows, info


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    rows, info = measure(args)
    from dl1.run.env import env_info

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"benchmark": "clip_zeroshot", "args": vars(args), "info": info, "rows": rows,
                     "env": env_info(info["device"])})
    print(describe())
    print(f"CLIP {info['arch']} zero-shot evaluation ({info['weights']} weights), device {info['device_name']}, "
          f"AMP: {info['amp']}, CPUs {os.cpu_count()}; text features once: {info['text_features_s']} s")
    header = ("batch", "images", "preproc", "workers", "threads", "full img/s", "bare img/s", "full/bare", "goal")
    print(" ".join(f"{h:>10}" for h in header))
    for r in rows:
        cells = (r["batch_size"], r["images"], r["preprocess"], r["num_workers"], r["torch_threads"],
                 f"{r['full_img_s']:.1f}", f"{r['bare_img_s']:.1f}", f"{r['ratio']:.3f}", r["goal"])
        print(" ".join(f"{c:>10}" for c in cells))
    print("full = loading + CLIP preprocessing (pil: PIL in DataLoader workers; batch: uint8 batches preprocessed on "
          "the device) + transfer + encode_image + logits + top-k; bare = encode_image alone on the same "
          "preprocessed batches already on the device")
    diffs = {r["batch_vs_pil_max_abs_diff"] for r in rows}
    tops = {(r["batch_size"], r["preprocess"]): r["top1"] for r in rows}
    print(f"batch preprocessing on {info['device']} vs PIL, max |difference| on the first batch: {max(diffs):.3g}; "
          f"top-1 per (batch, path) with these random weights: {tops}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
