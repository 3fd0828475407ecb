"""Figures of an adversarial-autoencoder run, computed from its run folder alone.

``snapshots/epoch_NNN.npz`` (written during training) hold the fixed test images, their reconstructions, decoded
prior samples and, for ``z_dim = 2``, the test codes; ``metrics.jsonl`` holds the per-epoch losses and accuracies.
Images are stored as uint8 (``[-1, 1]`` mapped to ``0..255``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator

from dl1.report import new_figure, save_figure
from dl1.report.generative import grid, load_epoch_arrays, save_epoch_arrays
from dl1.run.files import near_root, read_jsonl, write_file
from dl1.run.reader import RunFolder

SNAPSHOTS = "snapshots"
__all__ = ["grid", "to_uint8", "save_snapshot", "load_snapshots", "pair_rows", "save_grid", "pick_epochs",
           "progress_figure", "curves_figure", "latent_figure", "make_figures", "tensorboard_images"]


# -- storage ---------------------------------------------------------------------------------------------------------
def to_uint8(images: Any) -> np.ndarray:
    """``[-1, 1]`` float images (tensor or array) -> uint8 ``0..255`` (values outside are clipped)."""
    a = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images, np.float32)
    return np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_snapshot(run_dir: Path, epoch: int, **arrays: np.ndarray) -> Path:
    """Write ``snapshots/epoch_NNN.npz`` (atomically) with the given arrays."""
    return save_epoch_arrays(Path(run_dir) / SNAPSHOTS, epoch, **arrays)


def load_snapshots(run_dir: Path) -> dict[int, dict[str, np.ndarray]]:
    """All snapshots of a run, keyed by epoch (0 = before training)."""
    return load_epoch_arrays(Path(run_dir) / SNAPSHOTS)


# -- grids -----------------------------------------------------------------------------------------------------------
def pair_rows(originals: np.ndarray, recons: np.ndarray, nrow: int) -> np.ndarray:
    """Interleave rows: ``nrow`` originals, then their ``nrow`` reconstructions, and so on."""
    blocks = []
    for start in range(0, len(originals), nrow):
        blocks += [originals[start:start + nrow], recons[start:start + nrow]]
    return np.concatenate(blocks)


def tensorboard_images(arrays: dict[str, np.ndarray], nrow: int = 8) -> dict[str, np.ndarray]:
    """A snapshot's grids as TensorBoard shows them: ``samples`` (decoded prior draws) and ``reconstructions``
    (odd rows test images, even rows their reconstructions), each one grey uint8 image."""
    return {"samples": grid(arrays["samples"], nrow),
            "reconstructions": grid(pair_rows(arrays["originals"], arrays["recon"], nrow), nrow)}


def save_grid(images: np.ndarray, path: Path, nrow: int = 8, scale: int = 2) -> Path:
    """Save uint8 ``(N, C, H, W)`` images as one PNG grid (nearest-neighbour upscaled by ``scale``)."""
    g = grid(images, nrow)
    g = g.repeat(scale, axis=0).repeat(scale, axis=1)
    return write_file(Path(path), lambda fh: mpimg.imsave(fh, g, cmap="gray", vmin=0, vmax=255, format="png"),
                      near_root(path))  # atomically, never through a link


# -- figures ---------------------------------------------------------------------------------------------------------
def pick_epochs(epochs: list[int], k: int = 4) -> list[int]:
    """Up to ``k`` epochs spread over ``epochs`` (always the first and the last)."""
    if len(epochs) <= k:
        return list(epochs)
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, k)).astype(int))
    return [epochs[i] for i in idx]


def progress_figure(snaps: dict[int, dict[str, np.ndarray]], key: str, path: Path, title: str, nrow: int = 8) -> Path:
    """One panel per chosen epoch: reconstructions (paired with originals) or prior samples."""
    chosen = pick_epochs(sorted(snaps))
    fig, axes = new_figure(1, len(chosen), figsize=(max(2.6 * len(chosen), 6.0), 3.3), squeeze=False)
    for ax, epoch in zip(axes[0], chosen):
        s = snaps[epoch]
        images = pair_rows(s["originals"], s["recon"], nrow) if key == "recon" else s["samples"]
        ax.imshow(grid(images, nrow), cmap="gray", vmin=0, vmax=255)
        ax.set_title("before training" if epoch == 0 else f"epoch {epoch}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return Path(path)


def curves_figure(records: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Per-epoch reconstruction (train/test), generator/discriminator losses and discriminator accuracy."""
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    fig, axes = new_figure(1, 3, figsize=(12, 3.2))
    dots = {"marker": "o", "markersize": 3}  # a one-epoch run still shows its points
    axes[0].plot([r["epoch"] for r in train], [r["recon_loss"] for r in train], label="train", **dots)
    axes[0].plot([r["epoch"] for r in test], [r["recon_loss"] for r in test], label="test", **dots)
    axes[0].set(title="reconstruction MSE", xlabel="epoch", yscale="log")
    for key in ("gen_loss", "disc_loss"):
        axes[1].plot([r["epoch"] for r in train], [r[key] for r in train], label=key, **dots)
    axes[1].axhline(np.log(2), color="grey", ls=":", lw=1, label="ln 2 (chance)")
    axes[1].set(title="adversarial losses (train)", xlabel="epoch")
    axes[2].plot([r["epoch"] for r in train], [r["disc_accuracy"] for r in train], label="train batches", **dots)
    if test and "disc_accuracy" in test[0]:
        axes[2].plot([r["epoch"] for r in test], [r["disc_accuracy"] for r in test], label="test codes", **dots)
    axes[2].axhline(0.5, color="grey", ls=":", lw=1)
    axes[2].set(title="discriminator accuracy", xlabel="epoch", ylim=(0, 1.02))
    epochs = sorted({r["epoch"] for r in train})
    for ax, where in zip(axes, ("upper right", "best", "lower right")):
        if len(epochs) < 3:  # whole epochs only, also for a run of one or two
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc=where)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path)


