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

dl1's **mini-CLIP** (``--arch mini``, trained by ``dl1 run mini-clip`` on Fashion-MNIST) is a safetensors file with
its model config (JSON) beside it, in the run folder: ``--clip_weights RUN`` (the folder) or
``RUN/mini_clip.safetensors`` selects it; the config is checked (known keys, integers in range) before a model is built
from it, and a TorchScript archive is never read as one.

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
MINI_ARCH = "mini"  # dl1's mini-CLIP, trained by `dl1 run mini-clip`; its model config is JSON beside the weights
MINI_WEIGHTS, MINI_CONFIG = "mini_clip.safetensors", "mini_clip.json"  # the two files of a mini-clip run folder
MINI_FORMAT = "dl1-mini-clip"  # the "format" of a mini-CLIP's model config file
MINI_RUNS = Path("runs") / "mini-clip"  # where --arch mini without --clip_weights looks (dl1 run mini-clip's default)
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
                     saved["injection_layer"], saved.get("clip_weights"))
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

    Keys of ``saved`` that are no flag any more (an older run's ``amp``) are ignored, with a note on stderr.

    Returns ``(config, transfer)``: ``transfer`` is ``{}`` or ``{"trained_on": {...}, "evaluated_on": {...}}``."""
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(cfg)})
    if unknown:
        print(f"note: {path}: ignoring {', '.join(unknown)} of its training config (no such flag now)",
              file=sys.stderr, flush=True)
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
    """The CLIP named by ``--arch``: pretrained weights (:func:`load_clip`), dl1's mini-CLIP (``mini``: the weights
    of a mini-clip run, :func:`load_mini_clip`), or the tiny RANDOM test model when asked for by its name
    ``tiny-test`` (``image_size`` px input; labelled so in every summary)."""
    from dl1.models.clip import tiny_clip

    if arch == MINI_ARCH:
        return load_mini_clip(weights if weights is not None else newest_mini_clip(), device)
    if arch == TINY_ARCH:
        return tiny_clip(device=device) if image_size is None else tiny_clip(image_size=image_size, device=device)
    return load_clip(arch, pretrained=pretrained, weights=weights, device=device)


# -- dl1's mini-CLIP (dl1 run mini-clip) ------------------------------------------------------------------------------
# A mini-CLIP is two files: the weights (safetensors) and, beside them, its model config (JSON).  Neither is trusted:
# the config may only hold these keys, each an integer in its range, before any model is built from it.
MINI_VISION_LIMITS = {"image_size": (8, 512), "patch_size": (1, 512), "width": (8, 2048), "layers": (1, 48),
                      "head_width": (1, 2048)}
MINI_TEXT_LIMITS = {"context_length": (2, 77), "vocab_size": (49408, 49408), "width": (8, 2048), "heads": (1, 64),
                    "layers": (1, 48)}
MINI_CONFIG_BYTES = 1 << 20  # a model config is a few hundred bytes; a bigger file is not one


def mini_config_file(weights: str | Path) -> Path:
    """The model config beside a mini-CLIP weights file: ``NAME.json`` for ``NAME.safetensors``, else the folder's
    ``mini_clip.json``."""
    path = Path(weights)
    twin = path.with_suffix(".json")
    return twin if twin.is_file() else path.parent / MINI_CONFIG


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > MINI_CONFIG_BYTES:
            raise DL1Error(f"{path} is not a mini-CLIP config (over {MINI_CONFIG_BYTES} bytes)")
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DL1Error(f"cannot read the mini-CLIP config {path}: {first_line(exc)}") from None


def is_mini_clip(weights: str | Path | None) -> bool:
    """Whether ``weights`` is a mini-CLIP weights file (a model config of dl1's mini format beside it)."""
    if weights is None or not Path(weights).is_file():
        return False
    config = mini_config_file(weights)
    if not config.is_file():
        return False
    try:
        data = _read_json(config)
    except DL1Error:
        return False
    return isinstance(data, dict) and data.get("format") == MINI_FORMAT


def _ints(section: Any, limits: dict[str, tuple[int, int]], where: str) -> dict[str, int]:
    if not isinstance(section, dict) or set(section) != set(limits):
        keys = sorted(section) if isinstance(section, dict) else type(section).__name__
        raise DL1Error(f"{where} must hold exactly {', '.join(limits)} (found {keys})")
    for key, (low, high) in limits.items():
        v = section[key]
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise DL1Error(f"{where}.{key} is {v!r}; a mini-CLIP has an integer in [{low}, {high}]")
    return dict(section)


def read_mini_config(weights: str | Path) -> dict[str, Any]:
    """The checked model config of the mini-CLIP whose weights are ``weights``: ``{"format", "model": open_clip's
    ``embed_dim``/``vision_cfg``/``text_cfg``/``quick_gelu``, "preprocess": {"mean", "std"}, ...}``.  A missing,
    foreign or out-of-range config is one line (:class:`DL1Error`); nothing is built from it before it passes."""
    path = mini_config_file(weights)
    if not path.is_file():
        raise DL1Error(f"{weights} is not a mini-CLIP: no model config {path.name} beside it (a mini-clip run folder "
                       f"holds {MINI_WEIGHTS} and {MINI_CONFIG})")
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("format") != MINI_FORMAT:
        raise DL1Error(f"{path} is not a mini-CLIP config (no \"format\": \"{MINI_FORMAT}\")")
    model = data.get("model")
    if not isinstance(model, dict):
        raise DL1Error(f"{path}: no \"model\" section")
    vision = _ints(model.get("vision_cfg"), MINI_VISION_LIMITS, f"{path}: model.vision_cfg")
    text = _ints(model.get("text_cfg"), MINI_TEXT_LIMITS, f"{path}: model.text_cfg")
    embed = model.get("embed_dim")
    if not isinstance(embed, int) or isinstance(embed, bool) or not 1 <= embed <= 2048:
        raise DL1Error(f"{path}: model.embed_dim is {embed!r}; a mini-CLIP has an integer in [1, 2048]")
    if vision["image_size"] % vision["patch_size"] or vision["width"] % vision["head_width"] \
            or text["width"] % text["heads"]:
        raise DL1Error(f"{path}: the patch size must divide the image size and the heads the widths")
    prep = data.get("preprocess")
    if not isinstance(prep, dict) or not all(
            isinstance(prep.get(k), list) and len(prep[k]) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in prep[k])
            for k in ("mean", "std")) or not all(v > 0 for v in prep["std"]):
        raise DL1Error(f"{path}: preprocess.mean and preprocess.std must be 3 numbers in [0, 1] (std above 0)")
    quick = model.get("quick_gelu", False)
    if not isinstance(quick, bool):
        raise DL1Error(f"{path}: model.quick_gelu must be true or false")
    out = dict(data)
    out["model"] = {"embed_dim": embed, "vision_cfg": vision, "text_cfg": text, "quick_gelu": quick}
    out["preprocess"] = {"mean": [float(v) for v in prep["mean"]], "std": [float(v) for v in prep["std"]]}
    return out


