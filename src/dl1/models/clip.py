"""CLIP through open_clip: loading (course names, OpenAI weights, local files), text classifiers, zero-shot logits.

``load_clip`` returns a :class:`ClipBundle` (frozen float32 model in eval mode, its preprocessing and its BPE
tokenizer).  The weights come from ``--clip_weights PATH`` (an OpenAI ``.pt`` archive, TorchScript or state dict, or
an open_clip state dict / ``.safetensors``), else from open_clip's caches (the Hugging Face hub cache and
``~/.cache/clip``), else from a download by open_clip.  Offline with nothing cached, it fails at once with one line
saying what to download and where to put it: a loaded model is never silently random.  ``tiny_clip`` builds a small
*random* CLIP with the real tokenizer; it exists for tests and smoke runs and is never used as a fallback.

``import open_clip`` costs seconds, so it happens inside the functions that need it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import types
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dl1.errors import DL1Error
from dl1.hub import online

# The course's architecture names (OpenAI ``clip.available_models()``) -> open_clip config names.
COURSE_ARCHS = {
    "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336",
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
Template = str | Callable[[str], str]


@dataclass
class ClipBundle:
    """A CLIP model with its image preprocessing and text tokenizer (the open_clip bundle)."""

    model: nn.Module  # open_clip CLIP: encode_image, encode_text, logit_scale (log-temperature)
    preprocess: Callable[[Any], torch.Tensor]  # PIL image -> (3, S, S) normalised tensor
    tokenizer: Callable[[Sequence[str]], torch.Tensor]  # list of N strings -> (N, context_length) token ids
    arch: str  # the name asked for (course or open_clip spelling)
    pretrained: str | None = "openai"  # weights tag, None for random weights
    weights: str | None = None  # file the weights were read from
    random_init: bool = False  # True only for tiny_clip / explicitly unloaded models
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1])


# -- architecture names -----------------------------------------------------------------------------------------------
def _open_clip_dir() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise DL1Error("open_clip is not installed: pip install open_clip_torch")
    return Path(list(spec.submodule_search_locations)[0])


def known_archs() -> list[str]:
    """Course names plus open_clip's built-in model configs (read from its files, without importing it)."""
    configs = sorted(p.stem for p in (_open_clip_dir() / "model_configs").glob("*.json"))
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


# -- weight files ------------------------------------------------------------------------------------------------------
def _pretrained_meta():
    """open_clip's ``pretrained`` module (its table of weight tags) without running ``import open_clip`` (slow)."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"].pretrained
    name = "_dl1_open_clip_meta"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(_open_clip_dir())]
        sys.modules[name] = pkg
    try:
        return importlib.import_module(f"{name}.pretrained")
    except Exception:  # pragma: no cover - a future open_clip layout: fall back to the real import
        import open_clip

        return open_clip.pretrained


def _pretrained_cfg(oc_name: str, tag: str) -> dict[str, Any]:
    meta = _pretrained_meta()
    cfg = meta.get_pretrained_cfg(oc_name, tag)
    if not cfg:
        tags = meta.list_pretrained_tags_by_model(oc_name)
        have = f"available tags: {', '.join(tags)}" if tags else "no pretrained weights are known for it"
        raise DL1Error(f"no {tag!r} weights for CLIP {oc_name}; {have} (or pass --clip_weights PATH)")
    return cfg


def _cached_file(cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The local copy of a tag's weights in open_clip's caches (HF hub cache, then ~/.cache/clip), if any."""
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            meta = _pretrained_meta()
            repo, filename = os.path.split(hub)
            filename = filename or meta.HF_WEIGHTS_NAME
            for fname in [*meta._get_safe_alternatives(filename), filename]:  # the order open_clip downloads in
                hit = try_to_load_from_cache(repo, fname, cache_dir=cache_dir)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return hit
    url = cfg.get("url", "")
    if url:
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _online(host: str = "huggingface.co", timeout: float = 1.0) -> bool:
    """Can we reach ``host``? False at once when HF_HUB_OFFLINE=1."""
    return online(host, timeout)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding ``code/`` and ``constants.pkl`` (a ``torch.save`` zip holds neither)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """A CLIP state dict from an OpenAI ``.pt`` archive (TorchScript or state dict), an open_clip checkpoint
    (``{'state_dict': ...}``, ``module.`` prefixes) or ``.safetensors``; returns ``(state_dict, kind)``."""
    path = Path(path)
    if not path.is_file():
        raise DL1Error(f"CLIP weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu"), "safetensors"
        if _is_torchscript(path):
            # OpenAI's archives are TorchScript: only the parameters are kept (no Python pickle is loaded).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                obj, kind = torch.jit.load(str(path), map_location="cpu").state_dict(), "openai_torchscript"
        else:
            obj, kind = torch.load(path, map_location="cpu", weights_only=True), "state_dict"
    except DL1Error:
        raise
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise DL1Error(f"cannot read CLIP weights {path}: {type(exc).__name__}: {first}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DL1Error(f"{path} is not a CLIP state dict (expected a dict of tensors)")
    if next(iter(obj)).startswith("module."):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):  # metadata / derived buffers
        obj.pop(key, None)
    return obj, kind


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> None:
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
    model.load_state_dict(state, strict=True)