def latent_figure(codes: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, title: str = "",
                  n_prior: int = 3000, seed: int = 0) -> Path:
    """2-D test codes coloured by class, drawn over samples of the prior N(0, I)."""
    prior = np.random.default_rng(seed).standard_normal((n_prior, 2))
    fig, ax = new_figure(figsize=(6.2, 5.4))
    ax.scatter(prior[:, 0], prior[:, 1], s=4, c="lightgrey", label="prior N(0, I)", zorder=1)
    cmap = colormaps["tab10"]
    for k, name in enumerate(classes):
        m = labels == k
        ax.scatter(codes[m, 0], codes[m, 1], s=3, color=cmap(k % 10), label=name, alpha=0.6, zorder=2)
    ax.set(xlabel="z[0]", ylabel="z[1]", title=title or "test codes over prior samples")
    ax.legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path)


def make_figures(run_dir: Path) -> list[Path]:
    """(Re)build every figure of an AAE run folder under ``figures/``; returns the written paths."""
    run_dir = Path(run_dir)
    figures = run_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    meta = RunFolder(run_dir).json("aae_meta.json")  # {} when absent
    tag = meta.get("tag", "")
    written = []
    records = read_jsonl(run_dir / "metrics.jsonl")
    if any(r["split"] == "train" for r in records):
        written.append(curves_figure(records, figures / "aae_curves.png", tag))
    snaps = load_snapshots(run_dir)
    for epoch, s in snaps.items():
        pairs = pair_rows(s["originals"], s["recon"], 8)
        written.append(save_grid(pairs, figures / f"reconstruction_epoch_{epoch}.png"))
        written.append(save_grid(s["samples"], figures / f"samples_epoch_{epoch}.png"))
    if snaps:
        written.append(progress_figure(snaps, "recon", figures / "aae_reconstructions.png",
                                       f"test images (odd rows) and reconstructions (even rows)\n{tag}"))
        written.append(progress_figure(snaps, "samples", figures / "aae_samples.png",
                                       f"decoded prior samples\n{tag}"))
        last = snaps[max(snaps)]
        if "codes" in last:
            classes = meta.get("classes", [str(i) for i in range(10)])
            written.append(latent_figure(last["codes"], last["labels"], classes,
                                         figures / "aae_latent.png", f"test codes after epoch {max(snaps)} {tag}"))
    return written
