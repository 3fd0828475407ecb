"""CLIP data: CIFAR with CLIP's preprocessing, the same preprocessing on whole uint8 batches on the device, and the
splits and batches the CLIP experiments feed their models with.

Two ways to feed a CLIP (``--preprocess``): ``pil`` runs CLIP's resize/crop/normalise per image in DataLoader workers
(the course's way); ``batch`` keeps the raw uint8 images and runs :class:`BatchPreprocess` on whole batches on the
model's device, giving the same numbers (Pillow's bicubic is reproduced exactly); ``auto`` is batch on CUDA.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset
from torchvision import transforms

from dl1.data.catalog import FASHION_DATASETS
from dl1.data.fake import write_cifar, write_idx
from dl1.data.fashion_clip import load_fashion
from dl1.data.loaders import TensorBatches, epoch_order, ordered_loader, shard
from dl1.data.vision import AddGaussianNoise, get_dataset, split_indices
from dl1.errors import DL1Error, UsageError


# -- datasets ---------------------------------------------------------------------------------------------------------
def load_clip_dataset(name: str, split: str, preprocess: Callable, data_dir: str | Path | None = None,
                      test_noise: bool = False, noise_std: float = 0.1):
    """The dataset ``name``/``split`` with CLIP preprocessing (+ N(0, noise_std) noise after it): CIFAR-10/100, or
    Fashion-MNIST and its domain-shifted copies (``fashion-mnist-inverted``, ...; :mod:`dl1.data.fashion_clip`)."""
    transform = preprocess
    if test_noise:
        steps = list(getattr(preprocess, "transforms", [preprocess]))
        transform = transforms.Compose([*steps, AddGaussianNoise(0.0, noise_std)])
    if name in FASHION_DATASETS:
        return load_fashion(name, split, data_dir, transform)
    return get_dataset(name, split, data_dir=data_dir, transform=transform)


# -- preprocessing of whole batches (on the model's device) ------------------------------------------------------------
_PIL_BITS = 22  # Pillow's fixed-point precision for 8-bit resampling (PRECISION_BITS = 32 - 8 - 2)


def _pil_bicubic_weights(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's bicubic resampling (a = -0.5) of one axis as an ``(out, in)`` matrix of its fixed-point integer
    coefficients (``Resample.c``: ``precompute_coeffs`` + ``normalize_coeffs_8bpc``), stored in float64."""
    def bicubic(x: float, a: float = -0.5) -> float:
        x = abs(x)
        if x < 1.0:
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        if x < 2.0:
            return (((x - 5) * x + 8) * x - 4) * a
        return 0.0

    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        k = [bicubic((x + xmin - center + 0.5) / filterscale) for x in range(xmax - xmin)]
        total = sum(k)
        for x, w in enumerate(k):
            w = w / total if total != 0.0 else w
            weights[xx, xmin + x] = math.floor(0.5 + w * (1 << _PIL_BITS)) if w >= 0 else \
                math.ceil(-0.5 + w * (1 << _PIL_BITS))  # C's (int) truncates toward zero
    return weights


