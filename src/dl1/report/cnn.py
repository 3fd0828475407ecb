"""Figures and report of the model comparison (``cnn-compare``), computed from the run folder alone.

Reads the ``model`` records of ``metrics.jsonl`` (one per model; the last one wins) and ``summary.json``/``env.json``
for the device, and writes ``figures/cnn_top1_vs_time.png``, ``cnn_time_vs_params.png``, ``cnn_nograd_time.png``,
``cnn_nograd_memory.png`` and ``table.md`` (the comparison table; the run also starts its ``report.md`` with it, and
``dl1 report`` later rewrites ``report.md`` in its generic form while ``table.md`` stays).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dl1.report import new_figure, save_figure
from dl1.runtime import read_jsonl

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
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    if "device_name" not in summary:
        env_path = Path(run_dir) / "env.json"
        env = json.loads(env_path.read_text()) if env_path.exists() else {}
        summary["device_name"] = env.get("cuda_device") or "CPU"
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
    import numpy as np

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

    (run_dir / "table.md").write_text(report_markdown(rows, ctx))
    return [*paths, run_dir / "table.md"]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    save_figure(fig, path)


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
        lines.append(f"| {rec['label']} | {rec['params'] / 1e6:.2f} | {top1} | {rec['ms_per_image_no_grad']:.3f} | "
                     f"{rec['ms_per_image_grad']:.3f} | {rec['memory_mb_no_grad']:.3g} | {rec['memory_mb_grad']:.4g} |")
    for name, why in (ctx.get("skipped") or {}).items():
        lines.append(f"\n{name}: {why}")
    return "\n".join(lines) + "\n"
