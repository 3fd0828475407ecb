"""Tiny dataset files in the real on-disk formats (CIFAR pickle batches, IDX), so tests exercise the real readers.

These are test fixtures: they live in a folder the caller chooses and are never looked up as a fallback.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(rng: np.random.Generator, n: int, n_classes: int, shape: tuple[int, ...]) -> tuple[np.ndarray, list[int]]:
    """Labelled uint8 images whose mean brightness depends on the class (so tiny models can learn something)."""
    labels = rng.integers(0, n_classes, size=n)
    base = (labels[:, None] * (200 // max(n_classes - 1, 1))).astype(np.int64)
    noise = rng.integers(0, 56, size=(n, int(np.prod(shape))))
    return np.clip(base + noise, 0, 255).astype(np.uint8), labels.tolist()


def write_cifar(root: str | Path, name: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """Write ``cifar-10-batches-py/`` (5 train batches + test) or ``cifar-100-python/`` under ``root``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    if name == "cifar10":
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True, exist_ok=True)
        per = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]
        for i, n in enumerate(per, start=1):
            x, y = _images(rng, n, 10, (3, 32, 32))
            _dump(d / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": y, "data": x,
                                           "filenames": [f"{i}_{j}.png" for j in range(n)]})
        x, y = _images(rng, n_test, 10, (3, 32, 32))
        _dump(d / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": y, "data": x,
                                 "filenames": [f"t_{j}.png" for j in range(n_test)]})
        _dump(d / "batches.meta", {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": 10000, "num_vis": 3072})
        return d
    if name == "cifar100":
        d = root / "cifar-100-python"
        d.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", n_train), ("test", n_test)):
            x, y = _images(rng, n, 100, (3, 32, 32))
            _dump(d / split, {"filenames": [f"{j}.png" for j in range(n)], "fine_labels": y,
                              "coarse_labels": [v // 5 for v in y], "data": x})
        _dump(d / "meta", {"fine_label_names": [f"class_{i:02d}" for i in range(100)],
                           "coarse_label_names": [f"super_{i:02d}" for i in range(20)]})
        return d
    raise ValueError(f"unknown CIFAR name {name!r}")


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_idx(root: str | Path, name: str = "mnist", n_train: int = 60, n_test: int = 20, seed: int = 0,
              gz: bool = False) -> Path:
    """Write the four IDX files of MNIST (``MNIST/raw``) or Fashion-MNIST (``FashionMNIST/raw``) under ``root``."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = _images(rng, n, 10, (28, 28))
        _write_idx_file(raw / f"{prefix}-images-idx3-ubyte", x.reshape(n, 28, 28), gz)
        _write_idx_file(raw / f"{prefix}-labels-idx1-ubyte", np.asarray(y, dtype=np.uint8), gz)
    return raw


def _write_idx_file(path: Path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
