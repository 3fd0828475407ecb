"""``--precision fp32|bf16|fp16``: which autocast the engine runs the forward passes under.

* ``fp32``: no autocast (on CUDA, matrix products may use TF32 where an experiment allows it);
* ``bf16``: ``torch.autocast(device, torch.bfloat16)`` on CPU and CUDA (no gradient scaler: bfloat16 has float32's
  range);
* ``fp16``: ``torch.autocast("cuda", torch.float16)`` with a gradient scaler; CUDA only (float16 without a GPU is
  refused with one line, as is bf16 on a GPU that lacks it).

Weights, gradients and optimiser states stay float32 (autocast casts per operation); frozen towers (CLIP) may be kept
in :func:`frozen_dtype`, the dtype that is fastest on the device.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from dl1.config import PRECISIONS
from dl1.errors import UsageError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check(precision: str, device: Any) -> None:
    """Refuse a precision the device cannot train in, with one line naming what works there."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        raise UsageError(f"--precision fp16 needs a CUDA device (float16 training uses a gradient scaler there); on "
                         f"{kind} use --precision bf16 or fp32")
    if precision == "bf16" and kind not in ("cpu", "cuda"):
        raise UsageError(f"--precision bf16 runs on cpu and cuda, not on {kind}; use --precision fp32")
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision bf16: {torch.cuda.get_device_name(torch.device(device))} has no bfloat16; use "
                         "--precision fp16")


def autocast(precision: str, device: Any):
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def frozen_dtype(precision: str, device: Any) -> torch.dtype:
    """The dtype frozen weights are kept in: the autocast dtype on CUDA (half the memory, the tensor cores' input);
    float32 on the CPU, where autocast casts per operation and float32 weights are what most CPUs run fastest."""
    if torch.device(device).type == "cuda" and precision != "fp32":
        return DTYPES[precision]
    return torch.float32