def newest_mini_clip(root: str | Path = MINI_RUNS) -> str:
    """The weights of the newest mini-clip run under ``root`` (``--arch mini`` without ``--clip_weights``)."""
    found = [p for p in Path(root).glob(f"*/{MINI_WEIGHTS}") if (p.parent / MINI_CONFIG).is_file()]
    if not found:
        raise DL1Error(f"--arch {MINI_ARCH}: no trained mini-CLIP under {root}/; train one with `dl1 run mini-clip` "
                       f"or pass --clip_weights RUN (a mini-clip run folder)")
    return str(max(found, key=lambda p: p.stat().st_mtime))


def clip_choice(arch: str, weights: str | None) -> tuple[str, str | None]:
    """``(--arch, --clip_weights)`` as a CLIP experiment uses them: a mini-clip run folder given as weights becomes
    its weights file; a mini-CLIP file makes the architecture ``mini`` (when ``--arch`` is the default); ``--arch
    mini`` without weights takes the newest mini-clip run under ``runs/mini-clip/``.  Contradictions are one line."""
    if weights is not None and Path(weights).is_dir():
        inside = Path(weights) / MINI_WEIGHTS
        if not inside.is_file():
            raise DL1Error(f"--clip_weights {weights} is a folder without {MINI_WEIGHTS}: give a weights file or a "
                           f"mini-clip run folder")
        weights = str(inside)
    if is_mini_clip(weights):
        if arch not in (MINI_ARCH, DEFAULT_ARCH):
            raise UsageError(f"--clip_weights {weights} is a mini-CLIP; it needs --arch {MINI_ARCH}, not --arch {arch}")
        return MINI_ARCH, weights
    if arch == MINI_ARCH:
        if weights is None:
            return MINI_ARCH, newest_mini_clip()
        if Path(weights).is_file():
            read_mini_config(weights)  # says what is missing
    return arch, weights


