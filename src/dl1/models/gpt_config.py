"""The sizes of a GPT, without torch: presets, ``GPTConfig`` (the one size rule) and the memory a size needs (bytes:
the command that runs it words what fits, :mod:`dl1.experiments.memory_advice`).

Everything here is plain Python, so the command line can check ``--n_layer --n_head --n_embd`` and a checkpoint's stored
configuration, and refuse sizes that cannot fit in memory, before torch is imported or a tensor is allocated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# (n_layer, n_head, n_embd) of the course's named models
PRESETS: dict[str, tuple[int, int, int]] = {
    "openai-gpt": (12, 12, 768),
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
    "gopher-44m": (8, 16, 512),
    "gpt-mini": (6, 6, 192),
    "gpt-micro": (4, 4, 128),
    "gpt-nano": (3, 3, 48),
}
PRETRAINED = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
ACTIVATION_NAMES = ("gelu_tanh", "gelu")  # GPT-2's tanh-approximate GELU (the course's NewGELU); exact erf GELU
SIZES = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
MAX_TOKENS = 100_000  # the most tokens a flag may ask to generate (or sample during training)
MAX_SIZE = 2**40  # no size field above this is a model anyone can hold (it keeps the arithmetic below exact and fast)
OVERHEAD = 160 * 2**20  # torch's own buffers, thread pools and allocator slack in the first steps (measured on CPU)


@dataclass
class GPTConfig:
    """Model hyper-parameters: exactly one of ``model_type`` or (``n_layer``, ``n_head``, ``n_embd``) is given."""

    vocab_size: int | None = None
    block_size: int | None = None
    model_type: str | None = None
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    fused_attention: bool = True  # scaled_dot_product_attention; False = the explicit masked softmax
    activation: str = "gelu_tanh"  # GPT-2's (the course's NewGELU); "gelu" = exact erf GELU (nanoGPT's nn.GELU)

    def resolved(self) -> GPTConfig:
        """A copy with the preset's sizes filled in, every field checked; raises ValueError naming the bad field.

        This is the one size rule: the command line, a checkpoint's stored configuration and ``GPT(config)`` all
        go through it."""
        given = (self.n_layer, self.n_head, self.n_embd)
        if any(v is not None for v in given) and not all(v is not None for v in given):
            raise ValueError("give all three of n_layer, n_head, n_embd (or none of them and a model_type)")
        if self.model_type is not None and (not isinstance(self.model_type, str) or self.model_type not in PRESETS):
            raise ValueError(f"unknown model_type {self.model_type!r}; presets: {', '.join(PRESETS)}")
        resolved_before = self.model_type is not None and given == PRESETS[self.model_type]  # resolving is idempotent
        if (self.model_type is not None) == all(v is not None for v in given) and not resolved_before:
            raise ValueError("give exactly one of model_type or (n_layer, n_head, n_embd)")
        cfg = dataclasses.replace(self)
        if self.model_type is not None:
            cfg.n_layer, cfg.n_head, cfg.n_embd = PRESETS[self.model_type]
        for name in SIZES:
            value = getattr(cfg, name)
            if value is None and name in ("vocab_size", "block_size"):
                raise ValueError("vocab_size and block_size must be set")
            if not _is_int(value) or not 1 <= value <= MAX_SIZE:
                raise ValueError(f"{name} must be a whole number from 1 to {MAX_SIZE}, got {value!r}")
        for name in ("embd_pdrop", "resid_pdrop", "attn_pdrop"):
            value = getattr(cfg, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
        if not isinstance(cfg.fused_attention, bool):
            raise ValueError(f"fused_attention must be true or false, got {cfg.fused_attention!r}")
        if cfg.activation not in ACTIVATION_NAMES:
            raise ValueError(f"unknown activation {cfg.activation!r}; choose from {', '.join(ACTIVATION_NAMES)}")
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head})")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        """The config stored by ``to_dict`` (unknown keys ignored); raises ValueError when it is not a mapping."""
        if not isinstance(values, dict):
            raise ValueError(f"a model config is a mapping of field names, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    # -- memory ------------------------------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        """All parameters of the resolved model, ``lm_head`` included."""
        c = self.resolved()
        d = c.n_embd
        per_layer = 12 * d * d + 13 * d  # ln_1, c_attn, c_proj, ln_2, c_fc, c_proj (weights and biases)
        return c.vocab_size * d + c.block_size * d + c.n_layer * per_layer + 2 * d + d * c.vocab_size

    def memory_bytes(self, batch_size: int, training: bool = True, cuda: bool = False, context: int | None = None
                     ) -> int:
        """About the peak bytes of one float32 step on ``batch_size`` windows of ``context`` tokens (at most, and by
        default, ``block_size``).

        Training: parameters, gradients and AdamW's two moments (16 bytes a parameter), plus what each layer keeps for
        the backward pass (about 22 floats of width per token, more with dropout) and the logits (4 floats a token
        per vocabulary entry).  The (T x T) attention matrix of every head is counted where it is materialised: the
        explicit path, and the fused path with attention dropout off CUDA.  Inference keeps one layer at a time.
        Calibrated against the peak resident memory of CPU steps, from tiny models to GPT-2 size (within about
        20 %)."""
        c = self.resolved()
        d, heads, V = c.n_embd, c.n_head, c.vocab_size
        T = c.block_size if context is None else max(1, min(context, c.block_size))
        dropout = max(c.embd_pdrop, c.resid_pdrop, c.attn_pdrop) > 0
        attention = heads * T if (not c.fused_attention or (c.attn_pdrop > 0 and not cuda)) else 0
        tokens = batch_size * T
        if training:
            per_layer = 22 * d + (5 * d if dropout else 0) + 4 * attention
            floats = 4 * self.num_parameters() + tokens * (c.n_layer * per_layer + 20 * d + 4 * V)
        else:
            floats = self.num_parameters() + tokens * (16 * d + 3 * V + 2 * attention)
        return 4 * floats + OVERHEAD

    def largest_batch(self, available: int, *, training: bool = True, cuda: bool = False,
                      context: int | None = None, upper: int = MAX_SIZE) -> int:
        """The largest batch in [1, ``upper``] whose :meth:`memory_bytes` fit in ``available`` bytes (0: none)."""
        return _largest(lambda b: self.memory_bytes(b, training, cuda, context) <= available, upper)

    def largest_block(self, available: int, *, training: bool = True, cuda: bool = False,
                      upper: int | None = None) -> int:
        """The largest block size in [1, ``upper``] (default this block size) at which one window fits in
        ``available`` bytes (0: none)."""
        upper = self.resolved().block_size if upper is None else upper
        return _largest(lambda t: dataclasses.replace(self, block_size=t).memory_bytes(1, training, cuda)
                        <= available, upper)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _largest(fits: Any, upper: int) -> int:
    """The largest n in [1, upper] with ``fits(n)`` (monotone: true up to some n, false after), or 0 if none."""
    lo, hi = 0, max(upper, 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo

