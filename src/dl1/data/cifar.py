"""CIFAR-10 and CIFAR-100 from the original "python version" files, read without running code.

Each file is a pickle (written by Python 2 at protocol 2): a batch is a dict with a uint8 ``data`` array
``(N, 3072)`` (channel-major 32x32 RGB) and a list of ``N`` labels (``labels``, or ``fine_labels`` for CIFAR-100); the
meta file holds the class names.  The files are read by :func:`dl1.data.safe_pickle.load_pickle`, which admits only
plain containers and numeric NumPy arrays, and their structure is checked before use: a file that calls anything
else, or that is not a CIFAR batch, is refused with one line.

:class:`CIFAR` behaves like torchvision's ``CIFAR10``/``CIFAR100``: ``data`` ``(N, 32, 32, 3)`` uint8, ``targets``
(list of int), ``classes``, ``class_to_idx``, and ``ds[i]`` -> ``(PIL image, label)`` through ``transform`` /
``target_transform``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dl1.data.safe_pickle import load_pickle
from dl1.errors import DL1Error


@dataclass(frozen=True)
class Layout:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    names_key: str  # class names in the meta file
    labels_key: str  # labels in a batch
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test, self.meta)


LAYOUTS = {
    "cifar10": Layout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                      "batches.meta", "label_names", "labels", 10),
    "cifar100": Layout("cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels", 100),
}


def present(name: str, root: str | Path) -> bool:
    """Are all files of ``name`` under ``root``?"""
    layout = LAYOUTS[name]
    return all((Path(root) / layout.folder / f).is_file() for f in layout.files)


def _batch(path: Path, layout: Layout) -> tuple[np.ndarray, list[int]]:
    """One batch file's ``(data (N, 3072) uint8, labels)``, its structure checked."""
    entry = load_pickle(path)
    data = entry.get("data") if isinstance(entry, dict) else None
    labels = entry.get(layout.labels_key) if isinstance(entry, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DL1Error(f"{path} is not a CIFAR batch: 'data' must be a uint8 array of shape (N, 3072)")
    if not isinstance(labels, list) or len(labels) != len(data) or \
            not all(type(y) is int and 0 <= y < layout.num_classes for y in labels):
        raise DL1Error(f"{path} is not a CIFAR batch: {layout.labels_key!r} must list {len(data)} labels in "
                       f"[0, {layout.num_classes})")
    return data, labels


def _class_names(path: Path, layout: Layout) -> list[str]:
    meta = load_pickle(path)
    names = meta.get(layout.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != layout.num_classes or not all(isinstance(n, str) for n in names):
        raise DL1Error(f"{path} is not a CIFAR meta file: {layout.names_key!r} must list {layout.num_classes} "
                       f"class names")
    return names


class CIFAR:
    """The train or test split of ``name`` (``cifar10`` / ``cifar100``) under ``root``, as torchvision presents it."""

    def __init__(self, root: str | Path, name: str = "cifar10", train: bool = True, transform: Any = None,
                 target_transform: Any = None):
        layout = LAYOUTS[name]
        folder = Path(root) / layout.folder
        self.root, self.name, self.train = str(root), name, train
        self.transform, self.target_transform = transform, target_transform
        batches = [_batch(folder / f, layout) for f in (layout.train if train else layout.test)]
        self.data = np.vstack([d for d, _ in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, H, W, C)
        self.targets: list[int] = [y for _, labels in batches for y in labels]
        self.classes = _class_names(folder / layout.meta, layout)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img, target = Image.fromarray(self.data[index]), self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self) -> str:
        return f"CIFAR({self.name!r}, {'train' if self.train else 'test'}, {len(self)} images, root={self.root!r})"