def input_size(arch: str, weights: str | Path | None = None) -> int:
    """The input size (px) of ``arch``'s image tower (the tiny test model: 224 unless asked otherwise)."""
    return vision_limits(arch, None, weights)[0]


def load_mini_clip(weights: str | Path, device: str | torch.device = "cpu") -> ClipBundle:
    """The mini-CLIP of ``weights`` (safetensors, or a state dict read with ``weights_only=True``; never a
    TorchScript archive) built from the checked config beside it: frozen, eval mode, float32, on ``device``."""
    from dl1.models.clip import build_mini_clip, freeze

    config = read_mini_config(weights)
    if is_torchscript(weights):
        raise DL1Error(f"{weights}: a mini-CLIP is a safetensors file, not a TorchScript archive")
    state, kind = read_weights(weights)
    prep = config["preprocess"]
    bundle = build_mini_clip(config["model"], prep["mean"], prep["std"])
    fit_state(bundle.model, state, str(weights), MINI_ARCH)
    bundle.model = freeze(bundle.model, device)
    bundle.weights = str(weights)
    vision = config["model"]["vision_cfg"]
    bundle.info = {"weights_format": kind, "mini_clip": {
        "image_size": vision["image_size"], "patch_size": vision["patch_size"], "width": vision["width"],
        "layers": vision["layers"], "trained_on": config.get("trained_on")}}
    return bundle


def save_mini_clip(model: nn.Module, config: dict[str, Any], folder: str | Path) -> Path:
    """Write ``folder/mini_clip.safetensors`` and, beside it, ``mini_clip.json`` (``config`` plus the format
    marker), each atomically, the config last: a folder with the config holds complete weights.  Returns the
    weights file."""
    from safetensors.torch import save

    from dl1.runtime import write_atomic, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path = write_atomic(folder / MINI_WEIGHTS, lambda fh: fh.write(save(state)))
    write_json(folder / MINI_CONFIG, {"format": MINI_FORMAT, "version": 1, **config})
    read_mini_config(path)  # what was written reads back
    return path


def mini_cache_entry(cache_dir: str | Path, settings: dict[str, Any]) -> Path:
    """The folder of ``cache_dir`` that holds the mini-CLIP trained with ``settings`` (named by their hash)."""
    import hashlib

    key = hashlib.sha256(json.dumps({"format": MINI_FORMAT, **settings}, sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / f"mini-clip-{key[:16]}"


def cached_mini_clip(cache_dir: str | Path, settings: dict[str, Any], run_dir: str | Path) -> Path | None:
    """The cached mini-CLIP trained with exactly ``settings``, copied into ``run_dir`` (weights, then config); None
    when the cache has none.  A cached config that does not read, or whose settings differ, is not used."""
    import shutil

    entry = mini_cache_entry(cache_dir, settings)
    weights = entry / MINI_WEIGHTS
    if not (weights.is_file() and (entry / MINI_CONFIG).is_file()):
        return None
    try:
        stored = read_mini_config(weights).get("trained_on", {}).get("settings")
    except DL1Error:
        return None
    if stored != json.loads(json.dumps(settings)):
        return None
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, run_dir / MINI_WEIGHTS)
    shutil.copyfile(entry / MINI_CONFIG, run_dir / MINI_CONFIG)
    return run_dir / MINI_WEIGHTS


def store_mini_clip(cache_dir: str | Path, settings: dict[str, Any], run_dir: str | Path) -> Path:
    """Copy the mini-CLIP of ``run_dir`` into the cache entry of ``settings`` (a complete folder appears at once:
    written beside it, then renamed); returns the entry."""
    import shutil
    import uuid

    entry = mini_cache_entry(cache_dir, settings)
    tmp = entry.with_name(f".{entry.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.mkdir(parents=True)
        for name in (MINI_WEIGHTS, MINI_CONFIG):
            shutil.copyfile(Path(run_dir) / name, tmp / name)
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DL1Error(f"cannot write the mini-CLIP cache {entry}: {first_line(exc)}") from None
    return entry
