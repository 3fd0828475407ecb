"""Vision datasets through torchvision's dataset classes, with the course's normalisations and seeded splits.

Look-up order for a dataset: the data folder (``--data_dir``, else ``$DL1_DATA``, else ``./data``), then known system
locations (Debian's ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist/``, decompressed into
torchvision's ``raw/`` layout since Debian re-gzipped the files and they fail torchvision's checksum), then a download.
Offline (or with ``DL1_OFFLINE=1``), a missing dataset fails within about a second with one line saying which files to
put where.

No file is trusted: CIFAR's pickles are read by ``dl1.data.cifar`` with an unpickler that admits only plain containers
and NumPy arrays (a file that would run code is refused), and IDX files are checked by ``dl1.data.idx`` (magic number,
element type, sizes, labels) before torchvision reads them.  A bad file is one line naming it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dl1.data import cifar, idx
from dl1.errors import DL1Error, UsageError, first_line
from dl1.hub import online
from dl1.runtime import write_atomic


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: str  # where the files go, for the offline message
    url: str
    torchvision_class: str
    system_dirs: tuple[str, ...] = ()


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, (0.491, 0.482, 0.447), (0.247, 0.243, 0.262),
                           "{root}/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
                           "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "CIFAR10"),
    "cifar100": DatasetInfo("cifar100", (3, 32, 32), 100, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761),
                            "{root}/cifar-100-python/ (train, test, meta)",
                            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "CIFAR100"),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,),
                         "{root}/MNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                         "t10k-labels-idx1-ubyte; .gz accepted)",
                         "https://ossci-datasets.s3.amazonaws.com/mnist/", "MNIST"),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,),
                                 "{root}/FashionMNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                 "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; .gz accepted) or "
                                 "`apt-get install dataset-fashion-mnist`",
                                 "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", "FashionMNIST",
                                 ("/usr/share/datasets/fashion-mnist",)),
}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SYNTHETIC = "synthetic"
CHOICES = (*DATASETS, SYNTHETIC)  # the --dataset choices of the image classifiers


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DL1Error(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir`` if given, else ``$DL1_DATA``, else ``./data``."""
    return Path(data_dir or os.environ.get("DL1_DATA") or "data")


# -- presence checks and system locations -----------------------------------------------------------------------------
def _present(info: DatasetInfo, root: Path) -> bool:
    if info.name in cifar.LAYOUTS:
        return cifar.present(info.name, root)
    raw = root / info.torchvision_class / "raw"
    return all((raw / f).exists() or (raw / f"{f}.gz").exists() for f in IDX_FILES)


def _prepare_idx(raw: Path) -> None:
    """torchvision with download=False wants uncompressed IDX files: gunzip any ``.gz`` that lacks its twin, then
    check both splits' headers and labels."""
    for f in IDX_FILES:
        if not (raw / f).exists() and (raw / f"{f}.gz").exists():
            idx.gunzip(raw / f"{f}.gz", raw / f)
    for prefix in ("train", "t10k"):
        idx.check_split(raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte")


def _from_system(info: DatasetInfo, root: Path) -> bool:
    """Copy a system-installed copy (Debian's Fashion-MNIST) into torchvision's layout under ``root``."""
    for sysdir in map(Path, info.system_dirs):
        if all((sysdir / f"{f}.gz").exists() for f in IDX_FILES):
            raw = root / info.torchvision_class / "raw"
            try:
                raw.mkdir(parents=True, exist_ok=True)
                for f in IDX_FILES:
                    if not (raw / f).exists():
                        with open(sysdir / f"{f}.gz", "rb") as src:
                            write_atomic(raw / f"{f}.gz", lambda dst, src=src: shutil.copyfileobj(src, dst))
            except OSError:
                return False
            return True
    return False


def _missing_message(info: DatasetInfo, root: Path) -> str:
    where = info.files.format(root=root)
    return (f"{info.name} not found and cannot be downloaded (offline): download {info.url} and put the files in "
            f"{where}, or pass --data_dir DIR")


def prepare(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Make sure ``name`` is on disk (IDX files checked); return the root folder of its files."""
    info = dataset_info(name)
    root = resolve_data_dir(data_dir)
    if not _present(info, root) and not _from_system(info, root):
        if not (download and online(info.url)):
            raise DL1Error(_missing_message(info, root))
        _download(info, root)
    if info.name not in cifar.LAYOUTS:
        _prepare_idx(root / info.torchvision_class / "raw")
    return root


def _download(info: DatasetInfo, root: Path) -> None:
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    try:
        getattr(tvd, info.torchvision_class)(str(root), train=True, download=True)
        getattr(tvd, info.torchvision_class)(str(root), train=False, download=True)
    except Exception as exc:
        raise DL1Error(f"downloading {info.name} failed ({type(exc).__name__}: {first_line(exc)}); "
                       f"{_missing_message(info, root)}") from None


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
    import torchvision.datasets as tvd

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
    import torch

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
        import torch

        return img + torch.randn_like(img) * self.std + self.mean

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"
