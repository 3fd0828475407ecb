"""Figures of a classification run, computed from the run folder alone (no pyplot, no torch).

* ``curves.png``: train/validation loss and accuracy per epoch from ``metrics.jsonl`` (the test point of the best
  model as a star);
* ``confusion_matrix.png``: the test confusion matrix (rows = true class) as a row-normalised heat map with counts;
* ``f_beta.png``: per-class F-β bars for β ∈ {0.1, 1, 10} (β < 1 weighs precision, β > 1 recall).

The confusion matrix and class names come from ``summary.json``'s ``test`` section (``dl1.metrics.per_class_report``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dl1.errors import DL1Error
from dl1.metrics import confusion_matrix_to_metrics
from dl1.report import new_figure, save_figure
from dl1.run.files import read_jsonl
from dl1.run.reader import RunFolder

BETAS = (0.1, 1.0, 10.0)


def _series(records: list[dict[str, Any]], split: str, key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in records if r.get("split") == split and key in r and "epoch" in r]
    return [int(r["epoch"]) for r in rows], [float(r[key]) for r in rows]


def plot_curves(records: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss (left) and accuracy (right) per epoch for the train and val splits; test (if logged) as a star."""
    fig, axes = new_figure(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            epochs, values = _series(records, split, key)
            if epochs:
                ax.plot(epochs, values, style, ms=3, label=split)
        epochs, values = _series(records, "test", key)
        if epochs:
            ax.plot(epochs, values, "*", ms=12, color="black", label=f"test (best-val model) {values[-1]:.4g}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion_matrix(confusion: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Heat map of the row-normalised matrix (colour = recall share), annotated with the raw counts."""
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows != 0)
    n = len(classes)
    size = max(4.5, 0.55 * n + 2) if n <= 20 else 9.0
    fig, ax = new_figure(figsize=(size, size * 0.9))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 20:
        for t in range(n):
            for p in range(n):
                ax.text(p, t, f"{int(cm[t, p])}", ha="center", va="center", fontsize=7,
                        color="white" if share[t, p] > 0.5 else "black")
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_f_beta(confusion: np.ndarray, classes: Sequence[str], path: str | Path, betas: Sequence[float] = BETAS,
                title: str = "") -> Path:
    """Grouped bars: per-class F-β for each β (β = 0.1 ≈ precision, β = 10 ≈ recall)."""
    n, width = len(classes), 0.8 / len(betas)
    fig, ax = new_figure(figsize=(max(6, 0.7 * n + 2) if n <= 20 else 16, 3.8))
    for j, beta in enumerate(betas):
        scores = confusion_matrix_to_metrics(confusion, beta)["f1_beta"]
        ax.bar(np.arange(n) + (j - (len(betas) - 1) / 2) * width, scores, width, label=f"β = {beta:g}")
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
    else:  # many classes: every fifth class index
        ax.set_xticks(range(0, n, 5), [str(i) for i in range(0, n, 5)])
        ax.set_xlabel("class index")
    ax.set_ylim(0, 1.15)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("F-β (test)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncols=len(betas), loc="upper center", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def make_classification_figures(run_dir: str | Path, title: str | None = None) -> list[Path]:
    """All three figures of a run folder into ``run_dir/figures``; returns their paths."""
    run_dir = Path(run_dir)
    records = read_jsonl(run_dir / "metrics.jsonl")
    if not records:
        raise DL1Error(f"no metrics.jsonl in {run_dir}: not a run folder, or the run logged nothing")
    title = title if title is not None else _title(run_dir)
    paths = [plot_curves(records, run_dir / "figures" / "curves.png", title)]
    test = RunFolder(run_dir).summary.get("test", {})
    if "confusion_matrix" in test:
        cm, classes = np.asarray(test["confusion_matrix"]), test["classes"]
        paths.append(plot_confusion_matrix(cm, classes, run_dir / "figures" / "confusion_matrix.png",
                                           f"{title}: test confusion matrix"))
        paths.append(plot_f_beta(cm, classes, run_dir / "figures" / "f_beta.png", title=f"{title}: per-class F-β"))
    return paths


def _title(run_dir: Path) -> str:
    """'<experiment>, <dataset>, hidden <dims>' from config.json (or the folder name)."""
    try:
        cfg = RunFolder(run_dir).config
    except DL1Error:
        return run_dir.name
    if not cfg:
        return run_dir.name
    dims = "-".join(map(str, cfg.get("hidden_dims", []))) or "none"
    bn = ", batch norm" if cfg.get("use_batch_norm") else ""
    return f"{cfg.get('experiment', run_dir.name)}, {cfg.get('dataset', '?')}, hidden {dims}{bn}"
