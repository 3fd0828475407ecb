"""CLIP weight files: what format a file is (told by its contents, not its name) and how each is read.

What a weights file may be, in the order dl1 prefers them:

1. **safetensors**: tensors only, nothing in the file can run;
2. **a state dict** written by ``torch.save`` (open_clip checkpoints, ``{'state_dict': ...}``, ``module.`` prefixes):
   read with ``torch.load(weights_only=True)``, which admits tensors and plain containers only; a pickle that asks for
   anything else is refused with one line;
3. **an OpenAI TorchScript archive** (the original ``ViT-B-32.pt``): a zip holding ``code/`` and ``constants.pkl``.
   Loading one *executes the TorchScript code it holds* (only its parameters are kept afterwards), so it is loaded
   only when the file is one, and only from a source you trust; prefer the safetensors file of the same weights.

The state dict read here goes into a model that open_clip's public API built (``create_model``, ``CLIP(...)``) through
``load_state_dict(strict=True)`` (:func:`fit_state`): open_clip never opens the file itself.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from dl1.errors import DL1Error, first_line


def is_torchscript(path: str | Path) -> bool:
    """A TorchScript archive is a zip holding ``code/`` and ``constants.pkl`` (a ``torch.save`` zip holds neither)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def is_safetensors(path: str | Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON header starting with ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= os.path.getsize(path) - 8


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """A CLIP state dict from a safetensors file, a ``torch.save`` state dict (``weights_only=True``) or an OpenAI
    TorchScript archive (only when the file is one; see the module docstring); returns ``(state_dict, kind)``."""
    path = Path(path)
    if not path.is_file():
        raise DL1Error(f"CLIP weights file not found: {path}")
    try:
        with warnings.catch_warnings():  # torch's loaders warn about formats and protocols: the result says enough
            warnings.simplefilter("ignore")
            if path.suffix == ".safetensors" or is_safetensors(path):
                obj, kind = load_file(str(path), device="cpu"), "safetensors"
            elif is_torchscript(path):  # runs the archive's TorchScript (said in --help); only parameters are kept
                obj, kind = torch.jit.load(str(path), map_location="cpu").state_dict(), "openai_torchscript"
            else:
                obj, kind = torch.load(path, map_location="cpu", weights_only=True), "state_dict"
    except Exception as exc:
        raise DL1Error(f"cannot read CLIP weights {path}: {type(exc).__name__}: {first_line(exc)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DL1Error(f"{path} is not a CLIP state dict (expected a dict of tensors)")
    if next(iter(obj)).startswith("module."):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):  # metadata / derived buffers
        obj.pop(key, None)
    return obj, kind


def fit_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> None:
    """Strictly load ``state`` into ``model``; a mismatch names the architecture and the first offending keys."""
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or extra or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
                 f"{len(shapes)} with other shapes (e.g. {shapes[0]}: {tuple(state[shapes[0]].shape)} vs "
                 f"{tuple(own[shapes[0]].shape)})" if shapes else ""]
        raise DL1Error(f"weights in {source} do not fit CLIP {arch}: " + "; ".join(p for p in parts if p)
                       + " (wrong --arch for this file?)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise DL1Error(f"weights in {source} do not fit CLIP {arch}: {first_line(exc)}") from None
