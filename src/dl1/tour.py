"""``dl1 tour [--budget quick|default|full]``: every part of the course that can run here, on real offline data, in
one report (``runs/tour/<timestamp>/report.html`` + ``report.md`` + PNGs).

Parts that need pretrained weights or CIFAR (ResNet transfer, CLIP zero-shot and prompting) run when those are present
and are otherwise listed as skipped with the one command that enables them; they are never faked with random weights.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dl1 import experiments
from dl1.config import Parser
from dl1.data import catalog
from dl1.data.text import resolve_text_file
from dl1.errors import DL1Error, UsageError, first_line
from dl1.report import summary as keys
from dl1.report.cnn import tour_rows as cnn_rows
from dl1.report.mini_clip import tour_rows as mini_clip_rows
from dl1.report.tour import select_figures, write_reports
from dl1.run.files import make_folder, write_file
from dl1.run.reader import check_output_folder

BUDGETS = ("quick", "default", "full")


@dataclass
class Metric:
    label: str
    key: str                  # dotted key in summary.json
    reference: str = ""       # the course's / public number, with its source
    fmt: str = "{:.4g}"


@dataclass
class Part:
    key: str
    title: str
    experiment: str
    argv: dict[str, list[str]]          # per budget
    metrics: list[Metric]
    needs: str = ""                     # "" | "fashion-mnist" | "text" | "cifar100+resnet18" | "cifar+clip"
    enable: str = ""                    # the command that makes a skipped part runnable
    # the part's (label, ours, reference) rows computed from its summary, instead of one row per metric
    rows: Callable[[dict[str, Any]], list[tuple[str, str, str]]] | None = None


def _parts(txt_file: str, clip_weights: str | None, resnet_weights: str | None,
           cache_dir: Path = Path("runs") / "tour" / "cache") -> list[Part]:
    fm = ["--dataset", "fashion-mnist"]
    mini = ["--cache_dir", str(cache_dir)]  # the mini-CLIP is trained once per setting, then reused
    clip = ["--clip_weights", clip_weights] if clip_weights else []
    resnet = ["--weights", resnet_weights] if resnet_weights else []
    return [
        Part("mlp-numpy", "NumPy MLP (from scratch), Fashion-MNIST", "mlp-numpy",
             {"quick": [*fm, "--epochs", "2"], "default": [*fm], "full": [*fm]},
             [Metric("test accuracy", keys.TEST_ACCURACY, "≈ 87.5 % after 10 epochs (measured, plain NumPy loop)",
                     "{:.2%}")], needs="fashion-mnist"),
        Part("mlp-pytorch", "PyTorch MLP with batch norm, Fashion-MNIST", "mlp-pytorch",
             {"quick": [*fm, "--epochs", "2", "--use_batch_norm"], "default": [*fm, "--use_batch_norm"],
              "full": [*fm, "--use_batch_norm"]},
             [Metric("test accuracy", keys.TEST_ACCURACY, "86.5 % with BN, 87.5 % without (10 epochs, measured)",
                     "{:.2%}")],
             needs="fashion-mnist"),
        Part("vae", "VAE on 4-bit Fashion-MNIST", "vae",
             {"quick": [*fm, "--epochs", "1", "--sample_every", "1"],
              "default": [*fm, "--epochs", "3", "--sample_every", "1"], "full": [*fm, "--epochs", "80"]},
             [Metric("test bits/dim", keys.TEST_BPD, "2.45 bpd per-pixel categorical baseline; goal ≤ 1.6 after 80 "
                     "epochs (MNIST: ≈ 0.52, course)")], needs="fashion-mnist"),
        Part("aae", "Adversarial autoencoder, Fashion-MNIST", "aae",
             {"quick": [*fm, "--epochs", "1", "--save_every", "1"],
              "default": [*fm, "--epochs", "2", "--save_every", "1"], "full": [*fm, "--epochs", "100"]},
             [Metric("test reconstruction MSE", keys.AAE_RECON, "MNIST, λ = 0.995: < 0.05 (course)"),
              Metric("discriminator accuracy", keys.AAE_DISC, "≈ 0.5 when codes match the prior")],
             needs="fashion-mnist"),
        Part("gpt", "Character GPT on tiny Shakespeare", "gpt",
             {"quick": ["--txt_file", txt_file, "--preset", "nanogpt-cpu", "--max_iters", "100",
                        "--eval_interval", "50"],
              "default": ["--txt_file", txt_file, "--preset", "nanogpt-cpu"],
              "full": ["--txt_file", txt_file, "--preset", "nanogpt-cpu"]},
             [Metric("best validation loss", keys.GPT_BEST_VAL_LOSS,
                     "1.88–1.90 after 2000 iterations (nanoGPT CPU recipe)"),
              Metric("training tokens/s", keys.GPT_TOKENS_PER_S,
                     "nanoGPT at 1 thread: ≈ 11,300 on a Zen 4 EPYC, 8,100–9,100 on an AVX2 EPYC "
                     "(benchmarks/gpt.py; the tour uses all cores)", "{:,.0f}")],
             needs="text", enable="dl1 tour --txt_file FILE (any text; tiny Shakespeare for the reference)"),
        Part("gnn", "Graph neural networks: the course's questions, checked", "gnn",
             {"quick": [], "default": [], "full": []},
             [Metric("walk counts Aⁿ = enumeration", keys.GNN_WALKS_AGREE, "true (theory)", "{}")]),
        Part("cnn-compare", "CNN model comparison (CPU timing, random weights)", "cnn-compare",
             {"quick": ["--models", "resnet18", "mobilenet_v3_small", "--repeats", "5", "--warmup", "2",
                        "--memory_batch", "16", "--device", "cpu"],
              "default": ["--models", "resnet18", "mobilenet_v3_small", "vit_b_32", "densenet121", "--repeats", "8",
                          "--warmup", "2", "--memory_batch", "16", "--device", "cpu"],
              "full": ["--device", "cpu"]},
             [Metric("ResNet-18 ms/image (no_grad, batch 8)", "table.resnet18.ms_per_image_no_grad",
                     "1.05 ms/image on a GPU (8.4 ms per batch of 8; reference solution): not comparable with a CPU "
                     "time")], rows=cnn_rows),
        Part("resnet-transfer", "ResNet-18 linear probe on CIFAR-100", "resnet-transfer",
             {"quick": [*resnet, "--epochs", "1"], "default": [*resnet, "--epochs", "3"], "full": [*resnet]},
             [Metric("test accuracy", keys.TEST_ACC, "≈ 58 % (course; reference solution 58.49)", "{:.2%}")],
             needs="cifar100+resnet18",
             enable="dl1 run resnet-transfer --data_dir DIR_WITH_cifar-100-python --weights resnet18-f37072fd.pth"),
        Part("clip-zeroshot", "CLIP ViT-B/32 zero-shot on CIFAR-10", "clip-zeroshot",
             {"quick": [*clip, "--dataset", "cifar10", "--split", "test"],
              "default": [*clip, "--dataset", "cifar10", "--split", "test"],
              "full": [*clip, "--dataset", "cifar10", "--split", "test"]},
             [Metric("top-1", keys.TEST_TOP1, "88.92 % (reference solution, test)", "{:.2f} %")], needs="cifar10+clip",
             enable="dl1 tour --clip_weights ViT-B-32.pt --data_dir DIR_WITH_cifar-10-batches-py"),
        Part("clip-prompt", "CLIP visual prompt (padding 30) on CIFAR-10", "clip-prompt",
             {"quick": [*clip, "--dataset", "cifar10", "--epochs", "1", "--max_batches", "20"],
              "default": [*clip, "--dataset", "cifar10", "--epochs", "1"],
              "full": [*clip, "--dataset", "cifar10", "--epochs", "40", "--patience", "5"]},
             [Metric("test top-1", keys.RESULTS_TEST_TOP1, "93.02 % after 40 epochs (reference solution)", "{:.2f} %")],
             needs="cifar10+clip",
             enable="dl1 tour --clip_weights ViT-B-32.pt --data_dir DIR_WITH_cifar-10-batches-py"),
        Part("mini-clip", "CLIP prompting on Fashion-MNIST (mini-CLIP)", "mini-clip",
             {"quick": [*mini, "--train_size", "12000", "--width", "32", "--layers", "2", "--text_width", "32",
                        "--text_layers", "1", "--embed_dim", "32", "--epochs", "2", "--batch_size", "128",
                        "--warmup", "10", "--prompts", "padding:4", "fixed_patch:28", "deep_prompt:0",
                        "--prompt_epochs", "2", "--prompt_batches", "80"],
              "default": [*mini],
              "full": [*mini, "--epochs", "10", "--prompt_epochs", "10", "--prompt_batches", "0"]},
             [Metric("zero-shot, original test: clean / noisy top-1 (%)", "zeroshot.original.clean_noisy",
                     "88.92 / — (CIFAR-10, ViT-B/32; reference solution: another task, for scale only)", "{}")],
             needs="fashion-mnist", rows=mini_clip_rows),
    ]


def _missing(part: Part, data_dir: str | None, txt_file: str, clip_weights: str | None,
             resnet_weights: str | None) -> str | None:
    """Why ``part`` cannot run here (None if it can); checks files only, never downloads."""
    needs = part.needs
    try:
        if "fashion-mnist" in needs:
            catalog.prepare("fashion-mnist", data_dir, download=False)
        if "cifar100" in needs:
            catalog.prepare("cifar100", data_dir, download=False)
        if "cifar10+" in needs:
            catalog.prepare("cifar10", data_dir, download=False)
    except DL1Error as exc:
        return str(exc)
    if needs == "text":
        try:
            resolve_text_file(txt_file, data_dir, download=False)
        except DL1Error as exc:
            return str(exc)
    if "clip" in needs and not (clip_weights and Path(clip_weights).exists()) and not _clip_cached():
        return "CLIP ViT-B/32 OpenAI weights not found (pass --clip_weights FILE or let open_clip download them once)"
    if "resnet18" in needs and not (resnet_weights and Path(resnet_weights).exists()) and not _resnet_cached():
        return "ImageNet ResNet-18 weights not found (pass --weights FILE or let torchvision download them once)"
    return None


def _clip_cached() -> bool:
    roots = [Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")), Path.home() / ".cache" / "clip"]
    return any(any(r.rglob("*ViT-B-32*")) or any(r.rglob("open_clip_pytorch_model.bin")) for r in roots if r.exists())


def _resnet_cached() -> bool:
    home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return any((home / "hub" / "checkpoints").glob("resnet18-*.pth")) if home.exists() else False


def _value(summary: dict[str, Any], metric: Metric) -> str:
    if not summary:  # the part did not run (skipped or failed): no numbers
        return "—"
    value = keys.require(summary, metric.key, "the summary")  # a key the experiment no longer writes is loud
    if value is None:
        return "—"
    try:
        return metric.fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _numbers(part: Part, summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The part's rows of the tour table: its own ``rows`` from the summary, else one per metric."""
    if part.rows is not None and summary:
        return part.rows(summary)
    return [(m.label, _value(summary, m), m.reference) for m in part.metrics]


