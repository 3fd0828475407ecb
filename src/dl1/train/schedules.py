"""Learning-rate schedules, stepped once per optimisation step."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, warmup: int, total: int, min_factor: float = 0.0) -> float:
    """Multiplier of the base rate at ``step`` (0-based): linear warm-up ``(step+1)/warmup``, then cosine decay.

    This is the course's ``cosine_lr`` (visual prompting): ``base*(step+1)/warmup`` for ``step < warmup``, else
    ``0.5*(1+cos(pi*(step-warmup)/(total-warmup)))*base``, optionally floored at ``min_factor`` (nanoGPT's ``min_lr``).
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_factor + (1.0 - min_factor) * cosine


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int,
                  min_factor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`warmup_cosine_factor`; call ``.step()`` after every optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup, total, min_factor))
