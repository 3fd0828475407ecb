"""CLIP architecture names: the course's (``ViT-B/32``) and open_clip's (``ViT-B-32``), and the facts of an
architecture that its open_clip model config gives (read from the config file: open_clip is not imported).

torch-free and fast: ``--help`` and the flag checks before a run use these.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from dl1.errors import DL1Error

TINY_ARCH = "tiny-test"  # dl1.models.clip.tiny_clip: a tiny RANDOM CLIP for smoke runs and tests, never a fallback
MINI_ARCH = "mini"  # dl1's mini-CLIP, trained by `dl1 run mini-clip`; its model config is JSON beside the weights
DEFAULT_ARCH = "ViT-B/32"  # the course's CLIP (the --arch default of the CLIP experiments)
TINY_BLOCKS, TINY_PATCH = 2, 16  # tiny_clip's image tower: 2 residual blocks, 16 px patches
MAX_IMAGE_SIZE = 1024  # the largest CLIP input size a flag may ask for (open_clip's models go up to 512 px)
MAX_PROMPT_TOKENS = 256  # the most deep prompt tokens a flag may ask for (the course uses 4)

# The course's architecture names (OpenAI ``clip.available_models()``) -> open_clip config names.
COURSE_ARCHS = {
    "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336",
}
# the --precision help of the CLIP experiments: what a GPU run wants
GPU_PRECISION_NOTE = ("On a GPU use bf16 (or fp16): the frozen CLIP is then kept in that dtype (before this flag, CUDA "
                      "runs used float16 autocast by default).")
WEIGHTS_HELP = ("Local CLIP weights file. Preferred: a .safetensors file or a state dict (.pt/.bin, read with "
                "torch.load(weights_only=True): tensors only, a file holding anything else is refused). Also accepted: "
                "an OpenAI TorchScript archive (the original ViT-B-32.pt); loading one EXECUTES the TorchScript code "
                "inside it, so use only archives from a source you trust.")


def open_clip_dir() -> Path:
    """The folder of the installed open_clip package (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise DL1Error("open_clip is not installed: pip install open_clip_torch")
    return Path(list(spec.submodule_search_locations)[0])


def known_archs() -> list[str]:
    """Course names plus open_clip's built-in model configs (read from its files, without importing it)."""
    configs = sorted(p.stem for p in (open_clip_dir() / "model_configs").glob("*.json"))
    if "open_clip" in sys.modules:  # configs registered at run time (open_clip.add_model_config)
        configs += [m for m in sys.modules["open_clip"].list_models() if m not in configs]
    return [*COURSE_ARCHS, *configs]


def open_clip_name(arch: str) -> str:
    """Course name (``ViT-B/32``) or open_clip name (``ViT-B-32``) -> open_clip name; unknown -> DL1Error."""
    if arch in COURSE_ARCHS:
        return COURSE_ARCHS[arch]
    known = known_archs()
    if arch in known:
        return arch
    if arch.replace("/", "-") in known:
        return arch.replace("/", "-")
    close = difflib.get_close_matches(arch, known, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"course names: {', '.join(COURSE_ARCHS)}"
    raise DL1Error(f"unknown CLIP architecture {arch!r}; {hint}")


def vision_config(arch: str) -> dict[str, Any]:
    """The ``vision_cfg`` of an architecture's open_clip model config (its JSON file, or a config registered at run
    time), read without importing open_clip when it is not imported yet."""
    name = open_clip_name(arch)
    path = open_clip_dir() / "model_configs" / f"{name}.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
    else:
        cfg = sys.modules["open_clip"].get_model_config(name) or {}
    return dict(cfg.get("vision_cfg") or {})
