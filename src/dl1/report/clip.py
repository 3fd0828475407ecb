"""CLIP zero-shot figures: the course's grid of images with their top-5 class probabilities, redrawn from a run
folder's ``predictions.npz`` and ``config.json`` alone."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dl1.data.files import read_npz
from dl1.errors import DL1Error
from dl1.hub.clip import TINY_ARCH
from dl1.report import new_figure, save_figure
from dl1.run.reader import RunFolder

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def unnormalize(images: np.ndarray, mean: Sequence[float] = OPENAI_MEAN,
                std: Sequence[float] = OPENAI_STD) -> np.ndarray:
    """CLIP-normalised ``(B, 3, H, W)`` floats -> displayable ``(B, H, W, 3)`` uint8 (clipped to [0, 255])."""
    x = np.asarray(images, dtype=np.float32)
    x = x * np.asarray(std, np.float32).reshape(1, 3, 1, 1) + np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def top_k_probabilities(logits: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The course's display rule: the ``k`` largest logits per row and a softmax over those ``k`` only.

    Returns ``(probs (B, k), indices (B, k))``, best first.
    """
    logits = np.asarray(logits, dtype=np.float64)
    k = min(k, logits.shape[1])
    idx = np.argsort(-logits, axis=1, kind="stable")[:, :k]  # (B, k)
    top = np.take_along_axis(logits, idx, axis=1)
    top = np.exp(top - top.max(axis=1, keepdims=True))
    return top / top.sum(axis=1, keepdims=True), idx


def safe_name(text: str, limit: int = 80) -> str:
    """A file-name-safe version of ``text`` (class lists and prompts end up in figure names)."""
    clean = re.sub(r"[^A-Za-z0-9,._+-]+", "_", text).strip("_")
    return clean[:limit] or "default"


def plot_predictions(images: np.ndarray, logits: np.ndarray, classnames: Sequence[str], path: str | Path,
                     labels: Sequence[int] | None = None, title: str | None = None, k: int = 5,
                     dpi: int = 100) -> Path:
    """The course's ``visualize_predictions``: rows of (image, horizontal bar chart of its top-k probabilities),
    two images per row; ``images`` are uint8 ``(B, H, W, 3)``; true labels (if known) title each image and their
    bar is green."""
    probs, idx = top_k_probabilities(logits, k)
    n = len(images)
    rows = max(1, math.ceil(n / 2))
    fig, axes = new_figure(rows, 4, figsize=(12, 2.3 * rows + (0.5 if title else 0)), squeeze=False)
    for ax in axes.flat[2 * n:]:
        ax.set_visible(False)  # an odd number of images leaves the last row half empty
    for i in range(n):
        ax = axes[i // 2, 2 * (i % 2)]
        ax.imshow(images[i])
        ax.axis("off")
        if labels is not None and labels[i] >= 0:
            ax.set_title(f"true: {classnames[labels[i]]}", fontsize=8)
        ax = axes[i // 2, 2 * (i % 2) + 1]
        y = np.arange(probs.shape[1])
        truth = labels[i] if labels is not None else -1
        ax.barh(y, probs[i], color=["tab:green" if j == truth else "tab:blue" for j in idx[i]])
        ax.set_yticks(y, [classnames[j].replace("_", " ") for j in idx[i]], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"probability (softmax over top-{probs.shape[1]})", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi=dpi)
    return path


PREDICTION_ARRAYS = ("images", "logits", "labels", "classnames")  # what clip-zeroshot saves in predictions.npz


def zeroshot_figures(run_dir: str | Path) -> list[Path]:
    """Redraw the prediction figure of a clip-zeroshot run from its ``predictions.npz`` and ``config.json``."""
    run_dir = Path(run_dir)
    saved = run_dir / "predictions.npz"
    if not saved.exists():
        return []
    cfg = RunFolder(run_dir).config
    data = read_npz(saved, "prediction file")  # checked before loading: a cut or hostile file is one line
    missing = [k for k in PREDICTION_ARRAYS if k not in data]
    if missing:
        raise DL1Error(f"{saved}: no {', '.join(missing)} array (not a predictions.npz that dl1 wrote)")
    images, logits, labels = data["images"], data["logits"], data["labels"]
    classnames = [str(c) for c in data["classnames"]]
    custom = ",".join(cfg.get("class_names") or []) or "default"
    prompt = cfg.get("ensemble") or cfg.get("prompt_template", "")
    name = f"{cfg['dataset']}-{cfg['split']}_{safe_name(custom)}_{safe_name(prompt, 40)}.png"
    title = f"CLIP {cfg['arch']} zero-shot, {cfg['dataset']} {cfg['split']}, prompt: {prompt!r}"
    if cfg.get("arch") == TINY_ARCH:
        title += " (RANDOM test weights)"
    return [plot_predictions(images, logits, classnames, run_dir / "figures" / name,
                             labels=None if (labels < 0).all() else labels, title=title)]
