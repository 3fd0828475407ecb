"""Vision datasets as torch datasets and NumPy arrays, with the course's normalisations and seeded splits.

Where the files are (the data folder, known system locations, a download; the one-line offline message) is
``dl1.data.catalog``, torch-free; its names are importable from here too.

No file is trusted: CIFAR's pickles are read by ``dl1.data.cifar`` with an unpickler that admits only plain containers
and NumPy arrays (a file that would run code is refused), and IDX files are checked by ``dl1.data.idx`` (magic number,
element type, sizes, labels) before torchvision reads them.  A bad file is one line naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tvd

from dl1.data import cifar
from dl1.data.catalog import CHOICES as CHOICES  # re-exported: the classifiers' --dataset choices
from dl1.data.catalog import DATASETS as DATASETS
from dl1.data.catalog import SYNTHETIC, dataset_info, prepare
from dl1.data.catalog import DatasetInfo as DatasetInfo
from dl1.errors import DL1Error, UsageError, first_line


# -- datasets -----------------------------------------------------------------------------------------------------
def get_dataset(name: str, split: str, data_dir: str | Path | None = None, transform: Any = None,
                target_transform: Any = None, download: bool = True):
    """The dataset ``name`` (train or test split) from the first location that has it: ``dl1.data.cifar.CIFAR`` for
    CIFAR-10/100, torchvision's ``MNIST``/``FashionMNIST`` for the IDX datasets; each yields ``(PIL image, label)``."""
    if split not in ("train", "test"):
        raise DL1Error(f"split must be 'train' or 'test', got {split!r}")
    root = prepare(name, data_dir, download=download)
    if name in cifar.LAYOUTS:
        return cifar.CIFAR(root, name, train=split == "train", transform=transform, target_transform=target_transform)
    try:
        return getattr(tvd, dataset_info(name).torchvision_class)(
            str(root), train=split == "train", transform=transform, target_transform=target_transform, download=False)
    except (ValueError, TypeError, KeyError, RuntimeError, OSError, AssertionError) as exc:
        raise DL1Error(f"cannot read {name} under {root}: {type(exc).__name__}: {first_line(exc)} "
                       f"(truncated or corrupt file? delete it and fetch it again)") from None


# -- NumPy arrays ------------------------------------------------------------------------------------------------------
@dataclass
class VisionArrays:
    """A dataset as float32 NumPy arrays ``(N, C, H, W)`` with int64 labels, already normalised if asked."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices exactly as ``torch.utils.data.random_split(range(n), [n-val, val], seeded)``."""
    if not 0 <= val_size < n:
        raise DL1Error(f"validation size {val_size} must be in [0, {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return perm[: n - val_size], perm[n - val_size:]


def _raw_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    if data.ndim == 3:  # MNIST-like (N, H, W)
        data = data[:, None]
    else:  # CIFAR (N, H, W, C)
        data = data.transpose(0, 3, 1, 2)
    targets = ds.targets.numpy() if hasattr(ds.targets, "numpy") else np.asarray(ds.targets)
    return np.ascontiguousarray(data), targets.astype(np.int64)


def to_float(images: np.ndarray, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> np.ndarray:
    """uint8 ``(N,C,H,W)`` -> float32 in [0, 1], then ``(x - mean) / std`` per channel if given."""
    x = images.astype(np.float32) / np.float32(255.0)
    if mean is not None and std is not None:
        m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
        x = (x - m) / s
    return x


def load_arrays(name: str, data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 42,
                normalize: bool = True, dtype: str = "float") -> VisionArrays:
    """Train/validation/test arrays; ``dtype='uint8'`` keeps raw pixels (e.g. for 4-bit discretisation)."""
    if name == SYNTHETIC:
        return synthetic_arrays(seed=seed)
    info = dataset_info(name)
    train, test = get_dataset(name, "train", data_dir), get_dataset(name, "test", data_dir)
    (xtr, ytr), (xte, yte) = _raw_arrays(train), _raw_arrays(test)
    tr_idx, va_idx = split_indices(len(xtr), val_size, seed)
    mean, std = (info.mean, info.std) if normalize else (None, None)
    conv = (lambda a: a) if dtype == "uint8" else (lambda a: to_float(a, mean, std))
    return VisionArrays(name, conv(xtr[tr_idx]), ytr[tr_idx], conv(xtr[va_idx]), ytr[va_idx], conv(xte), yte,
                        list(train.classes), info.mean, info.std)


def load_flat(name: str, data_dir: str | Path | None, seed: int, batch_size: int,
              val_size: int = 5000) -> VisionArrays:
    """:func:`load_arrays` with every image flattened to ``C·H·W`` floats (C-contiguous), for the MLPs; a
    ``batch_size`` larger than the training split is a usage error."""
    data = load_arrays(name, data_dir, val_size=val_size, seed=seed)
    for split in ("train", "val", "test"):
        x = getattr(data, f"x_{split}")
        setattr(data, f"x_{split}", np.ascontiguousarray(x.reshape(len(x), -1)))             # (N, C·H·W)
    if batch_size > len(data.x_train):
        raise UsageError(f"--batch_size {batch_size} exceeds the {len(data.x_train)} training images")
    return data


def synthetic_arrays(n_train: int = 512, n_val: int = 128, n_test: int = 128, shape: tuple[int, ...] = (1, 8, 8),
                     n_classes: int = 10, seed: int = 0) -> VisionArrays:
    """Gaussian class clusters: a learnable stand-in for smoke runs only (never reported as a result)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, size=(n_classes, *shape)).astype(np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, n_classes, size=n)
        x = centres[y] + rng.normal(0, 1.0, size=(n, *shape)).astype(np.float32)
        return x.astype(np.float32), y.astype(np.int64)

    (a, b), (c, d), (e, f) = draw(n_train), draw(n_val), draw(n_test)
    return VisionArrays(SYNTHETIC, a, b, c, d, e, f, [f"class_{i}" for i in range(n_classes)],
                        notes={"synthetic": True})


# -- noise ---------------------------------------------------------------------------------------------------------
class AddGaussianNoise:
    """``img + randn_like(img) * std + mean`` (the course's test-time noise, added after normalisation)."""

    def __init__(self, mean: float = 0.0, std: float = 0.1):
        self.mean, self.std = mean, std

    def __call__(self, img):
        return img + torch.randn_like(img) * self.std + self.mean

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"
