"""Fashion-MNIST for CLIP: the original images and domain-shifted copies, as datasets CLIP's preprocessing reads and as
caption-paired tensors the mini-CLIP trains on.

Dataset names: ``fashion-mnist`` and ``fashion-mnist-<shift>`` with a shift of :data:`SHIFTS`:

* ``inverted``: every pixel ``p`` becomes ``255 - p`` (dark clothes on a white background; the mini-CLIP was trained
  on light clothes on black);
* ``rot90``: every image turned by 90 degrees counter-clockwise.

Each dataset yields ``(transform(PIL RGB image), label)`` like torchvision's and keeps its images in memory as uint8
``(N, 28, 28, 3)`` in ``.data`` (so batch preprocessing on the device works as for CIFAR), with the class names of
:data:`CLASSES` (plain words a text encoder can read: ``t-shirt``, ``ankle boot``, ...).

The names (:data:`DATASETS`, :data:`SHIFTS`, :data:`CLASSES`) live in the torch-free ``dl1.data.catalog``, which
the CLIP experiments' specs read; this module, which reads the images, imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dl1.data.catalog import FASHION, SHIFTS
from dl1.data.catalog import FASHION_CLASSES as CLASSES
from dl1.data.catalog import FASHION_DATASETS as DATASETS
from dl1.data.loaders import epoch_generator
from dl1.data.vision import get_dataset, split_indices
from dl1.errors import UsageError


def shift_of(name: str) -> str | None:
    """``fashion-mnist-inverted`` -> ``inverted``; ``fashion-mnist`` -> None; another name -> ValueError."""
    if name == FASHION:
        return None
    shift = name.removeprefix(f"{FASHION}-")
    if name not in DATASETS:
        raise ValueError(f"unknown Fashion-MNIST dataset {name!r}; known: {', '.join(DATASETS)}")
    return shift


def apply_shift(images: np.ndarray, shift: str | None) -> np.ndarray:
    """uint8 images ``(N, H, W)`` (or ``(N, H, W, C)``) with the domain shift ``shift`` applied (None: unchanged)."""
    if shift is None:
        return images
    if shift == "inverted":
        return 255 - images
    if shift == "rot90":
        return np.ascontiguousarray(np.rot90(images, 1, axes=(1, 2)))
    raise ValueError(f"unknown shift {shift!r}; known: {', '.join(SHIFTS)}")


def grey_split(split: str, data_dir: str | Path | None, shift: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``split`` (train or test) as uint8 ``(N, 28, 28)`` images (shifted) and int64 labels, read
    from the first location that has the files (see :func:`dl1.data.vision.get_dataset`)."""
    ds = get_dataset(FASHION, split, data_dir=data_dir)
    images = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    labels = ds.targets.numpy() if hasattr(ds.targets, "numpy") else np.asarray(ds.targets)
    return apply_shift(images.astype(np.uint8), shift), labels.astype(np.int64)


class FashionCLIP:
    """A (shifted) Fashion-MNIST split for CLIP: ``(transform(PIL RGB image), label)`` per item; the uint8 RGB images
    in ``.data`` ``(N, 28, 28, 3)``, the labels in ``.targets``, the class names in ``.classes``."""

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None):
        self.name = name
        self.data = np.ascontiguousarray(np.repeat(images[..., None], 3, axis=-1))  # grey -> RGB, (N, H, W, 3)
        self.targets = [int(t) for t in labels]
        self.classes = list(CLASSES)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.data[index])  # (H, W, 3) uint8: RGB
        return (self.transform(image) if self.transform is not None else image), self.targets[index]


def load_fashion(name: str, split: str, data_dir: str | Path | None = None,
                 transform: Callable | None = None) -> FashionCLIP:
    """The dataset ``name`` (``fashion-mnist`` or ``fashion-mnist-<shift>``), split ``split``, with ``transform``."""
    images, labels = grey_split(split, data_dir, shift_of(name))
    return FashionCLIP(name, images, labels, transform)


# -- the mini-CLIP's training data: images paired with captions --------------------------------------------------------
def caption_table(templates: Sequence[str], classes: Sequence[str] = CLASSES) -> list[str]:
    """Every caption, template-major: caption ``t * C + c`` is template ``t`` filled with class ``c``."""
    return [t.format(c) for t in templates for c in classes]


def training_arrays(data_dir: str | Path | None, val_size: int, seed: int, train_size: int = 0
                    ) -> dict[str, np.ndarray]:
    """The mini-CLIP's images (original Fashion-MNIST, uint8 ``(N, 28, 28)``) and labels: ``train`` / ``val`` (a
    seeded split of the training set, ``val_size`` held out; ``train_size`` > 0 keeps that many training images) as
    ``x_train``, ``y_train``, ``x_val``, ``y_val``.  The test set is left alone (the CLIP experiments score it)."""
    images, labels = grey_split("train", data_dir)
    if val_size >= len(images):
        raise UsageError(f"--val_size {val_size} must be below the {len(images)} training images")
    train_idx, val_idx = split_indices(len(images), val_size, seed)
    if train_size:
        train_idx = train_idx[:train_size]
    return {"x_train": images[train_idx], "y_train": labels[train_idx], "x_val": images[val_idx],
            "y_val": labels[val_idx]}


class FashionBatches:
    """Batches of grey uint8 images ``(N, H, W)`` as CLIP input: ``(images (B, 3, H, W), labels)`` normalised with
    ``mean``/``std`` per channel (what CLIP's preprocessing gives for the same image, see :class:`FashionCLIP`), or,
    with ``n_templates``, ``(images, labels, caption index)`` where each image gets a caption drawn from its class's
    ``n_templates`` captions (caption ``t * n_classes + label``, the order of :func:`caption_table`).  The shuffle and
    the captions of an epoch depend only on ``(seed, epoch)``; ``drop_last`` drops a last short batch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                 n_templates: int = 0, n_classes: int = len(CLASSES), drop_last: bool = False, device: Any = "cpu"):
        self.images, self.labels = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.n_templates, self.n_classes, self.drop_last, self.device = n_templates, n_classes, drop_last, device
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        generator = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        captions = torch.randint(0, max(self.n_templates, 1), (n,), generator=generator)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            grey = self.images[idx].unsqueeze(1).to(self.device, torch.float32) / 255.0  # (B, 1, H, W) = ToTensor
            x = (grey - self.mean.to(self.device)) / self.std.to(self.device)            # (B, 3, H, W) = Normalize
            y = self.labels[idx].to(self.device)
            if self.n_templates:
                yield x, y, captions[idx].to(self.device) * self.n_classes + y
            else:
                yield x, y
