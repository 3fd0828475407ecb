"""Multi-process training through PyTorch's own engine (DistributedDataParallel), launched by ``torchrun``.

``torchrun --nproc_per_node N -m dl1 run NAME ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; :func:`init_distributed` reads
them (NCCL on CUDA, gloo on CPU), :func:`wrap` puts the model in DDP (gradients are averaged across ranks during
``backward``), and only rank 0 writes the run folder.  Without those variables everything is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank information from torchrun's environment variables (single process if unset)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(backend: str | None = None, init_method: str | None = None) -> DistInfo:
    """Join the process group described by the environment (idempotent; a no-op for one process)."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend, init_method=init_method or "env://", rank=info.rank,
                                world_size=info.world_size)
    return info


def device_for(info: DistInfo) -> torch.device:
    """This rank's device: its own GPU under NCCL, else the CPU."""
    if torch.cuda.is_available() and info.enabled:
        return torch.device("cuda", info.local_rank)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around ``model`` when running multi-process, else the model itself."""
    if not info.enabled:
        return model
    device_ids = [info.local_rank] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (identity for one process)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
