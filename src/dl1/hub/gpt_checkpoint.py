"""dl1's own GPT checkpoints (``dl1 run gpt``), read once and checked before a model is built from them.

A checkpoint holds the model weights, its configuration and the character tokenizer (``dl1 generate`` needs no
corpus), plus the engine's resume state (optimiser, scheduler, RNG) and the training-loss window.  It is read with
``torch.load(weights_only=True)`` (tensors and plain containers only: nothing in the file can run), and what it stores
is checked before the model is built: every size a whole number, a tokenizer as long as the vocabulary, weights of the
shapes the configuration gives, all finite.  A resume passes the one :class:`GPTCheckpoint` read here on to the
engine (``Trainer.fit(resume=..., resume_state=checkpoint.state)``): the file is read once.

This reader sits in ``hub/`` (the package's one place that reads weight files) rather than beside the model in
``models/``, which does no file IO; it builds the model with :class:`dl1.models.gpt.GPT` on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dl1.data.text import CharTokenizer
from dl1.errors import DL1Error, first_line
from dl1.models.gpt import GPT
from dl1.models.gpt_config import GPTConfig
from dl1.train.checkpoint import load_checkpoint


@dataclass
class GPTCheckpoint:
    """What a ``dl1 run gpt`` checkpoint holds, checked: its model config (resolved), tokenizer and weights; ``state``
    is the whole checkpoint (the engine's resume state)."""

    path: Path
    config: GPTConfig
    tokenizer: CharTokenizer
    weights: dict[str, Any]
    extra: dict[str, Any]
    state: dict[str, Any]


def read_gpt_checkpoint(path: str | Path, device: Any = "cpu", mmap: bool = False,
                        state: Any = None) -> GPTCheckpoint:
    """Read and check a checkpoint written by ``dl1 run gpt``; anything unusable is one-line :class:`DL1Error`.
    ``state``: the file's contents when the caller has read it already (then it is only checked, not read again)."""
    path = Path(path)
    if state is None:
        state = load_checkpoint(path, map_location=device, mmap=mmap)
    extra = state.get("extra") if isinstance(state, dict) else None
    modules = state.get("modules") if isinstance(state, dict) else None
    if not isinstance(extra, dict) or "model_config" not in extra or "tokenizer" not in extra \
            or not isinstance(modules, dict) or not isinstance(modules.get("model"), dict):
        raise DL1Error(f"{path} is not a GPT checkpoint of 'dl1 run gpt' (no model config or tokenizer inside)")
    try:
        config = GPTConfig.from_dict(extra["model_config"]).resolved()
    except (TypeError, ValueError) as exc:
        raise DL1Error(f"{path}: the stored model config is not usable ({first_line(exc)})") from None
    try:
        tokenizer = CharTokenizer.from_state_dict(extra["tokenizer"])
    except DL1Error as exc:
        raise DL1Error(f"{path}: {exc}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise DL1Error(f"{path}: the stored tokenizer has {tokenizer.vocab_size} characters but the model's "
                       f"vocabulary is {config.vocab_size}")
    check_window(path, extra.get("train_window"))
    check_weights(path, config, modules["model"])
    return GPTCheckpoint(path, config, tokenizer, modules["model"], extra, state)


def check_window(path: Path, window: Any) -> None:
    """The training-loss window of ``dl1 run gpt`` (None: not stored) is a 0-d sum and a count."""
    if window is not None and not (isinstance(window, dict) and isinstance(window.get("sum"), torch.Tensor)
                                   and window["sum"].shape == () and type(window.get("count")) is int
                                   and window["count"] >= 0):
        raise DL1Error(f"{path}: the stored training-loss window is not a sum and a count")


def check_weights(path: Path, config: GPTConfig, weights: dict[str, Any]) -> None:
    """The weights are the tensors the config gives (names and shapes from a model on the meta device: nothing is
    allocated), all finite."""
    layers = {k.split(".")[2] for k in weights if isinstance(k, str) and k.startswith("transformer.h.")}
    if len(layers) != config.n_layer:  # before a model of that many layers is built, even on the meta device
        raise DL1Error(f"{path}: the weights hold {len(layers)} layers but the stored model config says "
                       f"{config.n_layer:,}")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    if set(weights) != set(expected):
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise DL1Error(f"{path}: the weights do not match the stored model config (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]})")
    for name, shape in expected.items():
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tuple(tensor.shape) != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise DL1Error(f"{path}: weight {name} is {got} but the stored model config (vocabulary "
                           f"{config.vocab_size:,}, width {config.n_embd}) gives {shape}")
        if not bool(torch.isfinite(tensor).all()):
            raise DL1Error(f"{path}: weight {name} holds NaN or infinite values")


def build_model(checkpoint: GPTCheckpoint) -> GPT:
    """The GPT of a checked checkpoint, its weights used in place (built on the meta device: nothing allocated
    twice)."""
    with torch.device("meta"):
        model = GPT(checkpoint.config)
    model.load_state_dict({k: v.float() for k, v in checkpoint.weights.items()}, assign=True)
    return model
