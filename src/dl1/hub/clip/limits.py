"""Which prompt fits which CLIP: the image tower's input size and residual blocks, known from the architecture's
name and config file alone (the mini-CLIP: the model config beside its weights).  No model is built, open_clip is not
imported: these run on the flags, before a run folder is made.
"""

from __future__ import annotations

from pathlib import Path

from dl1.errors import UsageError
from dl1.hub.clip.mini import newest_mini_clip, read_mini_config
from dl1.hub.clip.names import MAX_IMAGE_SIZE, MINI_ARCH, TINY_ARCH, TINY_BLOCKS, TINY_PATCH, vision_config


def vision_limits(arch: str, image_size: int | None, weights: str | Path | None = None) -> tuple[int, int | None]:
    """``(input size, residual blocks)`` of an architecture's image tower; blocks is None when the tower is not one
    of open_clip's own ViTs (a ResNet, a timm model), which deep prompts cannot use.  The tiny test model takes
    ``image_size`` as its input size (224 when None); the mini-CLIP's limits are in the model config beside its
    ``weights``."""
    if arch == TINY_ARCH:
        return image_size or 224, TINY_BLOCKS
    if arch == MINI_ARCH:
        vision = read_mini_config(weights if weights is not None else newest_mini_clip())["model"]["vision_cfg"]
        return vision["image_size"], vision["layers"]
    vision = vision_config(arch)
    size = vision.get("image_size", 224)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    layers = vision.get("layers")
    is_vit = isinstance(layers, int) and not vision.get("timm_model_name") and vision.get("patch_size")
    return size, (layers if is_vit else None)


def check_prompt(arch: str, image_size: int, prompt_type: str, method: str, prompt_size: int,
                 injection_layer: int, weights: str | Path | None = None) -> None:
    """Does this prompt fit CLIP ``arch``?  Known from the architecture's name and config file alone (the mini-CLIP:
    the model config beside its ``weights``; no model is built, open_clip is not imported): the input size, the
    prompt's pixel limits, the deep prompt's block index.  A prompt that does not fit is a one-line
    :class:`UsageError`."""
    size, blocks = vision_limits(arch, image_size, weights)
    if arch == TINY_ARCH and not TINY_PATCH <= image_size <= MAX_IMAGE_SIZE:
        raise UsageError(f"--image_size {image_size}: the {TINY_ARCH} model takes {TINY_PATCH} to {MAX_IMAGE_SIZE} px")
    if image_size != size:
        raise UsageError(f"--image_size {image_size} does not match CLIP {arch}'s input size {size}")
    check_prompt_limits(arch, size, blocks, prompt_type, method, prompt_size, injection_layer)


def check_prompt_limits(arch: str, size: int, blocks: int | None, prompt_type: str, method: str, prompt_size: int,
                        injection_layer: int) -> None:
    """Does this prompt fit an image tower of ``size`` px input and ``blocks`` residual blocks (None: not a ViT)?
    A prompt that does not fit is a one-line :class:`UsageError` naming CLIP ``arch``."""
    if prompt_type == "deep_prompt":
        if blocks is None:
            raise UsageError(f"deep prompts need a ViT image tower; CLIP {arch} has none (use --prompt_type "
                             f"visual_prompt or a ViT architecture)")
        if not 0 <= injection_layer < blocks:
            raise UsageError(f"--injection_layer must be in [0, {blocks - 1}] for CLIP {arch} ({blocks} blocks), "
                             f"got {injection_layer}")
        return
    limit = size // 2 if method == "padding" else size
    if not 1 <= prompt_size <= limit:
        what = "pad width" if method == "padding" else "patch side"
        raise UsageError(f"--prompt_size {prompt_size}: the {what} must be in [1, {limit}] on CLIP {arch}'s {size} px "
                         f"images")


def input_size(arch: str, weights: str | Path | None = None) -> int:
    """The input size (px) of ``arch``'s image tower (the tiny test model: 224 unless asked otherwise)."""
    return vision_limits(arch, None, weights)[0]
