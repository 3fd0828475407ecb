"""Figures and report of the model comparison (``cnn-compare``), computed from the run folder alone.

Reads the ``model`` records of ``metrics.jsonl`` (one per model; the last one wins) and ``summary.json``/``env.json``
for the device, and writes ``figures/cnn_top1_vs_time.png``, ``cnn_time_vs_params.png``, ``cnn_nograd_time.png``,
``cnn_nograd_memory.png`` and ``table.md`` (the comparison table; the run also starts its ``report.md`` with it, and
``dl1 report`` later rewrites ``report.md`` in its generic form while ``table.md`` stays).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dl1.report import markdown, new_figure, save_figure
from dl1.run.files import read_jsonl, write_text_atomic
from dl1.run.reader import RunFolder

# The reference solution's forward time at batch 8 with no_grad, in ms per BATCH, on a Snellius GPU.
REFERENCE_MS_PER_BATCH = {"resnet18": 8.4, "mobilenet_v3_small": 6.9, "vit_b_32": 20.1, "vgg11": 25.3,
                          "densenet121": 25.5, "vit_s_8": 103.6}
REFERENCE_BATCH = 8
SPREAD_LIMIT = 0.20  # a timing whose interquartile range exceeds 20 % of its median is flagged
TABLE_KEYS = ("label", "params", "top1", "ms_per_image_no_grad", "ms_per_image_grad", "memory_mb_no_grad",
              "memory_mb_grad")
FIGURES = ("cnn_top1_vs_time.png", "cnn_time_vs_params.png", "cnn_nograd_time.png", "cnn_nograd_memory.png")


def load_rows(run_dir: Path) -> dict[str, dict[str, Any]]:
    """model name -> its last ``model`` record in metrics.jsonl."""
    rows: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(Path(run_dir) / "metrics.jsonl"):
        if rec.get("split") == "model":
            rows[rec["model"]] = rec
    return rows


def _context(run_dir: Path) -> dict[str, Any]:
    folder = RunFolder(run_dir)
    summary = dict(folder.summary)
    if "device_name" not in summary:
        summary["device_name"] = folder.env.get("cuda_device") or "CPU"
    return summary


def _spread(rec: dict[str, Any], mode: str) -> tuple[float, float]:
    """(lower, upper) error-bar lengths per image from the quartiles."""
    med = rec[f"ms_per_image_{mode}"]
    return med - rec.get(f"q1_ms_per_image_{mode}", med), rec.get(f"q3_ms_per_image_{mode}", med) - med


def _scatter(ax, rows, xs, ys, xerr=None) -> None:
    for i, rec in enumerate(rows.values()):
        err = None if xerr is None else [[xerr[i][0]], [xerr[i][1]]]
        ax.errorbar(xs[i], ys[i], xerr=err, fmt="o", ms=7, capsize=3, label=rec["label"])
        approx = " (≈)" if str(rec.get("top1_source", "")).startswith("approximate") else ""
        ax.annotate(rec["label"] + approx, (xs[i], ys[i]), textcoords="offset points", xytext=(6, 5), fontsize=8)


def _bars(ax, rows, key: str, ylabel: str, errs: dict[str, list] | None = None) -> None:
    names = list(rows)
    x = np.arange(len(names))
    for j, (mode, text) in enumerate((("grad", "with grad"), ("no_grad", "torch.no_grad()"))):
        vals = [rows[n][f"{key}_{mode}"] for n in names]
        yerr = None if errs is None else np.array(errs[mode]).T
        ax.bar(x + (j - 0.5) * 0.4, vals, 0.4, yerr=yerr, capsize=2, label=text)
    ax.set_xticks(x, [rows[n]["label"] for n in names], rotation=30, ha="right")
    ax.set_ylabel(ylabel)


def _legend_with_headroom(ax) -> None:
    """Legend in the upper left, above the tallest bar (x20 on a log axis, x1.2 on a linear one)."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * (20 if ax.get_yscale() == "log" else 1.2))
    ax.legend(loc="upper left", ncol=2)


def make_report(run_dir: Path) -> list[Path]:
    """Write the four figures and table.md; returns their paths."""
    run_dir = Path(run_dir)
    rows = load_rows(run_dir)
    if not rows:
        return []
    ctx = _context(run_dir)
    where = ctx.get("device_name", "?")
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = [fig_dir / f for f in FIGURES]
    ms = [r["ms_per_image_no_grad"] for r in rows.values()]

    fig, ax = new_figure(figsize=(6.5, 4.5))
    ranked = {n: r for n, r in rows.items() if r.get("top1") is not None}
    _scatter(ax, ranked, [r["ms_per_image_no_grad"] for r in ranked.values()], [r["top1"] for r in ranked.values()],
             [_spread(r, "no_grad") for r in ranked.values()])
    ax.set_xlabel(f"ms per image (batch {ctx.get('batch_size', 8)}, no_grad, median, IQR bars)")
    ax.set_ylabel("ImageNet top-1 (%)")
    ax.set_title(f"Accuracy vs speed — {where}", fontsize=10)
    _save(fig, paths[0])

    fig, ax = new_figure(figsize=(6.5, 4.5))
    _scatter(ax, rows, [r["params"] / 1e6 for r in rows.values()], ms)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("ms per image (no_grad, median)")
    ax.set_title(f"Speed vs size — {where}", fontsize=10)
    _save(fig, paths[1])

    fig, ax = new_figure(figsize=(7, 4.5))
    errs = {m: [_spread(r, m) for r in rows.values()] for m in ("grad", "no_grad")}
    _bars(ax, rows, "ms_per_image", "ms per image (median, IQR bars)", errs)
    _legend_with_headroom(ax)
    ax.set_title(f"Forward time with and without no_grad (batch {ctx.get('batch_size', 8)}) — {where}", fontsize=10)
    _save(fig, paths[2])

    fig, ax = new_figure(figsize=(7, 4.5))
    _bars(ax, rows, "memory_mb", "MB held after the forward (output alive)")
    ax.set_yscale("log")
    _legend_with_headroom(ax)
    method = next(iter(rows.values())).get("memory_method", "")
    ax.set_title(f"Memory, batch {ctx.get('memory_batch', 64)} — {where}\n({method})", fontsize=9)
    _save(fig, paths[3])

    write_text_atomic(run_dir / "table.md", report_markdown(rows, ctx), root=run_dir)  # never through a link
    return [*paths, run_dir / "table.md"]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    save_figure(fig, path)