def _command(part: Part, budget: str, data_dir: str | None) -> str:
    args = part.argv[budget] + (["--data_dir", data_dir] if data_dir and part.needs else [])
    return shlex.join(["dl1", "run", part.experiment, *args])


def run_part(part: Part, budget: str, tour_dir: Path, data_dir: str | None) -> dict[str, Any]:
    """Run one part in-process; failures are recorded, not raised, so the tour always finishes."""
    argv = part.argv[budget] + (["--data_dir", data_dir] if data_dir and part.needs else [])
    t0 = time.time()
    try:
        summary = experiments.execute(part.experiment, argv, out_dir=tour_dir / "runs", quiet=True)
        status = "ok"
        error = ""
    except DL1Error as exc:
        summary, status, error = {}, "failed", str(exc)
    except Exception as exc:  # a bug in one part must not hide the others
        summary, status = {}, "failed"
        error = f"{type(exc).__name__}: {first_line(exc)}"
        traceback.print_exc()
    return {"status": status, "summary": summary, "error": error, "seconds": round(time.time() - t0, 1)}


def _collect_figures(result: dict[str, Any], part: Part, tour_dir: Path) -> list[tuple[str, str]]:
    run_dir = Path(result["summary"].get("run_dir", "")) if result.get("summary") else None
    if not run_dir or not (run_dir / "figures").is_dir():
        return []
    out = []
    names = [p.name for p in (run_dir / "figures").glob("*.png")]
    for name, caption in select_figures(part.experiment, names):
        target = tour_dir / "figures" / f"{part.key}_{name}"
        make_folder(target.parent, tour_dir)  # atomically, never through a link planted in the tour folder
        with (run_dir / "figures" / name).open("rb") as src:
            write_file(target, lambda dst, src=src: shutil.copyfileobj(src, dst), root=tour_dir)
        out.append((f"figures/{target.name}", caption))
    return out


