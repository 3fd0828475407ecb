"""Seeding, device choice and memory probing.

:func:`choose_device` returns the device and keeps nothing: whoever chooses it tells the run
(``device = run.device = choose_device(cfg.device)``), and ``env.json`` records what the run was told.  torch is
imported inside the functions that need it: experiments import this module at their top, and ``dl1 run NAME --help``
must stay free of torch.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

import numpy as np

from dl1.errors import DL1Error, UsageError, first_line
from dl1.run.torchrun import local_rank, world_size


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if imported) torch, CPU and CUDA."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)


def choose_device(preference: str = "auto"):
    """The torch device to use: ``auto`` picks CUDA (under torchrun this rank's own GPU), then MPS, then CPU; a
    device that is not there is one-line :class:`DL1Error`, a name torch does not know one-line UsageError."""
    import torch

    if preference != "auto":
        if preference.startswith("cuda") and not torch.cuda.is_available():
            raise DL1Error(f"device {preference!r} requested but CUDA is not available on this machine")
        if preference == "cuda" and world_size() > 1:  # under torchrun: this rank's own GPU
            return torch.device("cuda", local_rank())
        try:
            return torch.device(preference)
        except RuntimeError as exc:  # e.g. "tpu7": torch names the device types it knows
            raise UsageError(f"--device: {first_line(exc)}") from None
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank()) if world_size() > 1 else torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_memory(device: Any) -> int | None:
    """Bytes free for new tensors on ``device``: CUDA's free memory, the system's available memory on CPU (Linux
    MemAvailable, else free pages); None where unknown (then nothing is checked)."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    if kind != "cpu":
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
