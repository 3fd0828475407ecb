"""Batching that resumes exactly: the shuffle of epoch ``e`` depends only on ``(seed, e)``."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that shuffles epoch ``epoch`` (independent of how many epochs ran before)."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class TensorBatches:
    """Mini-batches of in-memory tensors, shuffled per epoch from ``(seed, epoch)``; ``len()`` is the batch count."""

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
                 epoch: int = 0, drop_last: bool = False, device: torch.device | str | None = None,
                 rank: int = 0, world_size: int = 1):
        self.tensors, self.batch_size = tensors, batch_size
        self.rank, self.world_size = rank, world_size  # each rank of a distributed run takes every world_size-th
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator = epoch_generator(seed, epoch)
        self.device = device
        self.n = len(tensors[0]) // world_size

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        total = len(self.tensors[0])
        order = torch.randperm(total, generator=self.generator) if self.shuffle else torch.arange(total)
        order = shard(order, self.rank, self.world_size).to(self.tensors[0].device)  # no per-batch host copy
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            batch = tuple(t[idx] for t in self.tensors)
            if self.device is not None:
                batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
            yield batch


def shard(order, rank: int, world_size: int):
    """Rank ``rank``'s part of an epoch's ``order``: every ``world_size``-th item from ``rank``, the same count on
    every rank (up to ``world_size - 1`` items are left out, as DistributedSampler's ``drop_last``).  Batched by
    ``global batch / world_size``, the ranks' ``i``-th batches together are exactly the ``i``-th global batch of
    ``order`` (when its length is a multiple of ``world_size``).  What :class:`TensorBatches` does with its rank."""
    if world_size <= 1:
        return order
    return order[rank::world_size][: len(order) // world_size]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of ``n`` items in epoch ``epoch``; depends only on ``(seed, epoch)``."""
    return torch.randperm(n, generator=epoch_generator(seed, epoch)).tolist()


def ordered_loader(dataset, batch_size: int, num_workers: int = 0,
                   order: list[int] | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` in ``order`` (default: dataset order), pinned memory when CUDA is present."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order, shuffle=False,
                                       num_workers=num_workers, pin_memory=torch.cuda.is_available())
