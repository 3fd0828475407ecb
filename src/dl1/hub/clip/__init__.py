"""CLIP weights and architecture facts, one job per module:

* :mod:`~dl1.hub.clip.names`: architecture names (course and open_clip spellings) and their open_clip configs;
* :mod:`~dl1.hub.clip.limits`: which prompt fits which image tower (input size, residual blocks);
* :mod:`~dl1.hub.clip.weights`: a weight file's format, told by its contents, and its safe reading;
* :mod:`~dl1.hub.clip.pretrained`: open_clip's weight tags, its caches, downloads, and ``load_clip``/``get_clip``;
* :mod:`~dl1.hub.clip.mini`: dl1's mini-CLIP format (the checked model config beside its weights);
* :mod:`~dl1.hub.clip.mini_store`: loading and saving a mini-CLIP, and its cache with a content hash.

``load_clip`` returns a :class:`~dl1.models.clip.ClipBundle` (frozen float32 model in eval mode, its preprocessing
and its BPE tokenizer); offline with nothing cached it fails at once with one line saying what to download and where
to put it: a loaded model is never silently random.

The names, limits and mini-CLIP format are torch-free and imported here; the other three import torch or open_clip
(seconds) and are imported when one of their names is first asked for (``from dl1.hub.clip import load_clip`` works).
The prompt checkpoints of ``dl1 run clip-prompt`` are that experiment's: :mod:`dl1.experiments.clip_prompt_checkpoint`.
"""

from __future__ import annotations

import importlib
from typing import Any

from dl1.hub.clip.limits import check_prompt, check_prompt_limits, input_size, vision_limits
from dl1.hub.clip.mini import (
    MINI_CONFIG,
    MINI_FORMAT,
    MINI_RUNS,
    MINI_WEIGHTS,
    clip_choice,
    is_mini_clip,
    mini_config_file,
    newest_mini_clip,
    read_mini_config,
)
from dl1.hub.clip.names import (
    COURSE_ARCHS,
    DEFAULT_ARCH,
    GPU_PRECISION_NOTE,
    MAX_IMAGE_SIZE,
    MAX_PROMPT_TOKENS,
    MINI_ARCH,
    TINY_ARCH,
    TINY_BLOCKS,
    TINY_PATCH,
    WEIGHTS_HELP,
    known_archs,
    open_clip_dir,
    open_clip_name,
    vision_config,
)

_HEAVY = {  # name -> the module (torch or open_clip at its top) that defines it
    **dict.fromkeys(("is_torchscript", "is_safetensors", "read_weights", "fit_state"), "weights"),
    **dict.fromkeys(("load_clip", "get_clip", "random_clip", "download_clip", "pretrained_cfg", "cached_file",
                     "safetensors_twins"), "pretrained"),
    **dict.fromkeys(("load_mini_clip", "save_mini_clip", "mini_cache_entry", "cached_mini_clip", "store_mini_clip",
                     "sha256_file"), "mini_store"),
}

__all__ = [
    "COURSE_ARCHS", "DEFAULT_ARCH", "GPU_PRECISION_NOTE", "MAX_IMAGE_SIZE", "MAX_PROMPT_TOKENS", "MINI_ARCH",
    "MINI_CONFIG", "MINI_FORMAT", "MINI_RUNS", "MINI_WEIGHTS", "TINY_ARCH", "TINY_BLOCKS", "TINY_PATCH",
    "WEIGHTS_HELP", "check_prompt", "check_prompt_limits", "clip_choice", "input_size", "is_mini_clip",
    "known_archs", "mini_config_file", "newest_mini_clip", "open_clip_dir", "open_clip_name", "read_mini_config",
    "vision_config", "vision_limits", *_HEAVY,
]


def __getattr__(name: str) -> Any:
    """The torch/open_clip names, imported on first use (PEP 562)."""
    if name in _HEAVY:
        return getattr(importlib.import_module(f"{__name__}.{_HEAVY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
