"""Augmentations by name, placed where they belong in the transform pipeline.

The course's pipeline is ``Resize((224, 224))``, ``ToTensor``, ``Normalize``.  Every registered augmentation declares
its stage:

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

from dl1.errors import UsageError


@dataclass(frozen=True)
class Augmentation:
    name: str
    stage: str  # "pil" (before ToTensor) or "tensor" (after ToTensor, before Normalize)
    make: Callable[[], Any]
    help: str


def _tv():
    import torchvision.transforms as T

    return T


AUGMENTATIONS: dict[str, Augmentation] = {a.name: a for a in (
    Augmentation("random_hflip", "pil", lambda: _tv().RandomHorizontalFlip(p=0.5), "horizontal flip with p = 0.5"),
    Augmentation("random_crop", "pil", lambda: _tv().RandomCrop(32, padding=4, padding_mode="reflect"),
                 "32x32 random crop after 4-pixel reflect padding"),
    Augmentation("auto_augment", "pil",
                 lambda: _tv().AutoAugment(_tv().AutoAugmentPolicy.CIFAR10), "AutoAugment, CIFAR-10 policy"),
    Augmentation("rand_augment", "pil", lambda: _tv().RandAugment(num_ops=2, magnitude=9),
                 "RandAugment, 2 ops, magnitude 9"),
    Augmentation("trivial_augment", "pil", lambda: _tv().TrivialAugmentWide(), "TrivialAugment (wide)"),
    Augmentation("color_jitter", "pil", lambda: _tv().ColorJitter(0.4, 0.4, 0.4, 0.1),
                 "colour jitter (brightness/contrast/saturation 0.4, hue 0.1)"),
    Augmentation("random_erasing", "tensor", lambda: _tv().RandomErasing(p=0.25),
                 "random erasing with p = 0.25 (on tensors, before Normalize)"),
)}


def parse_names(spec: str | None) -> tuple[str, ...]:
    """``"random_hflip,auto_augment"`` -> the names, checked against the registry (``None``/``"none"`` -> ())."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return ()
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    for n in names:
        if n not in AUGMENTATIONS:
            hint = " (test noise is the separate flag --test_noise)" if n == "test_noise" else ""
            raise UsageError(f"--augmentation_name: unknown augmentation {n!r}{hint}; "
                             f"choose from {', '.join(AUGMENTATIONS)} (comma-separated to combine)")
    return names


def build_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                    augmentation: str | None = None, test_noise: bool = False, noise_std: float = 0.1):
    """``[pil augs] -> Resize((s, s)) -> ToTensor -> [tensor augs] -> Normalize -> [AddGaussianNoise]``."""
    import torchvision.transforms as T

    from dl1.data.vision import AddGaussianNoise

    augs = [AUGMENTATIONS[n] for n in parse_names(augmentation)]
    steps: list[Any] = [a.make() for a in augs if a.stage == "pil"]
    steps += [T.Resize((image_size, image_size)), T.ToTensor()]
    steps += [a.make() for a in augs if a.stage == "tensor"]
    steps.append(T.Normalize(mean, std))
    if test_noise:
        steps.append(AddGaussianNoise(mean=0.0, std=noise_std))
    return T.Compose(steps)