def _pil_resample(x: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """One Pillow 8-bit resampling pass along ``dim`` (-1: width, -2: height): integer sums with rounding bias,
    arithmetic shift, clip to [0, 255].  float64 holds these integers exactly (|sum| < 2^53)."""
    out = x @ weights.t() if dim == -1 else weights @ x
    return torch.floor((out + (1 << (_PIL_BITS - 1))) / (1 << _PIL_BITS)).clamp_(0, 255)


class BatchPreprocess(nn.Module):
    """CLIP's eval preprocessing (shortest-side bicubic ``Resize``, ``CenterCrop``, ``ToTensor``, ``Normalize``,
    optional N(0, noise_std) noise) applied to a uint8 batch ``(B, H, W, 3)`` on its own device, giving the same
    numbers as the PIL pipeline image by image (Pillow's fixed-point bicubic is reproduced exactly).

    It lets a GPU run preprocess CIFAR at GPU speed instead of in PIL worker processes.
    """

    def __init__(self, size: int, crop: int, mean: Sequence[float], std: Sequence[float],
                 noise_std: float | None = None):
        super().__init__()
        self.size, self.crop, self.noise_std = size, crop, noise_std
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._weights: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    @classmethod
    def from_preprocess(cls, preprocess: Any, noise_std: float | None = None) -> BatchPreprocess | None:
        """The batch twin of an open_clip eval ``Compose``; None if it is not the standard pipeline."""
        steps = list(getattr(preprocess, "transforms", []))
        names = [type(s).__name__ for s in steps]
        if names != ["Resize", "CenterCrop", "MaybeConvertMode", "MaybeToTensor", "Normalize"] and \
                names != ["Resize", "CenterCrop", "ToTensor", "Normalize"]:
            return None
        resize, crop, normalize = steps[0], steps[1], steps[-1]
        size = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
        crop_size = crop.size if isinstance(crop.size, int) else crop.size[0]
        square_crop = isinstance(crop.size, int) or crop.size[0] == crop.size[1]
        if size is None or resize.max_size is not None or resize.interpolation != transforms.InterpolationMode.BICUBIC \
                or not square_crop or crop_size > size:
            return None
        return cls(size, crop_size, normalize.mean, normalize.std, noise_std)

    def _matrix(self, n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
        """The resampling matrix for one axis, built once per size and device (no per-batch copies)."""
        key = (n_in, n_out, device)
        if key not in self._weights:
            self._weights[key] = _pil_bicubic_weights(n_in, n_out).to(device)
        return self._weights[key]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> float32 ``(B, 3, crop, crop)``, CLIP-normalised."""
        x = images.permute(0, 3, 1, 2).to(torch.float64)  # (B, 3, H, W)
        h, w = x.shape[-2:]
        short, long = min(h, w), max(h, w)
        long_out = int(self.size * long / short)  # torchvision's rule for Resize(int)
        out_h, out_w = (self.size, long_out) if h <= w else (long_out, self.size)
        if (out_h, out_w) != (h, w):
            if out_w != w:  # Pillow resamples horizontally first, rounding to 8 bits in between
                x = _pil_resample(x, self._matrix(w, out_w, x.device), dim=-1)
            if out_h != h:
                x = _pil_resample(x, self._matrix(h, out_h, x.device), dim=-2)
        top, left = int(round((out_h - self.crop) / 2.0)), int(round((out_w - self.crop) / 2.0))
        x = x[..., top:top + self.crop, left:left + self.crop]  # (B, 3, crop, crop)
        x = x.to(torch.float32) / 255.0  # ToTensor
        x = (x - self.mean) / self.std  # Normalize
        if self.noise_std:
            x = x + torch.randn_like(x) * self.noise_std
        return x


def device_preprocess(mode: str, preprocess: Any, device: torch.device,
                      noise_std: float | None = None) -> BatchPreprocess | None:
    """The :class:`BatchPreprocess` (on ``device``) that ``--preprocess mode`` asks for: ``batch``, or ``auto`` on
    CUDA; None for ``pil`` (and for ``auto`` when the pipeline is not CLIP's standard one)."""
    if mode == "pil" or (mode == "auto" and device.type != "cuda"):
        return None
    prep = BatchPreprocess.from_preprocess(preprocess, noise_std)
    if prep is None:
        if mode == "batch":
            raise DL1Error("--preprocess batch needs CLIP's standard resize/crop/normalise; use --preprocess pil")
        return None
    return prep.to(device)


# -- raw splits (batch preprocessing) ---------------------------------------------------------------------------------
@dataclass
class RawSplit:
    """Raw uint8 images ``(N, H, W, 3)`` and labels, preprocessed per batch on the device by ``prepare``."""

    images: torch.Tensor
    targets: torch.Tensor
    prepare: Any  # BatchPreprocess

    def __len__(self) -> int:
        return len(self.targets)


def raw_split(dataset: Any, indices: Any, prepare: Any, offset: int = 0) -> RawSplit:
    """The in-memory images of a CIFAR dataset (rows ``indices``, all if None) with labels + ``offset``."""
    data = getattr(dataset, "data", None)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4 and data.shape[-1] == 3):
        raise DL1Error("--preprocess batch needs an in-memory RGB uint8 dataset; use --preprocess pil")
    images = torch.from_numpy(data)  # (N, 32, 32, 3) uint8
    targets = torch.as_tensor(dataset.targets, dtype=torch.long) + offset
    if indices is not None:
        images, targets = images[torch.as_tensor(indices)], targets[torch.as_tensor(indices)]
    return RawSplit(images, targets, prepare)


class PreparedBatches:
    """``(prepare(images), targets)`` for each raw batch of ``batches`` (batch preprocessing on the device)."""

    def __init__(self, batches: Any, prepare: Any):
        self.batches, self.prepare = batches, prepare

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets in self.batches:
            yield self.prepare(images), targets


def batches(dataset: Any, batch_size: int, device: torch.device, *, shuffle: bool = False, seed: int = 0,
            epoch: int = 0, num_workers: int = 0, limit: int = 0, rank: int = 0, world_size: int = 1) -> Any:
    """Model-ready ``(images, targets)`` batches of a split: a :class:`RawSplit` as device-preprocessed tensor
    batches, a dataset through a DataLoader; the shuffle of ``epoch`` is fixed by ``(seed, epoch)``.  With ``limit``
    an iterator over the first ``limit`` batches only.  With ``world_size`` > 1, rank ``rank``'s share of that order
    (:func:`dl1.data.loaders.shard`; ``batch_size`` is then the per-rank batch): the ranks' i-th batches together are
    the i-th batch one process takes with ``world_size * batch_size``."""
    if isinstance(dataset, RawSplit):
        raw = TensorBatches(dataset.images, dataset.targets, batch_size=batch_size, shuffle=shuffle, seed=seed,
                            epoch=epoch, device=device, rank=rank, world_size=world_size)
        out = PreparedBatches(raw, dataset.prepare)
    else:  # the order TensorBatches takes (a DataLoader's own shuffle would draw from the generator first)
        order = epoch_order(len(dataset), seed, epoch) if shuffle else list(range(len(dataset)))
        out = ordered_loader(dataset, batch_size, num_workers, shard(order, rank, world_size))
    return itertools.islice(out, limit) if limit else out


def eval_shard(split: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s part of an evaluation split: every ``world_size``-th image from ``rank``, none left out (the
    parts differ by at most one image; weight the ranks' results by their counts).  Batched by ``B / world_size``, the
    ranks' i-th batches together are the i-th batch of ``B`` one process scores."""
    if world_size <= 1:
        return split
    if isinstance(split, RawSplit):
        return RawSplit(split.images[rank::world_size], split.targets[rank::world_size], split.prepare)
    return torch.utils.data.Subset(split, range(rank, len(split), world_size))


# -- the experiments' splits ------------------------------------------------------------------------------------------
def cifar_folder(data_dir: str | None, synthetic: Path | None, names: Sequence[str], n_train: int, n_test: int,
                 seed: int) -> str | None:
    """``data_dir``; or, when ``synthetic`` (a folder) is given, tiny random CIFAR (or Fashion-MNIST) files in the
    real format written there (smoke runs only)."""
    if synthetic is None:
        return data_dir
    for name in names:
        if name in FASHION_DATASETS:
            write_idx(synthetic, "fashion-mnist", n_train=n_train, n_test=n_test, seed=seed)
        else:
            write_cifar(synthetic, name, n_train=n_train, n_test=n_test, seed=seed)
    return str(synthetic)


def prompt_splits(dataset: str, folder: str | None, preprocess: Any, device: torch.device, mode: str, *,
                  val_size: int, seed: int, train: bool = True, test_noise: bool = False) -> dict[str, Any]:
    """clip-prompt's data: ``train``/``val`` (a seeded split of the training set; only with ``train``), ``test`` and,
    with ``test_noise``, ``test_noisy`` (N(0, 0.1) after preprocessing); torchvision datasets (PIL preprocessing) or
    :class:`RawSplit` (``mode`` picks batch preprocessing), plus ``classes`` and ``preprocess``."""
    clean = device_preprocess(mode, preprocess, device)
    noisy = device_preprocess(mode, preprocess, device, noise_std=0.1) if clean is not None else None
    out: dict[str, Any] = {"preprocess": "batch" if clean is not None else "pil"}
    if train:
        data = load_clip_dataset(dataset, "train", preprocess, folder)
        if val_size >= len(data):
            raise UsageError(f"--val_size {val_size} must be below the {len(data)} training images")
        train_idx, val_idx = split_indices(len(data), val_size, seed=seed)
        if clean is not None:
            out["train"], out["val"] = raw_split(data, train_idx, clean), raw_split(data, val_idx, clean)
        else:
            out["train"], out["val"] = Subset(data, train_idx.tolist()), Subset(data, val_idx.tolist())
        out["classes"] = list(data.classes)
    test = load_clip_dataset(dataset, "test", preprocess, folder)
    out["test"] = raw_split(test, None, clean) if clean is not None else test
    out.setdefault("classes", list(test.classes))
    if test_noise:
        out["test_noisy"] = raw_split(test, None, noisy) if noisy is not None else \
            load_clip_dataset(dataset, "test", preprocess, folder, test_noise=True)
    return out


class OffsetTargets(torch.utils.data.Dataset):
    """``dataset`` with every label shifted by ``offset`` (CIFAR-100 inside the 110-way problem)."""

    def __init__(self, dataset: Any, offset: int):
        self.dataset, self.offset = dataset, offset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, target = self.dataset[i]
        return image, target + self.offset


CIFAR110_OFFSETS = {"cifar10": 0, "cifar100": 10}  # CIFAR-100 class k is class 10 + k of the 110-way problem


def cifar110(folder: str | None, preprocess: Any, test_noise: bool = False,
             prepare: Any = None) -> tuple[dict[str, Any], list[str]]:
    """The CIFAR-10 and CIFAR-100 test sets as one 110-way problem: ``({"cifar10": ..., "cifar100": labels + 10},
    110 class names)``; with ``prepare`` (a BatchPreprocess, noisy or not) raw splits preprocessed on the device."""
    parts, classes = {}, []
    for name, offset in CIFAR110_OFFSETS.items():
        data = load_clip_dataset(name, "test", preprocess, folder, test_noise=test_noise and prepare is None)
        classes += list(data.classes)
        parts[name] = raw_split(data, None, prepare, offset) if prepare is not None else OffsetTargets(data, offset)
    return parts, classes


# -- zero-shot evaluation batches -------------------------------------------------------------------------------------
class SliceBatches:
    """Consecutive batches as views of tensors already on the device (no copies, no host-device sync)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int):
        self.images, self.targets, self.batch_size = images, targets, batch_size

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.images), self.batch_size):
            yield self.images[start:start + self.batch_size], self.targets[start:start + self.batch_size]


def zeroshot_batches(dataset: Any, preprocess: Any, device: torch.device, *, mode: str, batch_size: int,
                     num_workers: int | None, noise_std: float | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """``(batches, prepare, info)`` in order: PIL preprocessing in DataLoader workers (``prepare`` None; workers
    default to min(16, CPUs)), or the whole uint8 split on the device once (CIFAR train: 150 MB) in slices that
    ``prepare`` (a :class:`BatchPreprocess`) turns into model input there."""
    prepare = device_preprocess(mode, preprocess, device, noise_std)
    if prepare is not None:
        raw = raw_split(dataset, None, prepare)
        batches = SliceBatches(raw.images.to(device), raw.targets.to(device), batch_size)
        return batches, prepare, {"preprocess": "batch", "num_workers": 0}
    workers = min(16, os.cpu_count() or 1) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         pin_memory=device.type == "cuda", prefetch_factor=4 if workers > 0 else None,
                                         persistent_workers=False)
    return loader, None, {"preprocess": "pil", "num_workers": workers}
