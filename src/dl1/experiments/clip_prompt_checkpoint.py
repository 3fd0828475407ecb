"""The checkpoints of ``dl1 run clip-prompt``: the prompt structure they store (checked like the flags it came from),
the resume check, and the ``--evaluate`` config completed from a checkpoint (printing ``[clip-prompt]`` notes).

torch-free at import (the Config of clip-prompt and clip-cross-dataset uses the field tables); reading a checkpoint
imports torch.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from dl1.errors import DL1Error, UsageError
from dl1.hub.clip.limits import check_prompt
from dl1.hub.clip.names import MAX_PROMPT_TOKENS
from dl1.models.clip_templates import COURSE_TEMPLATE

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