def spread(median: Any, q1: Any, q3: Any) -> float | None:
    """How much a timing varied across repeats: (Q3 - Q1) / median (None when a number is missing)."""
    if not all(isinstance(v, int | float) for v in (median, q1, q3)) or median <= 0:
        return None
    return (q3 - q1) / median


def _flag(value: float | None) -> str:
    """'' or the warning for a spread above ``SPREAD_LIMIT``."""
    if value is None or value <= SPREAD_LIMIT:
        return ""
    return f"spread {value:.0%} across repeats (> {SPREAD_LIMIT:.0%}): unreliable, rerun on a quiet machine"


def spread_notes(rows: dict[str, dict[str, Any]]) -> list[str]:
    """One line per timing (model and grad mode) whose spread across repeats exceeds ``SPREAD_LIMIT``."""
    notes = []
    for rec in rows.values():
        for mode in ("no_grad", "grad"):
            flag = _flag(spread(*(rec.get(f"{q}ms_per_image_{mode}") for q in ("", "q1_", "q3_"))))
            if flag:
                notes.append(f"{rec['label']} ({mode}): {flag}")
    return notes


def tour_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The tour's rows ``(label, ours, reference)`` for a cnn-compare summary: per timed model our median ms per
    image (no_grad) beside the reference solution's, converted from ms per batch of 8 to ms per image.  The
    reference ran on a GPU: beside a CPU time it is marked not comparable, a GPU time gets the ratio.  A timing
    whose spread across repeats exceeds 20 % is flagged."""
    gpu = str(summary.get("device", "cpu")).startswith("cuda")
    where = summary.get("device_name") or summary.get("device", "?")
    batch = summary.get("batch_size", REFERENCE_BATCH)
    rows = []
    for name, rec in (summary.get("table") or {}).items():
        ms = rec["ms_per_image_no_grad"]
        timing = ((summary.get("details") or {}).get(name) or {}).get("timing", {}).get("no_grad", {})
        flag = _flag(spread(ms, timing.get("q1_ms_per_image"), timing.get("q3_ms_per_image")))
        ours = f"{ms:.3g} ms/image on {where}"
        ref_batch = REFERENCE_MS_PER_BATCH.get(name)
        if ref_batch is None:
            reference = "— (not in the reference solution)"
        else:
            ref = ref_batch / REFERENCE_BATCH
            reference = f"{ref:.3g} ms/image on a GPU ({ref_batch} ms per batch of {REFERENCE_BATCH}; reference " \
                        f"solution)"
            if gpu:
                ours += f" ({ms / ref:.2f}× the reference)"
            else:
                reference += ": not comparable with a CPU time"
        if batch != REFERENCE_BATCH:
            ours += f", batch {batch} (reference: {REFERENCE_BATCH})"
        rows.append((f"{rec.get('label', name)} ms/image (no_grad, median)", ours + (f"; ⚠ {flag}" if flag else ""),
                     reference))
    return rows


def report_markdown(rows: dict[str, dict[str, Any]], ctx: dict[str, Any]) -> str:
    """The comparison table in Markdown, with the device and the measurement methods stated."""
    method = next(iter(rows.values())).get("memory_method", "") if rows else ""
    lines = [
        "# Model comparison (cnn-compare)", "",
        f"Device: **{ctx.get('device_name', '?')}** (torch {ctx.get('torch', '?')}, "
        f"{ctx.get('torch_threads', '?')} CPU threads); images {ctx.get('image_size', '?')} px; random weights "
        f"(timing only), top-1 from torchvision weight metadata.",
        f"Time: median ms per image at batch {ctx.get('batch_size', '?')} over {ctx.get('repeats', '?')} repeats, "
        f"model in eval mode both ways. Memory: batch {ctx.get('memory_batch', '?')}, {method}.", "",
        "| model | params (M) | ImageNet top-1 (%) | ms/image no_grad | ms/image grad | MB no_grad | MB grad |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rec in rows.values():
        top1 = "—" if rec.get("top1") is None else f"{rec['top1']:.2f}"
        if str(rec.get("top1_source", "")).startswith("approximate"):
            top1 = f"≈ {rec['top1']:.0f}"
        lines.append(f"| {markdown.cell(rec['label'])} | {rec['params'] / 1e6:.2f} | {top1} | "
                     f"{rec['ms_per_image_no_grad']:.3f} | {rec['ms_per_image_grad']:.3f} | "
                     f"{rec['memory_mb_no_grad']:.3g} | {rec['memory_mb_grad']:.4g} |")
    for note in spread_notes(rows):
        lines.append(f"\nTiming spread: {note}.")
    for name, why in (ctx.get("skipped") or {}).items():
        lines.append(f"\n{markdown.text(name)}: {markdown.cell(why)}")
    return "\n".join(lines) + "\n"
