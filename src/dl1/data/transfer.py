"""The datasets of the ResNet-18 transfer experiment: CIFAR resized for ImageNet models, train/validation/test.

Images are resized to ``image_size`` and normalised with the CIFAR-100 statistics (the course's template uses them for
CIFAR-10 too).  Train and validation come from two copies of the train set split with seed 42 (independent of the
training seed), so only the train part is augmented; the optional noisy test set adds N(0, noise_std^2) after
normalisation.  ``synthetic`` writes tiny fake CIFAR-10 files in the real format and reads them back (smoke runs only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Subset

from dl1.data.augment import build_transform
from dl1.data.fake import write_cifar
from dl1.data.vision import DATASETS, get_dataset, split_indices
from dl1.errors import UsageError

SPLIT_SEED = 42  # the course's train/validation split seed (independent of --seed)
SYNTHETIC_SIZES = {"n_train": 64, "n_test": 32}  # fake CIFAR-10 files for --dataset synthetic (smoke runs only)


@dataclass
class ProbeData:
    train: Any  # torch Dataset of (image, label)
    val: Any
    test: Any
    test_noisy: Any | None
    num_classes: int
    notes: dict[str, Any] = field(default_factory=dict)


def probe_data(dataset: str, data_dir: str | Path | None, *, image_size: int, augmentation: str | None,
               test_noise: bool, noise_std: float, val_size: int, seed: int,
               synthetic_dir: str | Path | None = None) -> ProbeData:
    """Train/val (two copies of the train set, only train augmented), test, and the noisy test set if asked."""
    notes: dict[str, Any] = {}
    if dataset == "synthetic":
        if synthetic_dir is None:
            raise ValueError("dataset 'synthetic' needs synthetic_dir (where the fake files are written)")
        data_dir = synthetic_dir
        write_cifar(data_dir, "cifar10", seed=seed, **SYNTHETIC_SIZES)
        dataset, notes = "cifar10", {"synthetic": True, "warning": "fake CIFAR files: a smoke check, not a result"}
    stats = DATASETS["cifar100"]  # the template normalises CIFAR-10 with the CIFAR-100 statistics too
    tf = {k: build_transform(image_size, stats.mean, stats.std, augmentation=aug, test_noise=noise,
                             noise_std=noise_std)
          for k, aug, noise in (("train", augmentation, False), ("plain", None, False), ("noisy", None, True))}
    train_full = get_dataset(dataset, "train", data_dir, transform=tf["train"])
    val_full = get_dataset(dataset, "train", data_dir, transform=tf["plain"])
    if val_size >= len(train_full):
        raise UsageError(f"--val_size: {val_size} must be smaller than the train set ({len(train_full)} images)")
    tr_idx, va_idx = split_indices(len(train_full), val_size, SPLIT_SEED)
    test = get_dataset(dataset, "test", data_dir, transform=tf["plain"])
    noisy = get_dataset(dataset, "test", data_dir, transform=tf["noisy"]) if test_noise else None
    return ProbeData(Subset(train_full, tr_idx.tolist()), Subset(val_full, va_idx.tolist()), test, noisy,
                     len(train_full.classes), notes)
