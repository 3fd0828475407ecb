"""The one training loop shared by every torch experiment.

The experiment supplies three callables; the engine never knows which model it trains:

* ``train_batches(epoch) -> Iterable``   the batches of one epoch (seed the shuffle with the epoch for exact resume);
* ``train_step(batch) -> dict``          forward + loss, then ``trainer.backward_step(loss)`` (or several, e.g. AAE);
                                         returns the step's metrics (floats or 0-d tensors), averaged per epoch;
* ``evaluate(epoch) -> {split: metrics}`` e.g. ``{"val": {"loss": 0.3, "acc": 0.9}}``; the monitored one picks the best.

The engine owns the epoch loop, progress bars, logging to the run folder, gradient clipping, the precision
(``train_step`` and ``evaluate`` run under the autocast of ``precision``, backward outside it, fp16 with a gradient
scaler), learning-rate schedulers (stepped per optimisation step), checkpoints (``last.pt`` every epoch, ``best.pt`` on
improvement, both atomic), early stopping, resume (model, optimisers, schedulers, RNG states, best value, patience
counter) and the non-finite-loss guard.  An iteration-based run (GPT) is an "epoch" of ``eval_interval`` steps.

Under ``torchrun`` (a joined process group, :mod:`dl1.train.distributed`) the run is data parallel for every
experiment alike: ``trainer.wrap(module)`` puts each trainable module in PyTorch's ``DistributedDataParallel`` (the
experiment runs its forward pass through the wrapper; ``fit`` refuses to start when an optimiser's parameters are not
wrapped), a non-finite loss on any rank stops all of them, epoch and validation metrics are averaged over the ranks,
batch-norm running statistics are averaged every epoch, each rank keeps its own random stream (saved per rank in
``last.pt``, so a resume with the same number of ranks is exact) and rank 0 alone writes.  The experiment gives each
rank its shard of every global batch.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dl1.errors import DL1Error, first_line
from dl1.runtime import Run, checkpoint_file
from dl1.train import distributed
from dl1.train import precision as precisions
from dl1.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state


class NonFiniteLossError(DL1Error):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # a DistributedDataParallel given by a caller keeps the model in .module


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item())
    return float(value)


def show_progress() -> bool:
    """Whether to draw progress bars (``tqdm.auto`` then draws them as a terminal bar or a notebook widget).

    ``DL1_PROGRESS=1``/``0`` decides when set; otherwise never in CI (``CI=true``: logs stay free of bars), always in a
    Jupyter kernel (whose stderr is no terminal), and elsewhere when stderr is a terminal (not when it is a log
    file)."""
    if os.environ.get("DL1_PROGRESS") is not None:
        return os.environ["DL1_PROGRESS"] not in ("0", "")
    if os.environ.get("CI", "").lower() in ("true", "1"):
        return False
    return in_notebook() or sys.stderr.isatty()


def in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, JupyterLab, VS Code, Colab): an IPython shell started by a kernel app."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class Trainer:
    """Fit ``modules`` with ``optimizers``; see the module docstring for the contract."""

    def __init__(self, run: Run, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], *,
                 epochs: int, monitor: str | None = "val/loss", mode: str = "min",
                 schedulers: dict[str, Any] | None = None, clip_grad_norm: float | None = None,
                 patience: int | None = None, device: torch.device | None = None, precision: str = "fp32",
                 extra_state: Callable[[], dict[str, Any]] | None = None, desc: str | None = None,
                 checkpoint_every: int = 1, on_epoch_end: Callable[[int, dict], None] | None = None,
                 max_batches: int = 0):
        if mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        self.run, self.modules, self.optimizers = run, modules, optimizers
        self.schedulers = schedulers or {}
        self.epochs, self.monitor, self.mode = epochs, monitor, mode
        self.clip_grad_norm, self.patience = clip_grad_norm, patience
        self.device = device or torch.device("cpu")
        precisions.check(precision, self.device)
        self.precision = precision
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.dist = distributed.current()  # one process unless torchrun's process group was joined
        self._wrapped: list[nn.Module] = []  # the DistributedDataParallel wrappers made by wrap()
        self.extra_state = extra_state
        self.desc = desc or run.experiment
        self.checkpoint_every = checkpoint_every
        self.on_epoch_end = on_epoch_end
        self.max_batches = max_batches  # at most this many training batches per epoch (0: all)
        self.train_time_s = 0.0  # wall seconds spent in training epochs (batches + steps, no evaluation)
        self.train_cpu_s = 0.0   # process CPU seconds of the same
        self.train_batches = 0   # training batches seen by this process (not restored on resume)
        self.epoch = 0           # epochs completed
        self.step = 0            # optimisation steps completed (of the first optimiser)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, Any] = {}
        self.bad_epochs = 0
        self._bad: torch.Tensor | None = None  # accumulated non-finite flag (GPU)

    # -- checkpoints -----------------------------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.run.checkpoints / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run.checkpoints / "best.pt"

    def state_dict(self) -> dict[str, Any]:
        state = {
            "modules": {k: _unwrap(m).state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "best_value": self.best_value, "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics, "bad_epochs": self.bad_epochs, "rng": rng_state(),
        }
        if self.dist.enabled:  # every rank's random stream (a collective: every rank builds the state each epoch)
            state["rng_ranks"] = distributed.gather(state["rng"])
            state["world_size"] = self.dist.world_size
        if self.extra_state is not None:
            state["extra"] = self.extra_state()
        return state

    def load_state_dict(self, state: dict[str, Any], restore_rng: bool = True) -> None:
        for k, m in self.modules.items():
            _unwrap(m).load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            if k in state.get("optimizers", {}):
                o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            if k in state.get("schedulers", {}):
                s.load_state_dict(state["schedulers"][k])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state.get("epoch", 0), state.get("step", 0)
        self.best_value, self.best_epoch = state.get("best_value"), state.get("best_epoch")
        self.best_metrics, self.bad_epochs = state.get("best_metrics", {}), state.get("bad_epochs", 0)
        if restore_rng and "rng" in state:
            ranks = state.get("rng_ranks") or []
            if len(ranks) == self.dist.world_size:
                set_rng_state(ranks[self.dist.rank])
            else:  # saved with another number of ranks: rank 0's stream, and a stream of its own on every other rank
                set_rng_state(state["rng"])
                self._fold_rank_into_rng()

    def resume(self, source: str | Path) -> None:
        """Continue from a checkpoint file or a run folder (its ``checkpoints/last.pt``, else ``best.pt``).  The run
        folder is committed (config, env, argv written; metrics cut back to the checkpoint's step) only after the
        checkpoint has been loaded, so a checkpoint that does not fit changes nothing."""
        path = checkpoint_file(source, prefer="last")
        try:
            self.load_state_dict(load_checkpoint(path, map_location=self.device))
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise DL1Error(f"cannot resume from {path}: it does not fit this model/optimiser (were different "
                           f"size flags used?): {first_line(exc)}") from None
        self.run.truncate_after(self.step)
        print(f"[{self.run.experiment}] resumed from {path} at epoch {self.epoch}, step {self.step}", flush=True)

    def load_best(self) -> dict[str, Any]:
        """Load the best checkpoint's weights into the modules (the last ones if none was saved).  Under torchrun
        rank 0 reads the file and sends the weights to the others (no other node needs the run folder)."""
        state: dict[str, Any] = {}
        if self.dist.is_main:
            path = self.best_path if self.best_path.exists() else self.last_path
            if path.exists():
                state = load_checkpoint(path, map_location=self.device)
                for k, m in self.modules.items():
                    _unwrap(m).load_state_dict(state["modules"][k])
        if self.dist.enabled:
            distributed.broadcast_modules(_unwrap(m) for m in self.modules.values())
        return state

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module to run the forward pass through: under torchrun PyTorch's ``DistributedDataParallel`` around
        ``module`` (gradients of its trainable parameters averaged over the ranks during backward), the module itself
        in one process.  Call it once per trainable module, on its device, before ``fit``."""
        wrapped = distributed.wrap(module, self.dist)
        if wrapped is not module:
            self._wrapped.append(wrapped)
        return wrapped

    def _check_wrapped(self) -> None:
        """Under torchrun, refuse to train a parameter that no ``wrap``-ed module holds (its gradient would never be
        averaged and the ranks would drift apart)."""
        covered = {id(p) for w in self._wrapped for p in w.module.parameters()}
        loose = [name for name, opt in self.optimizers.items()
                 if any(p.requires_grad and id(p) not in covered for g in opt.param_groups for p in g["params"])]
        if loose:
            raise DL1Error(f"data-parallel training needs every trained module wrapped (trainer.wrap(module), forward "
                           f"through the result): the parameters of optimiser(s) {', '.join(loose)} are not")

    def _fold_rank_into_rng(self) -> None:
        """Give every rank but 0 a random stream of its own (dropout masks, noise, prior samples differ per rank, as
        its data does); rank 0 keeps the stream a single process would have."""
        if self.dist.rank > 0:
            import random

            import numpy as np

            seed = (torch.initial_seed() + 1_000_003 * self.dist.rank) % 2**63
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)

    # -- one optimisation step --------------------------------------------------------------------------------------
    def autocast(self):
        """The autocast of ``precision`` on the device (a no-op for fp32); the engine runs ``train_step`` and
        ``evaluate`` under it, an experiment's own evaluations after training may too."""
        return precisions.autocast(self.precision, self.device)

    def _check_finite(self, loss: torch.Tensor, every: int = 50) -> None:
        """Stop on a NaN/inf loss.  On CPU every step; on GPU the flag is accumulated on the device and read every
        ``every`` steps (a read is a host sync), so a bad loss is caught within ``every`` steps.  Under torchrun
        ``loss`` is the all-reduced "every rank is finite" flag, so that every rank stops at the same step."""
        bad = ~torch.isfinite(loss.detach()).all() if loss.dtype != torch.bool else ~loss
        if loss.device.type == "cpu":
            if bool(bad):
                self._raise_non_finite(loss)
            return
        self._bad = bad if self._bad is None else (self._bad | bad)
        if (self.step + 1) % every == 0 and bool(self._bad):
            self._raise_non_finite(loss)

    def _raise_non_finite(self, loss: torch.Tensor) -> None:
        value = "non-finite on some rank" if loss.dtype == torch.bool else loss.detach().float().mean().item()
        raise NonFiniteLossError(
            f"loss became {value} at epoch {self.epoch + 1}, step {self.step + 1}; "
            f"the last good checkpoint is {self.last_path if self.last_path.exists() else '(none yet)'} "
            f"(lower --lr or resume with --resume {self.run.dir})")

    def backward_step(self, loss: torch.Tensor, optimizer: str | None = None,
                      parameters: Iterable[torch.Tensor] | None = None) -> None:
        """Check the loss is finite (on every rank, under torchrun), zero this optimiser's grads, backpropagate
        (outside autocast), clip, step the optimiser and its scheduler."""
        name = optimizer or next(iter(self.optimizers))
        opt = self.optimizers[name]
        self._check_finite(distributed.all_finite(loss) if self.dist.enabled else loss)  # every rank stops together
        opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=False) if self.precision != "fp32" else nullcontext():
            self.scaler.scale(loss).backward()  # under torchrun DistributedDataParallel averages the gradients here
        if self.clip_grad_norm:
            self.scaler.unscale_(opt)
            params = parameters if parameters is not None else [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        self.scaler.step(opt)
        self.scaler.update()
        if name in self.schedulers:
            self.schedulers[name].step()
        if name == next(iter(self.optimizers)):
            self.step += 1

    def lr(self, optimizer: str | None = None) -> float:
        name = optimizer or next(iter(self.optimizers))
        return self.optimizers[name].param_groups[0]["lr"]

    # -- the loop ----------------------------------------------------------------------------------------------------
    def _improved(self, value: float) -> bool:
        if self.best_value is None or math.isnan(self.best_value):
            return True
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def _monitored(self, results: dict[str, dict[str, Any]]) -> float | None:
        if not self.monitor:
            return None
        split, key = self.monitor.split("/", 1)
        if split not in results or key not in results[split]:
            raise KeyError(f"monitored metric {self.monitor!r} not in evaluation results {list(results)}")
        return _scalar(results[split][key])

    def _train_epoch(self, batches: Iterable, train_step: Callable[[Any], dict]) -> dict[str, float]:
        from tqdm.auto import tqdm

        for m in self.modules.values():
            m.train()
        totals: dict[str, Any] = {}
        n = 0
        total = len(batches) if hasattr(batches, "__len__") else None
        if self.max_batches:
            total = self.max_batches if total is None else min(total, self.max_batches)
            batches = itertools.islice(batches, self.max_batches)
        bar = tqdm(batches, total=total, desc=f"{self.desc} epoch {self.epoch + 1}/{self.epochs}",
                   disable=not show_progress() or not self.dist.is_main, leave=False, dynamic_ncols=True)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            for batch in bar:
                with self.autocast():
                    metrics = train_step(batch)
                for k, v in metrics.items():
                    v = v.detach() if isinstance(v, torch.Tensor) else v
                    totals[k] = totals.get(k, 0.0) + v
                n += 1
        finally:
            self.train_time_s += time.perf_counter() - t0
            self.train_cpu_s += time.process_time() - c0
            self.train_batches += n
        means = {k: _scalar(v) / max(n, 1) for k, v in totals.items()}
        return distributed.average_metrics({"train": means}, self.device)["train"] if self.dist.enabled else means

    def fit(self, train_batches: Callable[[int], Iterable], train_step: Callable[[Any], dict],
            evaluate: Callable[[int], dict[str, dict[str, Any]]] | None = None,
            resume: str | Path | None = None) -> dict[str, Any]:
        """Train until ``epochs`` (or early stopping); returns the best epoch and its metrics."""
        if resume:
            self.resume(resume)
        if self.dist.enabled:
            self._check_wrapped()
            if not resume:
                self._fold_rank_into_rng()
        stopped_early = False
        try:
            while self.epoch < self.epochs:
                train_metrics = self._train_epoch(train_batches(self.epoch), train_step)
                if self._bad is not None and bool(self._bad):  # GPU: a NaN in the epoch's last steps
                    raise NonFiniteLossError(f"loss became non-finite in epoch {self.epoch + 1}; the last good "
                                             f"checkpoint is {self.last_path} (lower --lr or resume with --resume "
                                             f"{self.run.dir})")
                self.epoch += 1
                self.run.log(self.step, "train", {**train_metrics, "lr": self.lr()}, epoch=self.epoch)
                distributed.average_running_stats(_unwrap(m) for m in self.modules.values())
                with self.autocast():
                    results = evaluate(self.epoch) if evaluate is not None else {}
                results = distributed.average_metrics(results, self.device)
                for split, metrics in results.items():
                    self.run.log(self.step, split, metrics, epoch=self.epoch)
                value = self._monitored(results)
                is_best = value is not None and self._improved(value)
                if is_best or self.monitor is None:
                    self.best_value, self.best_epoch = value, self.epoch
                    self.best_metrics = {s: {k: _scalar(v) for k, v in m.items()} for s, m in results.items()}
                    self.bad_epochs = 0
                else:
                    self.bad_epochs += 1
                state = self.state_dict()
                if self.run.enabled and is_best:  # without a monitor, last.pt is the one checkpoint
                    save_checkpoint(self.best_path, {k: state[k] for k in ("modules", "epoch", "step", "best_value",
                                                                           "best_metrics", "extra") if k in state})
                if self.run.enabled and (self.epoch % self.checkpoint_every == 0 or self.epoch == self.epochs):
                    save_checkpoint(self.last_path, state)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self.epoch, results)
                if self.patience is not None and self.bad_epochs >= self.patience:
                    print(f"[{self.run.experiment}] early stop: no improvement of {self.monitor} for "
                          f"{self.bad_epochs} epochs", flush=True)
                    stopped_early = True
                    break
        except KeyboardInterrupt:
            print(f"\n[{self.run.experiment}] interrupted at epoch {self.epoch}; everything up to the last "
                  f"checkpoint is kept. Resume with: --resume {self.run.dir}", file=sys.stderr, flush=True)
            raise
        return {"best_epoch": self.best_epoch, "best_value": self.best_value, "best_metrics": self.best_metrics,
                "epochs_run": self.epoch, "steps": self.step, "stopped_early": stopped_early,
                "train_time_s": round(self.train_time_s, 3), "train_cpu_s": round(self.train_cpu_s, 3),
                "train_batches": self.train_batches}