def new_tour_dir(out_dir: Path, attempts: int = 1000) -> Path:
    """A new folder ``OUT_DIR/<timestamp>`` (``-2``, ``-3``, ... when taken), created exclusively (``mkdir`` without
    ``exist_ok``): two tours started at once into one ``--out_dir`` never share a folder, nor write into an existing
    one (or through a link of that name)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1, attempts + 1):
        folder = out_dir / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            folder.mkdir()
        except FileExistsError:  # another tour's (or anything else's, a link included): take the next name
            continue
        except OSError as exc:
            raise DL1Error(f"dl1 tour: cannot create a tour folder in {out_dir}: {first_line(exc)}") from None
        return folder
    raise DL1Error(f"dl1 tour: {attempts} tour folders named {stamp}* already exist in {out_dir}")


BUDGET_HELP = {  # measured on 2-core CPU machines (see docs/getting-started.md for each part's time)
    "quick": "a check that every part runs, not a result (minutes; its mini-CLIP part about 20 s)",
    "default": "what make demo runs: 325-498 s in all on 2 cores (GPT: nanoGPT's 2,000-iteration CPU recipe)",
    "full": "the course's settings (VAE 80 epochs, AAE 100, mini-CLIP 10): hours on a CPU",
}


def parts_help() -> str:
    """The parts and budgets, for ``dl1 tour --help`` (a user should not learn the names from an error)."""
    parts = _parts("shakespeare", None, None)
    width = max(len(p.key) for p in parts)
    lines = ["parts (--parts KEY ...; all by default; a part whose data or weights are missing is skipped):"]
    lines += [f"  {p.key:<{width}}  {p.title}" + (f" [needs {p.needs}]" if p.needs else "") for p in parts]
    lines += ["", "budgets (--budget):"] + [f"  {name:<7}  {text}" for name, text in BUDGET_HELP.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = Parser(prog="dl1 tour", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog=parts_help())
    parser.add_argument("--budget", choices=BUDGETS, default="default",
                        help="quick (a check), default (~5 min on 2 cores) or full (the course's settings: hours)")
    parser.add_argument("--parts", nargs="+", default=None, help="only these parts (default: all)")
    parser.add_argument("--data_dir", default=None, help="dataset folder (default: $DL1_DATA or ./data)")
    parser.add_argument("--txt_file", default="shakespeare", help="text for the GPT part (default: tiny Shakespeare)")
    parser.add_argument("--clip_weights", default=None, help="local CLIP ViT-B/32 checkpoint (enables the CLIP parts)")
    parser.add_argument("--weights", default=None, help="local ResNet-18 ImageNet weights (enables resnet-transfer)")
    parser.add_argument("--out_dir", type=Path, default=Path("runs") / "tour", help="root of tour folders")
    args = parser.parse_args(argv)
    parts = _parts(args.txt_file, args.clip_weights, args.weights, args.out_dir / "cache")
    if args.parts:
        unknown = set(args.parts) - {p.key for p in parts}
        if unknown:
            raise UsageError(f"dl1 tour: unknown part(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(p.key for p in parts)}")
        parts = [p for p in parts if p.key in args.parts]
    check_output_folder(args.out_dir, "--out_dir")
    tour_dir = new_tour_dir(args.out_dir)
    rows = []
    for i, part in enumerate(parts, 1):
        command = _command(part, args.budget, args.data_dir)
        missing = _missing(part, args.data_dir, args.txt_file, args.clip_weights, args.weights)
        print(f"\n=== [{i}/{len(parts)}] {part.title}", flush=True)
        if missing:
            print(f"    skipped: {missing}\n    enable with: {part.enable or command}", flush=True)
            rows.append({"key": part.key, "title": part.title, "status": "skipped", "note": f"{missing}. Enable with: "
                         f"{part.enable or command}", "command": command, "seconds": 0, "figures": [],
                         "numbers": [(m.label, "—", m.reference) for m in part.metrics]})
            continue
        result = run_part(part, args.budget, tour_dir, args.data_dir)
        print(f"    {result['status']} in {result['seconds']} s {result['error']}", flush=True)
        rows.append({"key": part.key, "title": part.title, "status": result["status"], "note": result["error"],
                     "command": command, "seconds": result["seconds"], "sample": result["summary"].get("sample", ""),
                     "figures": _collect_figures(result, part, tour_dir),
                     "numbers": _numbers(part, result["summary"])})
        write_reports(tour_dir, rows, args.budget)  # keep a readable report after every part
    md, page = write_reports(tour_dir, rows, args.budget)
    print(f"\nreport: {page}\n        {md}")
    failed = [r["title"] for r in rows if r["status"] == "failed"]
    if failed:
        raise DL1Error(f"{len(failed)} part(s) failed: {', '.join(failed)} (see {md})")
    return 0
