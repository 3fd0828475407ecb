"""Seconds per prompt-training step on CLIP ViT-B/32 (random weights): padding, fixed patch and deep prompt against a
plain forward + backward of the same frozen model, so that the cost of the prompt itself is visible.

    python benchmarks/prompt_step.py [--quick] [--threads 2] [--batch_size 32] [--device cpu]

"ours" is one step of the real training code: ``VisualPromptCLIP`` / ``DeepPromptCLIP`` forward, cross-entropy,
``Trainer.backward_step`` (backward, SGD lr 40 momentum 0.9 on the prompt, the warm-up + cosine scheduler step).
"plain" is ``encode_image`` -> cosine logits -> cross-entropy -> backward to the input pixels of the same frozen model
(the least a prompt step can cost: the gradient must cross the whole image tower).  The plain step and the three
prompt steps are timed in alternating rounds (each round times each once, the order rotating), with the same thread
count, so a change of machine load hits all of them alike; the ratio is the median over the rounds of each round's
ours / plain.  ``--warmup`` untimed rounds come first.  Goal: a padding or fixed-patch step at most 5 % over the plain
step; a deep-prompt step at most 5 % over the plain step plus its extra tokens' share of the blocks' work.  The weights
are random (``dl1.hub.clip.random_clip``): speed does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dl1.bench_env import describe, write_json

QUICK = {"batch_size": 4, "repeats": 2, "warmup": 1}
METHODS = ("padding", "fixed_patch", "deep_prompt")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/prompt_step.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"{QUICK}: a check that it works, not a result")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch CPU thread counts to measure (default: torch's current count)")
    p.add_argument("--batch_size", type=int, default=32, help="images per step")
    p.add_argument("--repeats", type=int, default=5, help="alternating timed rounds (each times every step once)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--arch", default="ViT-B/32", help="CLIP architecture (random weights)")
    p.add_argument("--prompt_size", type=int, default=30, help="pad width of the padding prompt")
    p.add_argument("--patch_size", type=int, default=1, help="side of the fixed patch")
    p.add_argument("--prompt_num", type=int, default=4, help="deep prompt tokens")
    p.add_argument("--injection_layer", type=int, default=0, help="block before which the deep prompts enter")
    p.add_argument("--num_classes", type=int, default=100, help="classes of the text classifier")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--amp", action="store_true", help="float16 autocast (+ grad scaling for ours) on CUDA")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--out", default="runs/bench/prompt_step.json", help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    return args


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(steps: dict[str, Callable[[], None]], args, device) -> dict[str, list[float]]:
    """Seconds of every step in ``--repeats`` rounds; each round times every step once, the order rotating from round
    to round, so a change of machine load hits all of them alike.  ``--warmup`` untimed rounds first."""
    names = list(steps)
    for _ in range(args.warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            _sync(device)
            t0 = time.perf_counter()
            steps[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def build(method: str, clip_model, text, args):
    from dl1.models.prompt_clip import DeepPromptCLIP, VisualPromptCLIP
    from dl1.models.prompters import build_prompter

    if method == "deep_prompt":
        return DeepPromptCLIP(clip_model, text, args.prompt_num, args.injection_layer)
    size = args.prompt_size if method == "padding" else args.patch_size
    return VisualPromptCLIP(clip_model, text, build_prompter(method, size, 224))


def prompt_step(method: str, clip_model, text, batch, args, device, run_dir: Path) -> Callable[[], None]:
    """One real training step (forward, loss, ``Trainer.backward_step`` with SGD + schedule) of ``method``."""
    import torch

    from dl1.experiments.clip_prompt import Config
    from dl1.experiments.runners.clip_prompt import make_optimizer
    from dl1.run.folder import Run
    from dl1.train import Trainer

    model = build(method, clip_model, text, args).to(device)
    cfg = Config(epochs=1, warmup=1000)
    optimizer, scheduler = make_optimizer(cfg, model, steps_per_epoch=10_000)
    images, targets = batch
    run = Run("prompt-bench", {}, directory=run_dir / method, quiet=True)
    trainer = Trainer(run, {"prompt": model.prompt_learner}, {"prompt": optimizer}, epochs=1,
                      schedulers={"prompt": scheduler}, device=device,
                      precision="fp16" if args.amp and device.type == "cuda" else "fp32")
    model.train()

    def step():  # as the engine runs a train_step: the forward under the run's autocast
        with trainer.autocast():
            loss = torch.nn.functional.cross_entropy(model(images).float(), targets)
        trainer.backward_step(loss)

    return step


def plain_step(clip_model, text, batch, args, device) -> Callable[[], None]:
    """encode_image -> cosine logits -> CE -> backward to the pixels (frozen weights)."""
    import torch
    import torch.nn.functional as F

    images, targets = batch
    scale = clip_model.logit_scale.detach().exp()
    text = F.normalize(text, dim=-1)

    def step():
        x = images.detach().requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp and device.type == "cuda"):
            f = clip_model.encode_image(x)
        logits = scale * F.normalize(f.float(), dim=-1) @ text.t()
        torch.nn.functional.cross_entropy(logits, targets).backward()

    return step


def goal(method: str, clip_model, args) -> float:
    """At most 5 % over the plain step, plus, for the deep prompt, its extra tokens' share of the blocks' work
    (``prompt_num`` tokens on top of the ``L`` image tokens, in the blocks from ``injection_layer`` on)."""
    if method != "deep_prompt":
        return 1.05
    visual = clip_model.visual
    tokens, blocks = visual.positional_embedding.shape[0], len(visual.transformer.resblocks)
    return round(1.05 * (1 + args.prompt_num / tokens * (blocks - args.injection_layer) / blocks), 2)


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    import os

    os.environ.setdefault("DL1_PROGRESS", "0")
    import torch

    from dl1.hub.clip import random_clip
    from dl1.run.device import choose_device
    from dl1.run.env import env_info

    device = choose_device(args.device)
    threads = args.threads or [torch.get_num_threads()]
    torch.manual_seed(args.seed)
    bundle = random_clip(args.arch, device=device)
    g = torch.Generator().manual_seed(args.seed)
    text = torch.randn(args.num_classes, bundle.embed_dim, generator=g).to(device)
    batch = (torch.randn(args.batch_size, 3, 224, 224, generator=g).to(device),
             torch.randint(0, args.num_classes, (args.batch_size,), generator=g).to(device))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        steps = {"plain": plain_step(bundle.model, text, batch, args, device)}
        steps.update({m: prompt_step(m, bundle.model, text, batch, args, device, Path(tmp)) for m in METHODS})
        for t in threads:
            torch.set_num_threads(t)
            times = alternate(steps, args, device)
            plain = statistics.median(times["plain"])
            for method in METHODS:
                per_round = [a / b for a, b in zip(times[method], times["plain"], strict=True)]
                ours = statistics.median(times[method])
                rows.append({"method": method, "threads": t,
                             "batch_size": args.batch_size, "step_s": ours, "plain_s": plain,
                             "ratio": statistics.median(per_round), "ratio_min": min(per_round),
                             "ratio_max": max(per_round), "goal": f"<= {goal(method, bundle.model, args):.2f}",
                             "images_per_s": args.batch_size / ours, "times_s": times[method],
                             "plain_times_s": times["plain"]})
    report(rows, args, device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"benchmark": "prompt_step", "args": vars(args), "rows": rows, "env": env_info(device)})
    print(describe())
    print(f"wrote {out}")
    return 0


def report(rows: list[dict], args: argparse.Namespace, device) -> None:
    shapes = {"padding": f"pad {args.prompt_size}", "fixed_patch": f"patch {args.patch_size}",
              "deep_prompt": f"{args.prompt_num} tokens @ block {args.injection_layer}"}
    amp = ", float16 autocast" if args.amp and device.type == "cuda" else ""
    print(f"prompt training step, CLIP {args.arch} (random weights), batch {args.batch_size}, device {device}{amp}, "
          f"{args.repeats} alternating rounds" + (" (--quick: not a result)" if args.quick else ""))
    print(f"{'method':>12} {'shape':>20} {'threads':>7} {'step s':>8} {'plain s':>8} {'ours/plain':>10} "
          f"{'(min-max)':>11} {'goal':>7} {'img/s':>7}")
    for r in rows:
        print(f"{r['method']:>12} {shapes[r['method']]:>20} {r['threads']:>7} {r['step_s']:>8.3f} "
              f"{r['plain_s']:>8.3f} {r['ratio']:>10.3f} {r['ratio_min']:>5.2f}-{r['ratio_max']:<5.2f} "
              f"{r['goal']:>7} {r['images_per_s']:>7.1f}")
    print("plain = encode_image + cosine logits + CE + backward to the pixels of the same frozen model, timed in the "
          "same rounds; ours/plain = median over the rounds of each round's ratio (min-max over the rounds)")


if __name__ == "__main__":
    sys.exit(main())