def _freeze(model: nn.Module, device: str | torch.device) -> nn.Module:
    model = model.float().eval().to(device)
    model.requires_grad_(False)
    return model


# -- public loaders ----------------------------------------------------------------------------------------------------
def load_clip(arch: str = "ViT-B/32", pretrained: str = "openai", weights: str | Path | None = None,
              device: str | torch.device = "cpu", cache_dir: str | None = None) -> ClipBundle:
    """CLIP ``arch`` with pretrained weights: from ``weights`` (a local file) if given, else open_clip's tag
    ``pretrained`` (cache first, then a download).  Frozen, eval mode, float32, on ``device``."""
    oc_name = open_clip_name(arch)
    source = str(weights) if weights is not None else None
    quick_gelu = pretrained == "openai"
    prep: dict[str, Any] = {}
    if source is None:
        cfg = _pretrained_cfg(oc_name, pretrained)
        quick_gelu = bool(cfg.get("quick_gelu", False))
        prep = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if cfg.get(k)}
        source = _cached_file(cfg, cache_dir)
        if source is None:
            return _download_clip(arch, oc_name, pretrained, cfg, device, cache_dir)
    state, kind = read_weights(source)
    quick_gelu = quick_gelu or kind == "openai_torchscript"  # every OpenAI release uses QuickGELU
    bundle = _build(arch, oc_name, quick_gelu, prep)
    _load_state(bundle.model, state, source, arch)
    bundle.model = _freeze(bundle.model, device)
    bundle.pretrained, bundle.weights = (pretrained if weights is None else None), source
    bundle.info = {"open_clip_name": oc_name, "quick_gelu": quick_gelu, "weights_format": kind}
    return bundle


def _build(arch: str, oc_name: str, quick_gelu: bool, prep: dict[str, Any]) -> ClipBundle:
    """An open_clip model of ``oc_name`` (random init, to be loaded) with its eval preprocessing and tokenizer."""
    import logging

    import open_clip

    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly": the weights are loaded next
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            oc_name, pretrained=None, force_quick_gelu=quick_gelu, **{f"image_{k}": v for k, v in prep.items()})
    finally:
        logging.disable(logging.NOTSET)
    return ClipBundle(model, preprocess, open_clip.get_tokenizer(oc_name), arch, None, None)


