"""The one training engine: loop, schedules, checkpoints and distributed launch (never model-specific)."""

from dl1.train.checkpoint import load_checkpoint, save_checkpoint
from dl1.train.engine import NonFiniteLossError, Trainer
from dl1.train.schedules import warmup_cosine, warmup_cosine_factor

__all__ = ["Trainer", "NonFiniteLossError", "save_checkpoint", "load_checkpoint", "warmup_cosine",
           "warmup_cosine_factor"]
