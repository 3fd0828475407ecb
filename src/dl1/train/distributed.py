"""Data parallelism for the one training engine, launched by ``torchrun`` (several processes, GPUs or nodes).

``torchrun --nproc_per_node N [--nnodes M --rdzv_endpoint HOST:PORT] -m dl1 run NAME ...`` starts one process per
rank with RANK/WORLD_SIZE/LOCAL_RANK set; ``dl1`` joins the process group (:func:`init_distributed`: NCCL on CUDA,
gloo on CPUs) before the run folder is made, so that ``env.json`` records the backend and the world size.  Everything
here is a no-op in one process.

The gradients are PyTorch's own ``DistributedDataParallel``'s business: the :class:`~dl1.train.Trainer` wraps each
trainable module (:func:`wrap`, ``trainer.wrap(module)``) and the experiment runs its forward pass through the wrapper,
so DDP broadcasts rank 0's weights and averages the trainable parameters' gradients during backward (a frozen CLIP's
parameters are not synchronised; the AAE wraps its whole model and, for its second optimiser's step, its
discriminator).  Around it the engine adds what a training loop needs: each rank trains on its own shard of every
global batch (``--batch_size`` is the global batch, :func:`local_batch`); a non-finite loss on any rank stops every
rank at the same step (:func:`all_finite`); epoch metrics and validation metrics are averaged over the ranks
(:func:`average_metrics`, weighted by ``n`` where a split reports how many examples each rank scored); batch-norm
running statistics are averaged at the end of every epoch (:func:`average_running_stats`); the best weights read by
rank 0 are sent to the others (:func:`broadcast_modules`); rank 0 alone writes the run folder.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dl1.errors import UsageError
from dl1.run.torchrun import local_rank, rank, world_size

BUCKET_BYTES = 25 * 2**20  # as DistributedDataParallel's default bucket (25 MiB)


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
    return DistInfo(rank(), world_size(), local_rank())


def current() -> DistInfo:
    """This process's rank in the joined process group (one process when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank())
    return DistInfo()


DEFAULT_TIMEOUT = 600.0  # seconds, --dist_timeout's default: how long a rank waits for the others
_timeout: float | None = None  # the timeout init_distributed joined with (for the wording of lost_peer)


def init_distributed(backend: str | None = None, init_method: str | None = None,
                     timeout: float | None = None) -> DistInfo:
    """Join the process group described by the environment (idempotent; a no-op for one process); returns this
    process's rank information.  ``timeout`` (seconds, ``--dist_timeout``; default :data:`DEFAULT_TIMEOUT`) bounds
    every wait for the other ranks, joining included: gloo and NCCL collectives that get no answer in that time fail
    (a rank that stopped answering: a hung node), and :func:`lost_peer` turns that into one line."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        global _timeout
        _timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        dist.init_process_group(backend, init_method=init_method or "env://", rank=info.rank,
                                world_size=info.world_size, timeout=timedelta(seconds=_timeout))
    return current() if info.enabled else info


_TIMED_OUT = ("timed out", "timeout", "watchdog caught collective operation")
_CLOSED = ("connection reset", "connection closed", "connection refused", "broken pipe", "end of file",
           "socket closed", "communicator was aborted", "remote process exited", "peer")


def lost_peer(exc: BaseException) -> str | None:
    """One line for an error that says this rank lost contact with another one (a gloo or NCCL collective timed out,
    or a peer's connection closed), without the backend's source location; ``None`` for any other error."""
    if not isinstance(exc, RuntimeError):
        return None
    text = " ".join(str(exc).split())
    lowered = text.lower()
    known = isinstance(exc, dist.DistError) or "gloo" in lowered or "nccl" in lowered
    if not known:
        return None
    detail = re.sub(r"^\[[^\]]*\]\s*", "", text)  # "[.../pair.cc:545] Read error ..." -> "Read error ..."
    detail = detail.split(". This is typically", 1)[0].rstrip(".")
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    if any(k in lowered for k in _TIMED_OUT):
        limit = f" within --dist_timeout {_timeout:g} s" if _timeout is not None else ""
        return f"lost contact with another rank: no answer{limit} (a rank stopped or hung) ({detail})"
    if any(k in lowered for k in _CLOSED):
        return f"lost contact with another rank: its connection closed (a rank exited or was killed) ({detail})"
    return None


def describe() -> dict[str, Any]:
    """``{"backend", "world_size", "rank"}`` of the joined process group (``{}`` without one): for ``env.json``."""
    if not (dist.is_available() and dist.is_initialized()):
        return {}
    return {"backend": str(dist.get_backend()), "world_size": dist.get_world_size(), "rank": dist.get_rank()}


def local_batch(global_batch: int, flag: str = "--batch_size", info: DistInfo | None = None) -> int:
    """The per-rank share of a global batch; a batch the ranks cannot share evenly is refused with one line."""
    info = info or current()
    if global_batch % info.world_size:
        raise UsageError(f"{flag} {global_batch} is the global batch, shared by {info.world_size} ranks: give a "
                         f"multiple of {info.world_size}")
    return global_batch // info.world_size


def shard(n: int, info: DistInfo | None = None) -> slice:
    """This rank's contiguous part of ``n`` items, for evaluation (the parts differ by at most one item: report ``n``
    with the metrics so that the average is weighted).  Training data is shared with
    :func:`dl1.data.loaders.shard`."""
    info = info or current()
    start = n * info.rank // info.world_size
    return slice(start, n * (info.rank + 1) // info.world_size)


def _buckets(tensors: list[torch.Tensor]) -> Iterable[list[torch.Tensor]]:
    """Tensors grouped by (device, dtype) into buckets of at most ``BUCKET_BYTES``."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for group in groups.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for t in group:
            if bucket and size + t.numel() * t.element_size() > BUCKET_BYTES:
                yield bucket
                bucket, size = [], 0
            bucket.append(t)
            size += t.numel() * t.element_size()
        if bucket:
            yield bucket


def _in_flat_buckets(tensors: list[torch.Tensor], collective) -> None:
    """``collective(flat)`` on a few flat buffers holding ``tensors`` (one call per bucket), the results copied back
    into the tensors in place."""
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        collective(flat)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def _batch_norms(module: nn.Module) -> list[nn.Module]:
    """The batch-norm layers of ``module`` that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
            and m.running_mean is not None]


def wrap(module: nn.Module, info: DistInfo | None = None) -> nn.Module:
    """PyTorch's ``DistributedDataParallel`` around ``module`` (the module itself in one process): run the forward
    pass through what this returns, and DDP averages the gradients of the module's trainable parameters over the ranks
    during backward (in buckets, overlapping the backward pass); parameters that do not require gradients (a frozen
    CLIP) are not synchronised.  Rank 0's parameters and buffers are broadcast when it is built; buffers again before
    every forward pass only when the module has batch-norm statistics."""
    info = info or current()
    if not info.enabled:
        return module
    first = next((p for p in module.parameters() if p.requires_grad), None)
    device_ids = [first.device.index if first.device.index is not None else info.local_rank] \
        if first is not None and first.is_cuda else None
    sync = _buffer_sync(bool(_batch_norms(module)))
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **sync)


def _buffer_sync(every_forward: bool) -> dict[str, bool]:
    """DDP's keyword for syncing buffers before every forward pass: ``forward_sync_buffers`` where torch has it
    (its ``broadcast_buffers`` is deprecated there and warns on every rank), ``broadcast_buffers`` before."""
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": every_forward}


def all_finite(value: torch.Tensor) -> torch.Tensor:
    """A 0-d bool tensor: ``value`` is finite on every rank (one small all-reduce; no host sync on a GPU)."""
    flag = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
    if current().enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return flag.reshape(()) > 0


def broadcast_modules(modules: Iterable[nn.Module], src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank (as DistributedDataParallel at construction)."""
    if not current().enabled:
        return
    _in_flat_buckets([t.data for m in modules for t in (*m.parameters(), *m.buffers())],
                     lambda flat: dist.broadcast(flat, src))


