"""What the data flags accept and where a dataset's files are, without torch: the side of ``dl1.data`` that an
experiment's spec and its preflight read (``dl1 run NAME --help`` and a missing-dataset message import no torch).

* the vision datasets (:data:`DATASETS`: shape, classes, normalisation, file layout) and the look-up order of their
  files: the data folder (``--data_dir``, else ``$DL1_DATA``, else ``./data``), then known system locations (Debian's
  ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist/``, decompressed into torchvision's ``raw/``
  layout since Debian re-gzipped the files and they fail torchvision's checksum), then a download.  Offline (or with
  ``DL1_OFFLINE=1``), a missing dataset fails within about a second with one line saying which files to put where;
* the ``--dataset`` choices of the image classifiers (:data:`CHOICES`), the generative models
  (:data:`IMAGE_DATASETS`) and the CLIP experiments (:data:`FASHION_DATASETS`, Fashion-MNIST and its shifted copies);
* the augmentations by name (:data:`AUGMENTATION_STAGES`, :func:`parse_augmentations`).

The readers are elsewhere: ``dl1.data.vision`` (torch datasets, NumPy arrays), ``dl1.data.fashion_clip``,
``dl1.data.augment`` (the transforms themselves).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dl1.data import cifar, idx
from dl1.errors import DL1Error, UsageError, first_line
from dl1.hub import online
from dl1.run.files import write_atomic


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
IMAGE_DATASETS = ("mnist", "fashion-mnist", SYNTHETIC)  # the --dataset choices of the generative models (VAE, AAE)

# Fashion-MNIST for CLIP (dl1.data.fashion_clip): the original images and domain-shifted copies
FASHION = "fashion-mnist"
SHIFTS = ("inverted", "rot90")
FASHION_DATASETS = (FASHION, *(f"{FASHION}-{s}" for s in SHIFTS))  # the --dataset names the CLIP experiments accept
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot")


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
    # torchvision's downloaders (checksums included), imported only here: a download is rare, and a preflight that
    # finds the files must stay torch-free
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    try:
        getattr(tvd, info.torchvision_class)(str(root), train=True, download=True)
        getattr(tvd, info.torchvision_class)(str(root), train=False, download=True)
    except Exception as exc:
        raise DL1Error(f"downloading {info.name} failed ({type(exc).__name__}: {first_line(exc)}); "
                       f"{_missing_message(info, root)}") from None


# -- augmentations by name (the transforms themselves: dl1.data.augment) -----------------------------------------------
AUGMENTATION_STAGES: dict[str, tuple[str, str]] = {  # name -> (stage, help); stage "pil": before ToTensor (PIL
    # images), "tensor": after ToTensor, before Normalize
    "random_hflip": ("pil", "horizontal flip with p = 0.5"),
    "random_crop": ("pil", "32x32 random crop after 4-pixel reflect padding"),
    "auto_augment": ("pil", "AutoAugment, CIFAR-10 policy"),
    "rand_augment": ("pil", "RandAugment, 2 ops, magnitude 9"),
    "trivial_augment": ("pil", "TrivialAugment (wide)"),
    "color_jitter": ("pil", "colour jitter (brightness/contrast/saturation 0.4, hue 0.1)"),
    "random_erasing": ("tensor", "random erasing with p = 0.25 (on tensors, before Normalize)"),
}


def parse_augmentations(spec: str | None) -> tuple[str, ...]:
    """``"random_hflip,auto_augment"`` -> the names, checked against :data:`AUGMENTATION_STAGES`
    (``None``/``"none"`` -> ())."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return ()
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    for n in names:
        if n not in AUGMENTATION_STAGES:
            hint = " (test noise is the separate flag --test_noise)" if n == "test_noise" else ""
            raise UsageError(f"--augmentation_name: unknown augmentation {n!r}{hint}; "
                             f"choose from {', '.join(AUGMENTATION_STAGES)} (comma-separated to combine)")
    return names
