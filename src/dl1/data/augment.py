"""Augmentations by name, placed where they belong in the transform pipeline.

The course's pipeline is ``Resize((224, 224))``, ``ToTensor``, ``Normalize``.  Every augmentation declares its stage
(the names, stages and help texts are in the torch-free ``dl1.data.catalog``, which the spec's flag check reads):

* ``pil``: works on PIL images (AutoAugment, RandAugment, TrivialAugment, flips, crops) and runs on the native 32x32
  image **before** ``Resize`` and ``ToTensor`` (the policies were designed for CIFAR-sized images; resizing first would
  cost 49x more pixels and scale their pixel translations).  The reference solution appended AutoAugment after
  ``Normalize``, where it cannot run on PIL images: a bug we do not copy.
* ``tensor``: works on ``[0, 1]`` tensors, after ``ToTensor`` and before ``Normalize`` (random erasing).

Test-time Gaussian noise is not an augmentation: :func:`build_transform` appends ``AddGaussianNoise`` **after**
``Normalize`` (the template's placement, so the std of 0.1 is in normalised units) and callers use it on the test split
only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torchvision.transforms as T

from dl1.data.catalog import AUGMENTATION_STAGES
from dl1.data.catalog import parse_augmentations as parse_names
from dl1.data.vision import AddGaussianNoise


@dataclass(frozen=True)
class Augmentation:
    name: str
    stage: str  # "pil" (before ToTensor) or "tensor" (after ToTensor, before Normalize)
    make: Callable[[], Any]
    help: str


_MAKERS: dict[str, Callable[[], Any]] = {
    "random_hflip": lambda: T.RandomHorizontalFlip(p=0.5),
    "random_crop": lambda: T.RandomCrop(32, padding=4, padding_mode="reflect"),
    "auto_augment": lambda: T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
    "rand_augment": lambda: T.RandAugment(num_ops=2, magnitude=9),
    "trivial_augment": lambda: T.TrivialAugmentWide(),
    "color_jitter": lambda: T.ColorJitter(0.4, 0.4, 0.4, 0.1),
    "random_erasing": lambda: T.RandomErasing(p=0.25),
}
AUGMENTATIONS: dict[str, Augmentation] = {name: Augmentation(name, stage, _MAKERS[name], help)
                                          for name, (stage, help) in AUGMENTATION_STAGES.items()}


def build_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                    augmentation: str | None = None, test_noise: bool = False, noise_std: float = 0.1):
    """``[pil augs] -> Resize((s, s)) -> ToTensor -> [tensor augs] -> Normalize -> [AddGaussianNoise]``."""
    augs = [AUGMENTATIONS[n] for n in parse_names(augmentation)]
    steps: list[Any] = [a.make() for a in augs if a.stage == "pil"]
    steps += [T.Resize((image_size, image_size)), T.ToTensor()]
    steps += [a.make() for a in augs if a.stage == "tensor"]
    steps.append(T.Normalize(mean, std))
    if test_noise:
        steps.append(AddGaussianNoise(mean=0.0, std=noise_std))
    return T.Compose(steps)
