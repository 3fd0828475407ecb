"""Pretrained CLIP weights: open_clip's table of weight tags, its caches, a download, and the loaders that return a
:class:`~dl1.models.clip.ClipBundle` (frozen float32 model in eval mode, its preprocessing and its BPE tokenizer).

The weights come from ``--clip_weights PATH``, else from open_clip's caches (the Hugging Face hub cache, then
``~/.cache/clip``; safetensors files first), else from a download by open_clip.  Offline with nothing cached, the
loader fails at once with one line saying what to download and where to put it: a loaded model is never silently
random.  Only open_clip's public API is used (``get_pretrained_cfg``, ``list_pretrained_tags_by_model``,
``create_model_and_transforms`` and the model's ``load_state_dict``); a cached file is read by dl1
(:mod:`dl1.hub.clip.weights`), never by open_clip.

Importing this module imports open_clip (seconds): the flag checks use :mod:`dl1.hub.clip.names` instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import open_clip
import torch
from huggingface_hub import try_to_load_from_cache
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from dl1.errors import DL1Error, first_line
from dl1.hub import online
from dl1.hub.clip.mini import newest_mini_clip
from dl1.hub.clip.mini_store import load_mini_clip
from dl1.hub.clip.names import MINI_ARCH, TINY_ARCH, open_clip_name
from dl1.hub.clip.weights import fit_state, read_weights
from dl1.models.clip import ClipBundle, build_clip, freeze, tiny_clip


def safetensors_twins(filename: str) -> list[str]:
    """The safetensors files a hub repository may hold in place of the pickle ``filename`` (open_clip downloads the
    safetensors twin first): ``open_clip_model.safetensors`` for open_clip's ``open_clip_pytorch_model.bin``,
    ``NAME.safetensors`` for another ``NAME.bin`` or ``NAME.pth``."""
    if filename == HF_WEIGHTS_NAME:
        return [HF_SAFE_WEIGHTS_NAME]
    stem, dot, suffix = filename.rpartition(".")
    return [f"{stem}.safetensors"] if dot and suffix in ("bin", "pth") else []


def pretrained_cfg(oc_name: str, tag: str) -> dict[str, Any]:
    """open_clip's entry for weights ``tag`` of ``oc_name`` (URL, hub repo, preprocessing); none -> DL1Error."""
    cfg = open_clip.get_pretrained_cfg(oc_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(oc_name)
        have = f"available tags: {', '.join(tags)}" if tags else "no pretrained weights are known for it"
        raise DL1Error(f"no {tag!r} weights for CLIP {oc_name}; {have} (or pass --clip_weights PATH)")
    return cfg


def cached_file(cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The local copy of a tag's weights in open_clip's caches (HF hub cache with its safetensors file first, then
    ``~/.cache/clip``), if any."""
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        filename = filename or HF_WEIGHTS_NAME
        for fname in [*safetensors_twins(filename), filename]:  # the order open_clip downloads in
            hit = try_to_load_from_cache(repo, fname, cache_dir=cache_dir)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    url = cfg.get("url", "")
    if url:
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def download_hint(cfg: dict[str, Any]) -> str:
    """Where to get a tag's weights by hand: the safetensors file on the hub first, the OpenAI archive second."""
    hub, url = cfg.get("hf_hub", "").rstrip("/"), cfg.get("url", "")
    where = []
    if hub:
        where.append(f"https://huggingface.co/{hub}/resolve/main/{safetensors_twins(HF_WEIGHTS_NAME)[0]}")
    if url:
        where.append(f"{url} (TorchScript: loading it runs its code)" if hub else url)
    return " or ".join(where) or "the weights file"


def load_clip(arch: str = "ViT-B/32", pretrained: str = "openai", weights: str | Path | None = None,
              device: str | torch.device = "cpu", cache_dir: str | None = None) -> ClipBundle:
    """CLIP ``arch`` with pretrained weights: from ``weights`` (a local file) if given, else open_clip's tag
    ``pretrained`` (cache first, then a download).  Frozen, eval mode, float32, on ``device``."""
    oc_name = open_clip_name(arch)
    source = str(weights) if weights is not None else None
    quick_gelu = pretrained == "openai"
    prep: dict[str, Any] = {}
    if source is None:
        cfg = pretrained_cfg(oc_name, pretrained)
        quick_gelu = bool(cfg.get("quick_gelu", False))
        prep = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if cfg.get(k)}
        source = cached_file(cfg, cache_dir)
        if source is None:
            return download_clip(arch, oc_name, pretrained, cfg, device, cache_dir)
    state, kind = read_weights(source)
    quick_gelu = quick_gelu or kind == "openai_torchscript"  # every OpenAI release uses QuickGELU
    bundle = build_clip(arch, oc_name, quick_gelu, prep)
    fit_state(bundle.model, state, source, arch)
    bundle.model = freeze(bundle.model, device)
    bundle.pretrained, bundle.weights = (pretrained if weights is None else None), source
    bundle.info = {"open_clip_name": oc_name, "quick_gelu": quick_gelu, "weights_format": kind}
    return bundle


def download_clip(arch: str, oc_name: str, tag: str, cfg: dict[str, Any], device: str | torch.device,
                  cache_dir: str | None) -> ClipBundle:
    """Weights not cached: let open_clip download them, or fail at once (one line) when offline."""
    where = download_hint(cfg)
    if not online("huggingface.co"):
        local = Path(cache_dir or "~/.cache/clip").expanduser() / os.path.basename(cfg.get("url", "") or "model.pt")
        raise DL1Error(f"CLIP {arch} {tag!r} weights are not cached and the network is unavailable: download "
                       f"{where} and pass --clip_weights PATH (or put the OpenAI file at {local})")
    try:
        # open_clip only warns when a tag trained with QuickGELU meets a GELU config: force the tag's activation
        model, _, preprocess = open_clip.create_model_and_transforms(
            oc_name, pretrained=tag, cache_dir=cache_dir, force_quick_gelu=bool(cfg.get("quick_gelu")))
    except Exception as exc:
        raise DL1Error(f"downloading CLIP {arch} {tag!r} weights failed ({type(exc).__name__}: "
                       f"{first_line(exc, 160)}); download {where} and pass --clip_weights PATH") from None
    return ClipBundle(freeze(model, device), preprocess, open_clip.get_tokenizer(oc_name), arch, tag,
                      cached_file(cfg, cache_dir), info={"open_clip_name": oc_name,
                                                         "quick_gelu": bool(cfg.get("quick_gelu"))})


def random_clip(arch: str = "ViT-B/32", device: str | torch.device = "cpu") -> ClipBundle:
    """Full-size CLIP ``arch`` with RANDOM weights, for speed benchmarks only (never for accuracy)."""
    oc_name = open_clip_name(arch)
    bundle = build_clip(arch, oc_name, True, {})
    bundle.model, bundle.random_init = freeze(bundle.model, device), True
    bundle.info = {"open_clip_name": oc_name, "note": "random weights, for benchmarks only"}
    return bundle


def get_clip(arch: str, *, pretrained: str = "openai", weights: str | None = None, image_size: int | None = None,
             device: str | torch.device = "cpu") -> ClipBundle:
    """The CLIP named by ``--arch``: pretrained weights (:func:`load_clip`), dl1's mini-CLIP (``mini``: the weights
    of a mini-clip run, :func:`load_mini_clip`), or the tiny RANDOM test model when asked for by its name
    ``tiny-test`` (``image_size`` px input; labelled so in every summary)."""
    if arch == MINI_ARCH:
        return load_mini_clip(weights if weights is not None else newest_mini_clip(), device)
    if arch == TINY_ARCH:
        return tiny_clip(device=device) if image_size is None else tiny_clip(image_size=image_size, device=device)
    return load_clip(arch, pretrained=pretrained, weights=weights, device=device)