def _download_clip(arch: str, oc_name: str, tag: str, cfg: dict[str, Any], device: str | torch.device,
                   cache_dir: str | None) -> ClipBundle:
    """Weights not cached: let open_clip download them, or fail at once (one line) when offline."""
    where = cfg.get("url") or f"https://huggingface.co/{cfg.get('hf_hub', '').rstrip('/')}"
    if not _online():
        os.environ["HF_HUB_OFFLINE"] = "1"  # later hub calls fail fast instead of retrying
        local = Path(cache_dir or "~/.cache/clip").expanduser() / os.path.basename(cfg.get("url", "") or "model.pt")
        raise DL1Error(f"CLIP {arch} {tag!r} weights are not cached and the network is unavailable: download "
                       f"{where} and pass --clip_weights PATH (or put it at {local})")
    import open_clip

    try:
        # open_clip only warns when a tag trained with QuickGELU meets a GELU config: force the tag's activation
        model, _, preprocess = open_clip.create_model_and_transforms(
            oc_name, pretrained=tag, cache_dir=cache_dir, force_quick_gelu=bool(cfg.get("quick_gelu")))
    except Exception as exc:
        raise DL1Error(f"downloading CLIP {arch} {tag!r} weights failed ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160]}); download {where} and pass --clip_weights PATH") from None
    return ClipBundle(_freeze(model, device), preprocess, open_clip.get_tokenizer(oc_name), arch, tag,
                      _cached_file(cfg, cache_dir), info={"open_clip_name": oc_name,
                                                          "quick_gelu": bool(cfg.get("quick_gelu"))})


def tiny_clip(embed_dim: int = 32, width: int = 64, layers: int = 2, heads: int = 2, image_size: int = 64,
              patch_size: int = 16, context_length: int = 77, seed: int = 0,
              device: str | torch.device = "cpu") -> ClipBundle:
    """A tiny CLIP with RANDOM weights (ViT image tower, text transformer, the real offline BPE tokenizer).

    For tests and smoke runs only; its predictions mean nothing.  Seeded, and leaves the global RNG untouched.
    """
    import open_clip

    vision = {"image_size": image_size, "patch_size": patch_size, "width": width, "layers": layers,
              "head_width": width // heads}
    text = {"context_length": context_length, "vocab_size": 49408, "width": width, "heads": heads, "layers": layers}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=True)
    preprocess = open_clip.image_transform(image_size, is_train=False, mean=OPENAI_MEAN, std=OPENAI_STD)
    tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    return ClipBundle(_freeze(model, device), preprocess, tokenizer, "tiny-test", None, None, random_init=True,
                      info={"note": "random weights, for tests and smoke runs only"})


def random_clip(arch: str = "ViT-B/32", device: str | torch.device = "cpu") -> ClipBundle:
    """Full-size CLIP ``arch`` with RANDOM weights, for speed benchmarks only (never for accuracy)."""
    oc_name = open_clip_name(arch)
    bundle = _build(arch, oc_name, True, {})
    bundle.model, bundle.random_init = _freeze(bundle.model, device), True
    bundle.info = {"open_clip_name": oc_name, "note": "random weights, for benchmarks only"}
    return bundle


# -- text side ---------------------------------------------------------------------------------------------------------
def build_prompts(classnames: Sequence[str], templates: Sequence[Template]) -> list[str]:
    """``len(templates) * len(classnames)`` prompts, template-major; ``_`` in class names becomes a space."""
    names = [c.replace("_", " ") for c in classnames]
    return [t(c) if callable(t) else t.format(c) for t in templates for c in names]


@torch.no_grad()
def text_features(model: nn.Module, tokenizer: Callable, classnames: Sequence[str],
                  templates: Sequence[Template] = ("This is a photo of a {}",), device: str | torch.device = "cpu",
                  chunk: int = 512) -> torch.Tensor:
    """Unit-norm class embeddings ``(C, D)``: per template, normalised text features; averaged over the templates
    (a prompt ensemble) and renormalised.  Tokenises every prompt exactly once.

    Runs under ``no_grad`` (not ``inference_mode``) so the result can sit in a graph that trains prompts.
    """
    if not classnames or not templates:
        raise DL1Error("text_features needs at least one class name and one template")
    prompts = build_prompts(classnames, templates)
    tokens = tokenizer(prompts)  # (T*C, L)
    feats = []
    for start in range(0, len(prompts), chunk):
        f = model.encode_text(tokens[start:start + chunk].to(device))  # (n, D)
        feats.append(F.normalize(f.float(), dim=-1))
    per_prompt = torch.cat(feats).view(len(templates), len(classnames), -1)  # (T, C, D)
    return F.normalize(per_prompt.mean(dim=0), dim=-1)  # (C, D)


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor | float) -> torch.Tensor:
    """``exp(logit_scale) * cosine(image, text)``: ``(B, D), (C, D) -> (B, C)``; ``logit_scale`` is CLIP's learned
    log-temperature (``model.logit_scale``, exp = 100 for OpenAI's models).  Out of place, autograd-safe."""
    scale = logit_scale.exp() if isinstance(logit_scale, torch.Tensor) else torch.tensor(logit_scale).exp()
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    return scale.to(img.device, img.dtype) * img @ txt.t()


