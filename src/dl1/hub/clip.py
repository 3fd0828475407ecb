"""CLIP weights and architecture facts: names, open_clip's model configs, weight files (local, cached, downloaded)
and the prompt checkpoints of ``dl1 run clip-prompt``.

``load_clip`` returns a :class:`~dl1.models.clip.ClipBundle` (frozen float32 model in eval mode, its preprocessing
and its BPE tokenizer).  The weights come from ``--clip_weights PATH``, else from open_clip's caches (the Hugging Face
hub cache, then ``~/.cache/clip``; safetensors files first), else from a download by open_clip.  Offline with nothing
cached, it fails at once with one line saying what to download and where to put it: a loaded model is never silently
random.

What a weights file may be, in the order dl1 prefers them (:func:`read_weights` tells them apart by their contents):

1. **safetensors**: tensors only, nothing in the file can run;
2. **a state dict** written by ``torch.save`` (open_clip checkpoints, ``{'state_dict': ...}``, ``module.`` prefixes):
   read with ``torch.load(weights_only=True)``, which admits tensors and plain containers only; a pickle that asks for
   anything else is refused with one line;
3. **an OpenAI TorchScript archive** (the original ``ViT-B-32.pt``): a zip holding ``code/`` and ``constants.pkl``.
   Loading one *executes the TorchScript code it holds* (only its parameters are kept afterwards), so it is loaded
   only when the file is one, and only from a source you trust; prefer the safetensors file of the same weights.

torch and open_clip are imported inside the functions: names, ``--help`` and the prompt checks before a run need
neither (``import open_clip`` alone costs seconds).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import json
import os
import sys
import types
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dl1.errors import DL1Error, UsageError, first_line
from dl1.hub import online
from dl1.models.clip_templates import COURSE_TEMPLATE

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dl1.models.clip import ClipBundle

TINY_ARCH = "tiny-test"  # dl1.models.clip.tiny_clip: a tiny RANDOM CLIP for smoke runs and tests, never a fallback
TINY_BLOCKS, TINY_PATCH = 2, 16  # tiny_clip's image tower: 2 residual blocks, 16 px patches
MAX_IMAGE_SIZE = 1024  # the largest CLIP input size a flag may ask for (open_clip's models go up to 512 px)
MAX_PROMPT_TOKENS = 256  # the most deep prompt tokens a flag may ask for (the course uses 4)

# The course's architecture names (OpenAI ``clip.available_models()``) -> open_clip config names.
COURSE_ARCHS = {
    "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336",
}
WEIGHTS_HELP = ("Local CLIP weights file. Preferred: a .safetensors file or a state dict (.pt/.bin, read with "
                "torch.load(weights_only=True): tensors only, a file holding anything else is refused). Also accepted: "
                "an OpenAI TorchScript archive (the original ViT-B-32.pt); loading one EXECUTES the TorchScript code "
                "inside it, so use only archives from a source you trust.")


# -- architecture names and configs -----------------------------------------------------------------------------------
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


def vision_limits(arch: str, image_size: int) -> tuple[int, int | None]:
    """``(input size, residual blocks)`` of an architecture's image tower; blocks is None when the tower is not one
    of open_clip's own ViTs (a ResNet, a timm model), which deep prompts cannot use.  The tiny test model takes
    ``image_size`` as its input size."""
    if arch == TINY_ARCH:
        return image_size, TINY_BLOCKS
    vision = vision_config(arch)
    size = vision.get("image_size", 224)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    layers = vision.get("layers")
    is_vit = isinstance(layers, int) and not vision.get("timm_model_name") and vision.get("patch_size")
    return size, (layers if is_vit else None)


def check_prompt(arch: str, image_size: int, prompt_type: str, method: str, prompt_size: int,
                 injection_layer: int) -> None:
    """Does this prompt fit CLIP ``arch``?  Known from the architecture's name and config file alone (no model is
    built, open_clip is not imported): the input size, the prompt's pixel limits, the deep prompt's block index.
    A prompt that does not fit is a one-line :class:`UsageError`."""
    size, blocks = vision_limits(arch, image_size)
    if arch == TINY_ARCH and not TINY_PATCH <= image_size <= MAX_IMAGE_SIZE:
        raise UsageError(f"--image_size {image_size}: the {TINY_ARCH} model takes {TINY_PATCH} to {MAX_IMAGE_SIZE} px")
    if image_size != size:
        raise UsageError(f"--image_size {image_size} does not match CLIP {arch}'s input size {size}")
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


# -- prompt checkpoints -----------------------------------------------------------------------------------------------
# The prompt's structure as clip-prompt saves it in its checkpoints: allowed values (a tuple) or type and minimum.
PROMPT_FIELDS: dict[str, tuple[str, ...] | tuple[type, int | None]] = {
    "prompt_type": ("visual_prompt", "deep_prompt"), "method": ("padding", "fixed_patch", "random_patch"),
    "prompt_size": (int, 1), "image_size": (int, 1), "prompt_init_method": ("random", "zeros"),
    "prompt_num": (int, 1), "injection_layer": (int, 0), "arch": (str, None), "pretrained": (str, None),
    "seed": (int, 0),
}


def _check_saved(path: Path, saved: dict[str, Any]) -> None:
    """The prompt structure stored in a checkpoint, checked like the flags it came from; else one line."""
    for key, rule in PROMPT_FIELDS.items():
        if key not in saved:
            raise DL1Error(f"{path} is not a clip-prompt checkpoint: its config has no {key!r}")
        value = saved[key]
        if isinstance(rule[0], str):
            ok = value in rule
        else:
            kind, low = rule
            ok = isinstance(value, kind) and not isinstance(value, bool) and (low is None or value >= low)
        if not ok:
            raise DL1Error(f"{path}: its stored config has {key}={value!r}, which no clip-prompt run can have")
    if saved["prompt_num"] > MAX_PROMPT_TOKENS:
        raise DL1Error(f"{path}: its stored config has prompt_num={saved['prompt_num']} (at most {MAX_PROMPT_TOKENS})")
    try:
        check_prompt(saved["arch"], saved["image_size"], saved["prompt_type"], saved["method"], saved["prompt_size"],
                     saved["injection_layer"])
    except DL1Error as exc:
        raise DL1Error(f"{path}: its stored prompt does not fit: {exc}") from None


def read_prompt_checkpoint(path: str | Path, device: Any = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(prompt state dict, training config)`` of a clip-prompt checkpoint (read with ``weights_only=True``); a file
    that is not one, or whose stored prompt structure is nonsense, is a one-line :class:`DL1Error`."""
    from dl1.train import load_checkpoint

    path = Path(path)
    state = load_checkpoint(path, map_location=device)
    prompt = state.get("modules", {}).get("prompt") if isinstance(state, dict) else None
    saved = state.get("extra", {}).get("config") if isinstance(state, dict) else None
    if not isinstance(prompt, dict) or not isinstance(saved, dict):
        raise DL1Error(f"{path} is not a clip-prompt checkpoint (no prompt weights or config in it)")
    _check_saved(path, saved)
    return prompt, saved


