"""dl1's mini-CLIP format (``--arch mini``, trained by ``dl1 run mini-clip`` on Fashion-MNIST): a safetensors file
and, beside it, its model config (JSON).  Neither is trusted: the config may only hold known keys, each an integer in
its range, before any model is built from it, and it names the SHA-256 of the weights it belongs to (checked by the
loader on every use, :mod:`dl1.hub.clip.mini_store`).

torch-free: the flag checks (which CLIP ``--clip_weights`` means, its input size) read the JSON file only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dl1.errors import DL1Error, UsageError, first_line
from dl1.hub.clip.names import DEFAULT_ARCH, MINI_ARCH
from dl1.run.files import loads

MINI_WEIGHTS, MINI_CONFIG = "mini_clip.safetensors", "mini_clip.json"  # the two files of a mini-clip run folder
MINI_FORMAT = "dl1-mini-clip"  # the "format" of a mini-CLIP's model config file
MINI_RUNS = Path("runs") / "mini-clip"  # where --arch mini without --clip_weights looks (dl1 run mini-clip's default)
MINI_VISION_LIMITS = {"image_size": (8, 512), "patch_size": (1, 512), "width": (8, 2048), "layers": (1, 48),
                      "head_width": (1, 2048)}
MINI_TEXT_LIMITS = {"context_length": (2, 77), "vocab_size": (49408, 49408), "width": (8, 2048), "heads": (1, 64),
                    "layers": (1, 48)}
MINI_CONFIG_BYTES = 1 << 20  # a model config is a few hundred bytes; a bigger file is not one
SHA256 = re.compile(r"[0-9a-f]{64}")


def mini_config_file(weights: str | Path) -> Path:
    """The model config beside a mini-CLIP weights file: ``NAME.json`` for ``NAME.safetensors``, else the folder's
    ``mini_clip.json``."""
    path = Path(weights)
    twin = path.with_suffix(".json")
    return twin if twin.is_file() else path.parent / MINI_CONFIG


def read_json_file(path: Path, what: str = "mini-CLIP config") -> Any:
    """A small JSON file (at most :data:`MINI_CONFIG_BYTES`, read with dl1's limits on depth and number size);
    anything else is one line."""
    try:
        if path.stat().st_size > MINI_CONFIG_BYTES:
            raise DL1Error(f"{path} is not a {what} (over {MINI_CONFIG_BYTES} bytes)")
        data = path.read_bytes()
    except OSError as exc:
        raise DL1Error(f"cannot read the {what} {path}: {first_line(exc)}") from None
    try:
        return loads(data, path)
    except DL1Error as exc:
        raise DL1Error(f"cannot read the {what}: {exc}") from None


def is_mini_clip(weights: str | Path | None) -> bool:
    """Whether ``weights`` is a mini-CLIP weights file (a model config of dl1's mini format beside it)."""
    if weights is None or not Path(weights).is_file():
        return False
    config = mini_config_file(weights)
    if not config.is_file():
        return False
    try:
        data = read_json_file(config)
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


def _preprocess(prep: Any, path: Path) -> dict[str, list[float]]:
    if not isinstance(prep, dict) or not all(
            isinstance(prep.get(k), list) and len(prep[k]) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in prep[k])
            for k in ("mean", "std")) or not all(v > 0 for v in prep["std"]):
        raise DL1Error(f"{path}: preprocess.mean and preprocess.std must be 3 numbers in [0, 1] (std above 0)")
    return {"mean": [float(v) for v in prep["mean"]], "std": [float(v) for v in prep["std"]]}


def read_mini_config(weights: str | Path) -> dict[str, Any]:
    """The checked model config of the mini-CLIP whose weights are ``weights``: ``{"format", "model": open_clip's
    ``embed_dim``/``vision_cfg``/``text_cfg``/``quick_gelu``, "preprocess": {"mean", "std"}, "weights_sha256",
    ...}``.  A missing, foreign or out-of-range config is one line (:class:`DL1Error`); nothing is built from it
    before it passes."""
    path = mini_config_file(weights)
    if not path.is_file():
        raise DL1Error(f"{weights} is not a mini-CLIP: no model config {path.name} beside it (a mini-clip run folder "
                       f"holds {MINI_WEIGHTS} and {MINI_CONFIG})")
    data = read_json_file(path)
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
    quick = model.get("quick_gelu", False)
    if not isinstance(quick, bool):
        raise DL1Error(f"{path}: model.quick_gelu must be true or false")
    digest = data.get("weights_sha256")
    if digest is not None and not (isinstance(digest, str) and SHA256.fullmatch(digest)):
        raise DL1Error(f"{path}: weights_sha256 must be 64 lower-case hex digits")
    out = dict(data)
    out["model"] = {"embed_dim": embed, "vision_cfg": vision, "text_cfg": text, "quick_gelu": quick}
    out["preprocess"] = _preprocess(data.get("preprocess"), path)
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