def average_running_stats(modules: Iterable[nn.Module]) -> None:
    """Average the batch-norm running means and variances over the ranks (each rank saw its own shard)."""
    if not current().enabled:
        return
    stats = [t for m in modules for bn in _batch_norms(m) for t in (bn.running_mean, bn.running_var)]
    if stats:
        _in_flat_buckets(stats, lambda flat: (dist.all_reduce(flat), flat.div_(current().world_size)))


def average_metrics(results: dict[str, dict[str, Any]], device: Any = "cpu") -> dict[str, dict[str, Any]]:
    """Each split's metrics averaged over the ranks: weighted by the split's ``n`` (examples this rank scored) when it
    reports one (``n`` becomes the total), else equally.  Values that are not numbers are rank 0's.  ``device``: the
    run's device, where the one all-reduce happens (a GPU under NCCL)."""
    info = current()
    if not info.enabled or not results:
        return results
    keys = [(s, k) for s, m in sorted(results.items()) for k, v in sorted(m.items())
            if k != "n" and isinstance(v, int | float | torch.Tensor) and not isinstance(v, bool)]
    weights = [float(results[s].get("n", 1)) for s, _ in keys]
    values = torch.tensor([float(results[s][k]) * w for (s, k), w in zip(keys, weights, strict=True)] + weights,
                          dtype=torch.float64)
    counts = torch.tensor([float(m["n"]) for _, m in sorted(results.items()) if "n" in m], dtype=torch.float64)
    values = torch.cat([values, counts]).to(device)
    dist.all_reduce(values)
    values = values.cpu().tolist()
    out = {s: dict(m) for s, m in results.items()}
    for i, (s, k) in enumerate(keys):
        out[s][k] = values[i] / values[len(keys) + i]
    totals = iter(values[2 * len(keys):])
    for s in sorted(results):
        if "n" in results[s]:
            out[s]["n"] = int(round(next(totals)))
    return out


def part_of(dataset: Any) -> Any:
    """This rank's contiguous part of ``dataset`` (:func:`shard`; the whole of it in one process), e.g. to evaluate
    a split or extract its features in parts."""
    if not current().enabled:
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, range(len(dataset))[shard(len(dataset))])


def gather_parts(part: torch.Tensor, n: int) -> torch.Tensor:
    """The rows of all ranks' parts (each rank's :func:`part_of` ``n`` items), in rank order, on every rank: the
    ``(n, ...)`` tensor one process computes.  One all-gather (parts padded to the longest)."""
    info = current()
    if not info.enabled:
        return part
    sizes = [len(range(n)[shard(n, DistInfo(r, info.world_size))]) for r in range(info.world_size)]
    padded = part.new_zeros((max(sizes), *part.shape[1:]))
    padded[:len(part)] = part
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:size] for p, size in zip(parts, sizes, strict=True)])


def sum_counts(*counts: int, device: Any = "cpu") -> list[int]:
    """Integer counts (e.g. correct predictions and examples) summed over the ranks, exactly: the same numbers on
    every rank, those one process counting the whole split gets."""
    if not current().enabled:
        return list(counts)
    values = torch.tensor(counts, dtype=torch.int64, device=device)
    dist.all_reduce(values)
    return [int(v) for v in values.tolist()]


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (identity for one process)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` for one process)."""
    info = current()
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    """Leave the process group.  What still holds it and is only waiting for the garbage collector (a
    DistributedDataParallel wrapper in a reference cycle) is collected first: left for the interpreter's shutdown,
    destroying it there can abort the process (SIGABRT, "terminate called without an active exception") after a run
    that succeeded."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