def check_resume(cfg: Any, path: Path, device: Any = "cpu") -> None:
    """Resuming training from checkpoint ``path`` needs the prompt, CLIP and data it was trained with: name any
    difference from ``cfg`` (a clip-prompt config)."""
    _, saved = read_prompt_checkpoint(path, device)
    differ = [f"--{k} {saved[k]} (now {getattr(cfg, k)})" for k in (*PROMPT_FIELDS, *DATA_FIELDS)
              if k in saved and saved[k] != getattr(cfg, k)]
    if differ:
        raise DL1Error(f"cannot resume from {path}: it was trained with {', '.join(differ)}")


# What a prompt was trained on besides its structure: the data and the text classifier.  A training run without these
# flags uses the values here (CIFAR-10 with synthetic data, the smoke size); an evaluation takes the checkpoint's.
DATA_FIELDS = {"dataset": "cifar100", "synthetic_data": False, "text_prompt_template": COURSE_TEMPLATE}
TRANSFERABLE = ("dataset", "text_prompt_template")  # what --transfer may change on purpose


def _flag(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"--{key}" if value else f"--no-{key}"
    return f"--{key} {value!r}" if key == "text_prompt_template" else f"--{key} {value}"


def checkpoint_config(cfg: Any, saved: dict[str, Any], path: str | Path = "the checkpoint") -> tuple[Any, dict]:
    """``cfg`` (a clip-prompt ``--evaluate`` config) completed from the checkpoint's training config ``saved``:

    * the prompt's structure (type, shape, CLIP architecture, seed) always (a differing flag is replaced, with a
      note), and the weights file unless ``--clip_weights`` is given;
    * the data (dataset, synthetic or real files, text template) and ``--data_dir`` where the flag is not given.  A
      given flag that contradicts the checkpoint is a one-line :class:`UsageError`, unless ``cfg.transfer`` asks for a
      deliberate transfer (another dataset or text template only).

    Returns ``(config, transfer)``: ``transfer`` is ``{}`` or ``{"trained_on": {...}, "evaluated_on": {...}}``."""
    changes = {k: saved[k] for k in PROMPT_FIELDS}
    differ = [f"--{k} {v}" for k, v in changes.items() if getattr(cfg, k) != v]
    if cfg.clip_weights is None and saved.get("clip_weights"):
        changes["clip_weights"] = saved["clip_weights"]
    if cfg.data_dir is None and saved.get("data_dir"):
        changes["data_dir"] = saved["data_dir"]
    trained = {k: saved.get(k, default) for k, default in DATA_FIELDS.items()}
    given = {k: getattr(cfg, k) for k in DATA_FIELDS if getattr(cfg, k) is not None}
    contradict = {k: v for k, v in given.items() if v != trained[k]}
    for key, value in contradict.items():
        if not (cfg.transfer and key in TRANSFERABLE):
            why = " (--smoke sets it)" if key == "synthetic_data" and value else ""
            hint = (f"add --transfer to score the prompt on {_flag(key, value)[2:]} on purpose" if key in TRANSFERABLE
                    else "evaluate it on the data it was trained on")
            raise UsageError(f"{_flag(key, value)}{why} contradicts {path}, trained with {_flag(key, trained[key])}: "
                             f"drop the flag, or {hint}")
    if cfg.transfer and not contradict:
        now = ", ".join(_flag(k, trained[k]) for k in TRANSFERABLE)
        raise UsageError(f"--transfer needs --dataset or --text_prompt_template other than the checkpoint's ({now})")
    changes.update({k: given.get(k, trained[k]) for k in DATA_FIELDS})
    if differ:
        print(f"[clip-prompt] from the checkpoint: {' '.join(differ)}", flush=True)
    transfer = {}
    if contradict:
        transfer = {"trained_on": {k: trained[k] for k in contradict}, "evaluated_on": contradict}
        print(f"[clip-prompt] transfer: trained with {' '.join(_flag(k, trained[k]) for k in contradict)}, "
              f"evaluated with {' '.join(_flag(k, v) for k, v in contradict.items())}", flush=True)
    return dataclasses.replace(cfg, **changes), transfer


# -- open_clip's table of weight tags ---------------------------------------------------------------------------------
def _pretrained_meta():
    """open_clip's ``pretrained`` module (its table of weight tags) without running ``import open_clip`` (slow)."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"].pretrained
    name = "_dl1_open_clip_meta"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(open_clip_dir())]
        sys.modules[name] = pkg
    try:
        return importlib.import_module(f"{name}.pretrained")
    except Exception:  # pragma: no cover - a future open_clip layout: fall back to the real import
        import open_clip

        return open_clip.pretrained


def pretrained_cfg(oc_name: str, tag: str) -> dict[str, Any]:
    """open_clip's entry for weights ``tag`` of ``oc_name`` (URL, hub repo, preprocessing); none -> DL1Error."""
    meta = _pretrained_meta()
    cfg = meta.get_pretrained_cfg(oc_name, tag)
    if not cfg:
        tags = meta.list_pretrained_tags_by_model(oc_name)
        have = f"available tags: {', '.join(tags)}" if tags else "no pretrained weights are known for it"
        raise DL1Error(f"no {tag!r} weights for CLIP {oc_name}; {have} (or pass --clip_weights PATH)")
    return cfg


def cached_file(cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The local copy of a tag's weights in open_clip's caches (HF hub cache with its safetensors file first, then
    ``~/.cache/clip``), if any."""
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


def _download_hint(cfg: dict[str, Any]) -> str:
    """Where to get a tag's weights by hand: the safetensors file on the hub first, the OpenAI archive second."""
    hub, url = cfg.get("hf_hub", "").rstrip("/"), cfg.get("url", "")
    where = []
    if hub:
        meta = _pretrained_meta()
        safe = next(iter(meta._get_safe_alternatives(meta.HF_WEIGHTS_NAME)), meta.HF_WEIGHTS_NAME)
        where.append(f"https://huggingface.co/{hub}/resolve/main/{safe}")
    if url:
        where.append(f"{url} (TorchScript: loading it runs its code)" if hub else url)
    return " or ".join(where) or "the weights file"


# -- weight files -----------------------------------------------------------------------------------------------------
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
    import torch

    path = Path(path)
    if not path.is_file():
        raise DL1Error(f"CLIP weights file not found: {path}")
    try:
        with warnings.catch_warnings():  # torch's loaders warn about formats and protocols: the result says enough
            warnings.simplefilter("ignore")
            if path.suffix == ".safetensors" or is_safetensors(path):
                from safetensors.torch import load_file

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


# -- loaders ----------------------------------------------------------------------------------------------------------
def load_clip(arch: str = "ViT-B/32", pretrained: str = "openai", weights: str | Path | None = None,
              device: str | torch.device = "cpu", cache_dir: str | None = None) -> ClipBundle:
    """CLIP ``arch`` with pretrained weights: from ``weights`` (a local file) if given, else open_clip's tag
    ``pretrained`` (cache first, then a download).  Frozen, eval mode, float32, on ``device``."""
    from dl1.models.clip import build_clip, freeze

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
    from dl1.models.clip import ClipBundle, freeze

    where = _download_hint(cfg)
    if not online("huggingface.co"):
        local = Path(cache_dir or "~/.cache/clip").expanduser() / os.path.basename(cfg.get("url", "") or "model.pt")
        raise DL1Error(f"CLIP {arch} {tag!r} weights are not cached and the network is unavailable: download "
                       f"{where} and pass --clip_weights PATH (or put the OpenAI file at {local})")
    import open_clip

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
    from dl1.models.clip import build_clip, freeze

    oc_name = open_clip_name(arch)
    bundle = build_clip(arch, oc_name, True, {})
    bundle.model, bundle.random_init = freeze(bundle.model, device), True
    bundle.info = {"open_clip_name": oc_name, "note": "random weights, for benchmarks only"}
    return bundle


def get_clip(arch: str, *, pretrained: str = "openai", weights: str | None = None, image_size: int | None = None,
             device: str | torch.device = "cpu") -> ClipBundle:
    """The CLIP named by ``--arch``: pretrained weights (:func:`load_clip`), or the tiny RANDOM test model when
    asked for by its name ``tiny-test`` (``image_size`` px input; labelled so in every summary)."""
    from dl1.models.clip import tiny_clip

    if arch == TINY_ARCH:
        return tiny_clip(device=device) if image_size is None else tiny_clip(image_size=image_size, device=device)
    return load_clip(arch, pretrained=pretrained, weights=weights, device=device)
