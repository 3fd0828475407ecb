"""Named prompt-template sets for CLIP zero-shot classification (prompt ensembles).

* ``imagenet80``: the 80 ImageNet templates of the CLIP paper, read from ``open_clip.zero_shot_metadata``
  (``OPENAI_IMAGENET_TEMPLATES``) rather than copied;
* ``imagenet7``: the 7-template subset the CLIP authors found best (``SIMPLE_IMAGENET_TEMPLATES``);
* ``cifar18``: the 18 templates the CLIP paper uses for CIFAR-10 and CIFAR-100 (openai/CLIP ``data/prompts.md``);
* ``course``: the course's single template ``"This is a photo of a {}"``;
* ``fashion``: the 10 caption templates dl1's mini-CLIP is trained with (``dl1 run mini-clip``; the course's template
  is one of them).

Every template is a format string with one ``{}`` for the class name.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from dl1.errors import DL1Error

COURSE_TEMPLATE = "This is a photo of a {}"

CIFAR_TEMPLATES = tuple(
    f"a {adj}photo of {art} {size}{{}}."
    for art in ("a", "the")
    for adj, size in [("", ""), ("blurry ", ""), ("black and white ", ""), ("low contrast ", ""),
                      ("high contrast ", ""), ("bad ", ""), ("good ", ""), ("", "small "), ("", "big ")]
)  # 'a photo of a {}.', 'a blurry photo of a {}.', ..., 'a photo of the big {}.'

FASHION_TEMPLATES = (
    COURSE_TEMPLATE, "a photo of a {}.", "a picture of a {}.", "a grayscale photo of a {}.", "an image of the {}.",
    "a low resolution photo of a {}.", "a {}.", "a photo of the small {}.", "a product photo of a {}.",
    "a drawing of a {}.",
)  # the mini-CLIP's training captions: template x class name

_OPEN_CLIP = {"imagenet80": "OPENAI_IMAGENET_TEMPLATES", "imagenet7": "SIMPLE_IMAGENET_TEMPLATES"}
NAMES = ("imagenet80", "imagenet7", "cifar18", "course", "fashion")


def _open_clip_metadata():
    """``open_clip.zero_shot_metadata`` (a plain data file), without paying for ``import open_clip``."""
    if "open_clip" in sys.modules:
        return importlib.import_module("open_clip.zero_shot_metadata")
    found = importlib.util.find_spec("open_clip")
    if found is None or not found.submodule_search_locations:
        raise DL1Error("open_clip is not installed: pip install open_clip_torch")
    path = Path(list(found.submodule_search_locations)[0]) / "zero_shot_metadata.py"
    spec = importlib.util.spec_from_file_location("_dl1_open_clip_zero_shot_metadata", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_templates(name: str) -> tuple[str, ...]:
    """The template set ``name`` as format strings (``"a photo of a {}."``)."""
    if name == "course":
        return (COURSE_TEMPLATE,)
    if name == "cifar18":
        return CIFAR_TEMPLATES
    if name == "fashion":
        return FASHION_TEMPLATES
    if name in _OPEN_CLIP:
        lambdas = getattr(_open_clip_metadata(), _OPEN_CLIP[name])
        return tuple(t("{}") for t in lambdas)  # each lambda is f"...{c}..." -> a format string
    raise DL1Error(f"unknown template set {name!r}; known: {', '.join(NAMES)}")
