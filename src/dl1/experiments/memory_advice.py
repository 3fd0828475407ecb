"""What fits in memory, worded for the command line: the models estimate bytes (``GPTConfig.memory_bytes``,
:func:`dl1.models.vae.step_memory`), and these checks turn an estimate over the free memory into one line naming the
flag to change and the value that fits (``--train_batch_size 12``, ``--num_samples 3``, fewer ``--num_filters``).

Used by ``dl1 run gpt``, ``vae``, ``aae`` and ``dl1 generate`` before anything is allocated.  torch-free at import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dl1.errors import DL1Error
from dl1.models.gpt_config import GPTConfig
from dl1.run import device as run_device

GIB = 2**30


def size_text(n: int) -> str:
    """Bytes as ``1.5 GiB`` (from a tenth of a GiB) or ``300 MiB``."""
    return f"{n / GIB:,.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:,.0f} MiB"


def check_gpt_fits(config: GPTConfig, batch_size: int, available: int | None, *, training: bool, where: str,
                   batch_flag: str, block_flag: str | None = None, cuda: bool = False, context: int | None = None
                   ) -> None:
    """One-line :class:`DL1Error` when ``config`` on ``batch_size`` windows of ``context`` tokens (default its block
    size) needs more than ``available`` bytes (None: unknown, no check), saying what would fit: a smaller
    ``batch_flag``, a smaller ``block_flag``, or a smaller model."""
    need = config.memory_bytes(batch_size, training, cuda, context)
    if available is None or need <= available:
        return
    c = config.resolved()
    what = (f"{'training' if training else 'running'} a GPT of {c.num_parameters() / 1e6:,.1f} M parameters "
            f"(vocabulary {c.vocab_size:,}, {c.n_layer} layers of width {c.n_embd}) on {batch_flag} "
            f"{batch_size:,} x {min(context or c.block_size, c.block_size):,} tokens")
    head = f"{what} needs about {size_text(need)} of memory but {size_text(available)} is available on {where}"
    fits = config.largest_batch(available, training=training, cuda=cuda, context=context, upper=batch_size - 1)
    if fits:
        raise DL1Error(f"{head}; what fits: {batch_flag} {fits:,}")
    if block_flag is not None:
        block = config.largest_block(available, training=training, cuda=cuda, upper=c.block_size - 1)
        if block:
            raise DL1Error(f"{head}; what fits: {batch_flag} 1 with {block_flag} {block:,}")
    params = (16 if training else 4) * c.num_parameters()
    raise DL1Error(f"{head}; the parameters{' and optimiser state' if training else ''} alone need "
                   f"{size_text(params)}: use a smaller model (fewer layers, a smaller width or vocabulary)")


def check_fits(config: GPTConfig, batch_size: int, device: Any, *, training: bool, batch_flag: str,
               block_flag: str | None = None, context: int | None = None) -> None:
    """:func:`check_gpt_fits` against what ``device`` has free."""
    cuda = getattr(device, "type", str(device)) == "cuda"
    check_gpt_fits(config, batch_size, run_device.available_memory(device), training=training, where=str(device),
                   batch_flag=batch_flag, block_flag=block_flag, cuda=cuda, context=context)


def check_step_fits(build: Callable[[], Any], floats_per_image: int, batch_size: int, available: int | None,
                    *, what: str, where: str, flag: str = "--batch_size") -> None:
    """One-line :class:`DL1Error` when one float32 Adam step of ``build()``'s model on ``batch_size`` images needs
    more than ``available`` bytes (None: unknown, nothing checked; the estimate:
    :func:`dl1.models.vae.step_memory`), saying which ``flag`` value fits (under torchrun ``batch_size`` is one rank's
    share and ``flag`` says so), or that only fewer ``--num_filters`` can."""
    from dl1.models.vae import step_memory

    fixed, per_image = step_memory(build, floats_per_image)
    need = fixed + batch_size * per_image
    if available is None or need <= available:
        return
    fits = (available - fixed) // per_image
    advice = (f"what fits: {flag} {fits}" if fits >= 1 else
              f"the parameters and Adam's state alone need {size_text(fixed)}: use fewer --num_filters")
    raise DL1Error(f"training {what} on {flag} {batch_size} needs about {size_text(need)} of memory but "
                   f"{size_text(available)} is available on {where}; {advice}")
