"""Checkpoints: atomic writes (temp file + rename) and safe loads (``weights_only=True``).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that ``torch.load(weights_only=True)``
accepts it and can never run code.  Random-number-generator states are stored as tensors and lists.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dl1.errors import DL1Error, first_line
from dl1.run.files import write_atomic


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a crash mid-write never leaves a corrupt checkpoint, and a failed write
    (a full disk) removes its temporary file, keeps the previous checkpoint and raises one-line :class:`DL1Error`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda fh: torch.save(state, fh))
    except (OSError, RuntimeError) as exc:  # torch reports a failed write of its zip archive as a RuntimeError
        raise DL1Error(f"cannot write checkpoint {path} (the previous one is kept): {first_line(exc)}") from None
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (never executes code from the file: anything but
    tensors, numbers, strings and plain containers is refused with one line).  ``mmap=True`` maps the tensors
    instead of reading them (a cheap check that the file is whole and safe)."""
    path = Path(path)
    if not path.is_file():
        raise DL1Error(f"checkpoint not found: {path}")
    try:
        return torch_load(path, map_location=map_location, mmap=mmap)
    except Exception as exc:  # corrupt/truncated/foreign file
        raise DL1Error(f"cannot read checkpoint {path}: {type(exc).__name__}: {first_line(exc)}") from None


def torch_load(path: str | Path, **kwargs: Any) -> Any:
    """``torch.load(path, weights_only=True, **kwargs)``, quietly: torch warns (a ``UserWarning``) that a TorchScript
    archive is dispatched to ``torch.jit.load`` before ``weights_only=True`` refuses it, so the warning would only
    precede the caller's one-line refusal; the refusal then says what the file is."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive", category=UserWarning)
        try:
            return torch.load(path, weights_only=True, **kwargs)
        except RuntimeError as exc:
            if "TorchScript" not in str(exc):
                raise
    raise RuntimeError("it is a TorchScript archive (a program, not tensors): refused, loading it could run code")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a ``weights_only``-safe form."""
    np_state = np.random.get_state()
    state = {
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    keys, version, gauss = state["python"]
    random.setstate((version, tuple(int(k) for k in keys), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
