"""The figures of the course's robustness comparison (visual prompts by method, deep prompts by injection layer) and
the sections a comparison of runs gets from them (:func:`course_sections`); the rows and tables are in
:mod:`dl1.report.robustness`."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from dl1.errors import DL1Error
from dl1.hub.clip import vision_limits
from dl1.report import new_figure, save_figure
from dl1.report.robustness import (
    DATASET_LABELS,
    REF_DEEP_NOISY,
    SMOKE_NOTE,
    Row,
    cross_table,
    robustness_rows,
    robustness_table,
)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _smoke_mark(fig, rows: list[Row]) -> None:
    if any(r.smoke for r in rows):
        fig.text(0.01, 0.01, SMOKE_NOTE, fontsize=7, color="gray")


def plot_visual_prompts(rows: list[Row], path: Path) -> Path | None:
    """Grouped bars: one panel per dataset, per visual-prompt method a clean and a noisy bar (runs of the same
    method and dataset averaged); the zero-shot baseline as a dashed line and the reference solution as black ticks
    where they exist."""
    vp = [r for r in rows if r.family == "visual_prompt"]
    if not vp:
        return None
    datasets = sorted({r.dataset for r in vp}, key=lambda d: (d not in DATASET_LABELS, d))
    variants = [v for _, v in sorted({(r.sort, r.variant) for r in vp})]
    fig, axes = new_figure(1, len(datasets), figsize=(1.5 + 1.6 * max(2, len(variants)) * len(datasets), 4.4),
                           squeeze=False, sharey=True)
    handles: dict[str, Any] = {}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        x = np.arange(len(variants))
        for j, (attr, label, style) in enumerate((("clean", "clean test", {"color": "C0"}),
                                                  ("noisy", "noisy test (N(0, 0.1))",
                                                   {"color": "C1", "hatch": "//", "edgecolor": "white"}))):
            vals = [_mean([getattr(r, attr) for r in vp if r.dataset == dataset and r.variant == v]) for v in variants]
            pos = x + (j - 0.5) * 0.38
            bars = ax.bar(pos, [v if v is not None else 0.0 for v in vals], 0.38, label=label, **style)
            handles[label] = bars
            for p, v in zip(pos, vals, strict=True):
                ax.annotate("n/a" if v is None else f"{v:.1f}", (p, v or 0.0), ha="center", va="bottom", fontsize=7,
                            xytext=(0, 2), textcoords="offset points")
            refs = [next((getattr(r, f"ref_{attr}") for r in vp if r.dataset == dataset and r.variant == v
                          and isinstance(getattr(r, f"ref_{attr}"), float)), None) for v in variants]
            if any(ref is not None for ref in refs):
                pts = [(p, ref) for p, ref in zip(pos, refs, strict=True) if ref is not None]
                handles["reference solution"] = ax.scatter(*zip(*pts, strict=True), marker="_", s=400, linewidths=2.5,
                                                           color="black", zorder=3, label="reference solution")
        base = _mean([r.clean for r in rows if r.family == "zeroshot" and r.dataset == dataset
                      and r.method.startswith("CLIP zero-shot (test")])
        if base is not None:
            handles["zero-shot CLIP (clean test)"] = ax.axhline(base, color="gray", linestyle="--", linewidth=1.2,
                                                                 label="zero-shot CLIP (clean test)")
        ax.set_xticks(x, variants)
        ax.set_title(DATASET_LABELS.get(dataset, dataset) + (" (smoke)" if any(r.smoke for r in vp
                                                                              if r.dataset == dataset) else ""))
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test top-1 (%)")
    fig.suptitle("Visual prompts on frozen CLIP: clean vs noisy test top-1", fontsize=11)
    order = [k for k in ("clean test", "noisy test (N(0, 0.1))", "reference solution", "zero-shot CLIP (clean test)")
             if k in handles]
    fig.legend([handles[k] for k in order], order, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.04))
    _smoke_mark(fig, vp)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save_figure(fig, path)


def _blocks(rows: list[Row]) -> int | None:
    """Residual blocks of the runs' CLIP (the x axis runs over every block), from the architecture's name."""
    try:
        counts = {vision_limits(r.arch, r.image_size or 224, r.weights)[1] for r in rows if r.arch}
    except DL1Error:
        return None
    counts.discard(None)
    return max(counts) if counts else None


def plot_deep_prompts(rows: list[Row], path: Path) -> Path | None:
    """Top-1 against the injection layer: per dataset a clean (solid) and a noisy (dashed) line, and the reference
    solution's clean numbers (dotted, crosses) where they exist; runs of the same layer and dataset averaged."""
    dp = [r for r in rows if r.family == "deep_prompt" and isinstance(r.layer, int)]
    if not dp:
        return None
    fig, ax = new_figure(figsize=(10, 4.6))
    datasets = sorted({r.dataset for r in dp}, key=lambda d: (d not in DATASET_LABELS, d))
    for i, dataset in enumerate(datasets):
        name = DATASET_LABELS.get(dataset, dataset)
        layers = sorted({r.layer for r in dp if r.dataset == dataset})
        for attr, style, marker in (("clean", "-", "o"), ("noisy", "--", "s")):
            pts = [(k, _mean([getattr(r, attr) for r in dp if r.dataset == dataset and r.layer == k])) for k in layers]
            pts = [(k, v) for k, v in pts if v is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), linestyle=style, marker=marker, color=f"C{i}",
                        label=f"{name}, {attr} test")
        ref = sorted({(r.layer, r.ref_clean) for r in dp if r.dataset == dataset and isinstance(r.ref_clean, float)})
        if ref:
            ax.plot(*zip(*ref, strict=True), linestyle=":", marker="x", color=f"C{i}", alpha=0.7,
                    label=f"{name}, clean, reference solution")
        band = REF_DEEP_NOISY.get(dataset)
        if band and any(isinstance(r.ref_noisy, str) for r in dp if r.dataset == dataset):
            ax.axhspan(*band, color=f"C{i}", alpha=0.12, label=f"{name}, noisy, reference solution "
                                                               f"(≈ {band[0]:.0f}–{band[1]:.0f} over the layers)")
    ys = [v for line in ax.get_lines() for v in line.get_ydata()]
    ys += [v for r in dp if isinstance(r.ref_noisy, str) for v in REF_DEEP_NOISY.get(r.dataset, ())]
    lo, hi = max(0.0, min(ys) - 3.0), min(101.0, max(ys) + 3.0)  # accuracies: never below 0 or far above 100
    if hi - lo < 10.0:
        lo = max(0.0, min(lo, hi - 10.0))
        hi = lo + 10.0
    ax.set_ylim(lo, hi)
    blocks = _blocks(dp)
    last = max(blocks - 1 if blocks else 0, max(r.layer for r in dp))
    ax.set_xticks(range(last + 1))
    ax.set_xlim(-0.5, last + 0.5)
    ax.set_xlabel("injection layer (prompt tokens appended before this residual block)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Deep prompts on frozen CLIP: top-1 against the injection layer", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _smoke_mark(fig, dp)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save_figure(fig, path)


# -- what dl1 report adds ----------------------------------------------------------------------------------------------
def course_sections(runs: list[dict[str, Any]], folder: Path) -> list[str]:
    """Markdown lines for the comparison file in ``folder``: the robustness table, the visual- and deep-prompt
    figures (written to ``folder/figures/``) and the cross-dataset table, each when the runs allow it."""
    out: list[str] = []
    rows = robustness_rows(runs)
    if rows:
        out += ["## Robustness to noise (clean vs noisy test top-1)", "", robustness_table(rows)]
        for name, title, plot in (("visual_prompts.png", "visual prompts", plot_visual_prompts),
                                  ("deep_prompts.png", "deep prompts by injection layer", plot_deep_prompts)):
            path = plot(rows, folder / "figures" / name)
            if path is not None:
                out += [f"![{title}](figures/{name})", ""]
    cross = cross_table(runs)
    if cross:
        out += ["## Cross-dataset evaluation (110 classes)", "", cross]
    return out
