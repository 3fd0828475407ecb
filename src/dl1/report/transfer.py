"""The figure of a ResNet-18 transfer run, computed from the run folder alone.

``figures/resnet_transfer_curves.png``: fc's training loss per epoch (left), train and validation accuracy (right),
from ``metrics.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

from dl1.report import new_figure, save_figure
from dl1.run.files import read_jsonl


def make_figures(run_dir: str | Path) -> list[Path]:
    """Training curves (train loss/accuracy, validation accuracy per epoch); [] when nothing was trained."""
    records = read_jsonl(Path(run_dir) / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    if not train:
        return []
    fig, (a, b) = new_figure(1, 2, figsize=(9, 3.5))
    a.plot([r["epoch"] for r in train], [r["loss"] for r in train], marker="o")
    a.set(xlabel="epoch", ylabel="train loss", title="fc training loss")
    b.plot([r["epoch"] for r in train], [r["acc"] for r in train], marker="o", label="train")
    b.plot([r["epoch"] for r in val], [r["acc"] for r in val], marker="o", label="validation")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    b.legend()
    fig.tight_layout()
    return [save_figure(fig, Path(run_dir) / "figures" / "resnet_transfer_curves.png")]
