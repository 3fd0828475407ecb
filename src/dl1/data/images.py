"""28x28 grey images as uint8 arrays for the generative models (VAE, AAE): MNIST or Fashion-MNIST, or a small
synthetic stand-in for smoke runs (never a result).

Both experiments read the same IDX files through :func:`dl1.data.vision.load_arrays`; they differ only in how they
split and in their synthetic stand-in (the VAE writes tiny fake IDX files so that the real reader runs, the AAE draws
class clusters).  NumPy only: the experiments turn the arrays into tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dl1.data.fake import write_idx
from dl1.data.vision import VisionArrays, load_arrays, synthetic_arrays

FAKE_IDX = {"n_train": 96, "n_test": 32}  # the VAE's synthetic data: fake IDX files of this size
CLUSTERS = {"n_train": 256, "n_test": 64}  # the AAE's synthetic data: class clusters of this size


def uint8_images(dataset: str, data_dir: str | Path | None, *, val_size: int, seed: int,
                 fake_idx_dir: str | Path | None = None) -> VisionArrays:
    """uint8 images ``(N, 1, 28, 28)`` (values 0..255) with labels, the training set split off ``val_size`` images.

    ``dataset="synthetic"``: with ``fake_idx_dir``, tiny fake MNIST IDX files are written there and read back through
    the real reader; without it, class-cluster images (:func:`cluster_images`).
    """
    if dataset == "synthetic":
        if fake_idx_dir is None:
            return cluster_images(seed, val_size=val_size)
        write_idx(fake_idx_dir, "mnist", seed=seed, **FAKE_IDX)
        dataset, data_dir = "mnist", fake_idx_dir
    return load_arrays(dataset, data_dir, val_size=val_size, seed=seed, dtype="uint8")


def cluster_images(seed: int, val_size: int = 0) -> VisionArrays:
    """28x28 class-cluster images (``synthetic_arrays``) squashed to uint8 by ``tanh``: smoke runs only."""
    a = synthetic_arrays(n_train=CLUSTERS["n_train"], n_val=max(val_size, 1), n_test=CLUSTERS["n_test"],
                         shape=(1, 28, 28), seed=seed)
    u8 = lambda x: np.clip(np.rint((np.tanh(x / 2) + 1) * 127.5), 0, 255).astype(np.uint8)  # noqa: E731
    return VisionArrays(a.name, u8(a.x_train), a.y_train, u8(a.x_val), a.y_val, u8(a.x_test), a.y_test, a.classes,
                        notes=a.notes)


def first(array: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` rows of ``array`` (all of them when ``n`` is 0)."""
    return array[:n] if n else array


def class_cycle_indices(labels: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices cycling through the classes (class 0, 1, ..., 9, 0, 1, ...), first occurrences first."""
    by_class = [np.flatnonzero(labels == k) for k in np.unique(labels)]
    order = [idx[i] for i in range(max(map(len, by_class))) for idx in by_class if i < len(idx)]
    return np.asarray(order[:n])