def encode_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``encode_image`` with float16 autocast on CUDA (float32 elsewhere); returns float32 ``(B, D)``."""
    on_cuda = images.device.type == "cuda"
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=on_cuda):
        return model.encode_image(images).float()


class ZeroshotCLIP(nn.Module):
    """Zero-shot classifier (the course's ``clipzs.ZeroshotCLIP``): text features computed once at construction,
    ``model_inference(images) -> logits (B, C)``."""

    def __init__(self, clip: ClipBundle, classnames: Sequence[str],
                 templates: Sequence[Template] = ("This is a photo of a {}",), device: str | torch.device = "cpu"):
        super().__init__()
        self.clip_model = clip.model
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.prompts = build_prompts(self.classnames, self.templates)
        features = self.precompute_text_features(clip.model, clip.tokenizer, self.classnames, self.templates, device)
        self.register_buffer("text_features", features, persistent=False)  # (C, D)
        self.logit_scale = clip.model.logit_scale.exp().detach()  # the temperature itself (= 100), as the course

    @staticmethod
    def precompute_text_features(clip_model: nn.Module, tokenizer: Callable, classnames: Sequence[str],
                                 templates: Sequence[Template], device: str | torch.device) -> torch.Tensor:
        """Normalised class text features ``(C, D)`` (a prompt ensemble when several templates are given)."""
        return text_features(clip_model, tokenizer, classnames, templates, device)

    def model_inference(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` preprocessed images -> logits ``(B, C)`` = 100 x cosine(image, class text)."""
        features = encode_images(self.clip_model, images)  # (B, D)
        return clip_logits(features, self.text_features, self.clip_model.logit_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model_inference(images)


# -- data ------------------------------------------------------------------------------------------------------------
def load_clip_dataset(name: str, split: str, preprocess: Callable, data_dir: str | Path | None = None,
                      test_noise: bool = False, noise_std: float = 0.1):
    """The torchvision dataset ``name``/``split`` with CLIP preprocessing (+ N(0, noise_std) noise after it)."""
    from torchvision import transforms

    from dl1.data.vision import AddGaussianNoise, get_dataset

    transform = preprocess
    if test_noise:
        steps = list(getattr(preprocess, "transforms", [preprocess]))
        transform = transforms.Compose([*steps, AddGaussianNoise(0.0, noise_std)])
    return get_dataset(name, split, data_dir=data_dir, transform=transform)


# -- preprocessing of whole batches (on the model's device) ------------------------------------------------------------
_PIL_BITS = 22  # Pillow's fixed-point precision for 8-bit resampling (PRECISION_BITS = 32 - 8 - 2)


def _pil_bicubic_weights(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's bicubic resampling (a = -0.5) of one axis as an ``(out, in)`` matrix of its fixed-point integer
    coefficients (``Resample.c``: ``precompute_coeffs`` + ``normalize_coeffs_8bpc``), stored in float64."""
    import math

    def bicubic(x: float, a: float = -0.5) -> float:
        x = abs(x)
        if x < 1.0:
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        if x < 2.0:
            return (((x - 5) * x + 8) * x - 4) * a
        return 0.0

    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        k = [bicubic((x + xmin - center + 0.5) / filterscale) for x in range(xmax - xmin)]
        total = sum(k)
        for x, w in enumerate(k):
            w = w / total if total != 0.0 else w
            weights[xx, xmin + x] = math.floor(0.5 + w * (1 << _PIL_BITS)) if w >= 0 else \
                math.ceil(-0.5 + w * (1 << _PIL_BITS))  # C's (int) truncates toward zero
    return weights


def _pil_resample(x: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """One Pillow 8-bit resampling pass along ``dim`` (-1: width, -2: height): integer sums with rounding bias,
    arithmetic shift, clip to [0, 255].  float64 holds these integers exactly (|sum| < 2^53)."""
    out = x @ weights.t() if dim == -1 else weights @ x
    return torch.floor((out + (1 << (_PIL_BITS - 1))) / (1 << _PIL_BITS)).clamp_(0, 255)


class BatchPreprocess(nn.Module):
    """CLIP's eval preprocessing (shortest-side bicubic ``Resize``, ``CenterCrop``, ``ToTensor``, ``Normalize``,
    optional N(0, noise_std) noise) applied to a uint8 batch ``(B, H, W, 3)`` on its own device, giving the same
    numbers as the PIL pipeline image by image (Pillow's fixed-point bicubic is reproduced exactly).

    It lets a GPU run preprocess CIFAR at GPU speed instead of in PIL worker processes.
    """

    def __init__(self, size: int, crop: int, mean: Sequence[float], std: Sequence[float],
                 noise_std: float | None = None):
        super().__init__()
        self.size, self.crop, self.noise_std = size, crop, noise_std
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._weights: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    @classmethod
    def from_preprocess(cls, preprocess: Any, noise_std: float | None = None) -> BatchPreprocess | None:
        """The batch twin of an open_clip eval ``Compose``; None if it is not the standard pipeline."""
        from torchvision import transforms as T

        steps = list(getattr(preprocess, "transforms", []))
        names = [type(s).__name__ for s in steps]
        if names != ["Resize", "CenterCrop", "MaybeConvertMode", "MaybeToTensor", "Normalize"] and \
                names != ["Resize", "CenterCrop", "ToTensor", "Normalize"]:
            return None
        resize, crop, normalize = steps[0], steps[1], steps[-1]
        size = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
        crop_size = crop.size if isinstance(crop.size, int) else crop.size[0]
        square_crop = isinstance(crop.size, int) or crop.size[0] == crop.size[1]
        if size is None or resize.max_size is not None or resize.interpolation != T.InterpolationMode.BICUBIC \
                or not square_crop or crop_size > size:
            return None
        return cls(size, crop_size, normalize.mean, normalize.std, noise_std)

    def _matrix(self, n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
        """The resampling matrix for one axis, built once per size and device (no per-batch copies)."""
        key = (n_in, n_out, device)
        if key not in self._weights:
            self._weights[key] = _pil_bicubic_weights(n_in, n_out).to(device)
        return self._weights[key]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> float32 ``(B, 3, crop, crop)``, CLIP-normalised."""
        x = images.permute(0, 3, 1, 2).to(torch.float64)  # (B, 3, H, W)
        h, w = x.shape[-2:]
        short, long = min(h, w), max(h, w)
        long_out = int(self.size * long / short)  # torchvision's rule for Resize(int)
        out_h, out_w = (self.size, long_out) if h <= w else (long_out, self.size)
        if (out_h, out_w) != (h, w):
            if out_w != w:  # Pillow resamples horizontally first, rounding to 8 bits in between
                x = _pil_resample(x, self._matrix(w, out_w, x.device), dim=-1)
            if out_h != h:
                x = _pil_resample(x, self._matrix(h, out_h, x.device), dim=-2)
        top, left = int(round((out_h - self.crop) / 2.0)), int(round((out_w - self.crop) / 2.0))
        x = x[..., top:top + self.crop, left:left + self.crop]  # (B, 3, crop, crop)
        x = x.to(torch.float32) / 255.0  # ToTensor
        x = (x - self.mean) / self.std  # Normalize
        if self.noise_std:
            x = x + torch.randn_like(x) * self.noise_std
        return x
