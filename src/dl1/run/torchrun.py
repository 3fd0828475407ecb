"""torchrun's environment: how many processes this run has and which one this is (torch-free).

``torchrun`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` for every process it starts;
without torchrun this is one process of rank 0.  The joined process group is :mod:`dl1.train.distributed`'s
business; this module only reads the environment, so that ``--help`` and the run folder need no torch.
"""

from __future__ import annotations

import os


def _torchrun_env(name: str, default: int) -> int:
    """One of the integers torchrun sets for every process (``default`` without torchrun, or when unreadable)."""
    try:
        return int(os.environ.get(name, "") or default)
    except ValueError:
        return default


def world_size() -> int:
    """The number of processes of this run (torchrun's ``WORLD_SIZE``; 1 without torchrun)."""
    return max(1, _torchrun_env("WORLD_SIZE", 1))


def rank() -> int:
    """This process's rank (torchrun's ``RANK``; 0 without torchrun)."""
    return _torchrun_env("RANK", 0)


def local_rank() -> int:
    """This process's index on its node (torchrun's ``LOCAL_RANK``; 0 without torchrun)."""
    return _torchrun_env("LOCAL_RANK", 0)


def local_world_size() -> int:
    """The processes on this node (torchrun's ``LOCAL_WORLD_SIZE``; the world size when unset)."""
    return max(1, _torchrun_env("LOCAL_WORLD_SIZE", world_size()))
