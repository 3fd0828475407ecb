"""The one training loop shared by every torch experiment.

The experiment supplies three callables; the engine never knows which model it trains:

* ``train_batches(epoch) -> Iterable``   the batches of one epoch (seed the shuffle with the epoch for exact resume);
* ``train_step(batch) -> dict``          forward + loss, then ``trainer.backward_step(loss)`` (or several, e.g. AAE);
                                         returns the step's metrics (floats or 0-d tensors), averaged per epoch;
* ``evaluate(epoch) -> {split: metrics}`` e.g. ``{"val": {"loss": 0.3, "acc": 0.9}}``; the monitored one picks the best;
                                         it runs under ``torch.no_grad()``.

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

SIGTERM and SIGUSR1 mean "save and stop" (:mod:`dl1.train.stopping`: the process exits with status 75 once
the checkpoint ``--resume`` expects is written); what a checkpoint holds and how a run continues from one,
mid-epoch too, is :mod:`dl1.train.state`.  SIGINT (Ctrl-C) keeps its meaning: stop now, keep the last checkpoint.
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

from dl1.errors import DL1Error
from dl1.run.folder import Run
from dl1.train import distributed
from dl1.train import precision as precisions
from dl1.train.checkpoint import rng_state, save_checkpoint, set_rng_state
from dl1.train.heap import keep_freed_memory
from dl1.train.state import TrainerState, unwrap
from dl1.train.stopping import EXIT_STOPPED, STOP_SIGNALS, RunStopped, StopSignals

__all__ = ["Trainer", "NonFiniteLossError", "RunStopped", "EXIT_STOPPED", "STOP_SIGNALS", "show_progress",
           "in_notebook"]


class NonFiniteLossError(DL1Error):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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


class Trainer(TrainerState):
    """Fit ``modules`` with ``optimizers``; see the module docstring for the contract."""

    def __init__(self, run: Run, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], *,
                 epochs: int, monitor: str | None = "val/loss", mode: str = "min",
                 schedulers: dict[str, Any] | None = None, clip_grad_norm: float | None = None,
                 patience: int | None = None, device: torch.device | None = None, precision: str = "fp32",
                 extra_state: Callable[[], dict[str, Any]] | None = None, desc: str | None = None,
                 checkpoint_every: int = 1, on_epoch_end: Callable[[int, dict], None] | None = None,
                 max_batches: int = 0, total_steps: int | None = None, resume_mid_epoch: bool = False,
                 compile: bool = False):
        if mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        self.run, self.modules, self.optimizers = run, modules, optimizers
        self.schedulers = schedulers or {}
        self.epochs, self.monitor, self.mode = epochs, monitor, mode
        self.clip_grad_norm, self.patience = clip_grad_norm, patience
        self.device = device or torch.device("cpu")
        if self.device.type == "cpu":
            keep_freed_memory()  # no page faults on every step's tensors (dl1.train.heap)
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
        self.total_steps = total_steps  # optimisation steps the run asks for, when known (a resume past it is refused)
        self.resume_mid_epoch = resume_mid_epoch  # a stop signal saves a mid-epoch checkpoint (see the module doc)
        self.compile = compile  # wrap() returns torch.compile(module) (nanoGPT's --compile)
        self._stops = StopSignals(self.dist, self.device)  # SIGTERM, SIGUSR1: save and stop (dl1.train.stopping)
        self._partial: dict[str, Any] | None = None  # a mid-epoch checkpoint's position, until the epoch resumes
        self._epoch_rng: dict[str, Any] | None = None  # the RNG states before train_batches(epoch) was called
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

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module to run the forward pass through: under torchrun PyTorch's ``DistributedDataParallel`` around
        ``module`` (gradients of its trainable parameters averaged over the ranks during backward), the module itself
        in one process.  Call it once per trainable module, on its device, before ``fit``."""
        wrapped = distributed.wrap(module, self.dist)
        if wrapped is not module:
            self._wrapped.append(wrapped)
        if self.compile:  # around the data-parallel wrapper, as PyTorch recommends; the parameters stay the module's
            wrapped = torch.compile(wrapped)
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

    def _train_epoch(self, batches: Iterable, train_step: Callable[[Any], dict],
                     partial: dict[str, Any] | None = None) -> dict[str, float]:
        from tqdm.auto import tqdm

        for m in self.modules.values():
            m.train()
        totals: dict[str, Any] = {}
        n = 0
        total = len(batches) if hasattr(batches, "__len__") else None
        if self.max_batches:
            total = self.max_batches if total is None else min(total, self.max_batches)
            batches = itertools.islice(batches, self.max_batches)
        batches = iter(batches)
        if partial is not None:  # a mid-epoch checkpoint: the epoch's first batches were trained on before the stop
            n = partial["batch"]
            for _ in range(n):  # drawn exactly as then (the RNG is at the epoch's start), not trained on again
                next(batches)
            totals = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                      for k, v in partial["totals"].items()}
            set_rng_state(partial["rng_now"])  # where the stopped run was after its last step
        bar = tqdm(batches, total=total, initial=n, desc=f"{self.desc} epoch {self.epoch + 1}/{self.epochs}",
                   disable=not show_progress() or not self.dist.is_main, leave=False, dynamic_ncols=True)
        t0, c0 = time.perf_counter(), time.process_time()
        start = n
        try:
            for batch in bar:
                with self.autocast():
                    metrics = train_step(batch)
                for k, v in metrics.items():
                    v = v.detach() if isinstance(v, torch.Tensor) else v
                    totals[k] = totals.get(k, 0.0) + v
                n += 1
                if (total is None or n < total) and self._stops.agreed(n):
                    self._stop_mid_epoch(n, totals)
        finally:
            self.train_time_s += time.perf_counter() - t0
            self.train_cpu_s += time.process_time() - c0
            self.train_batches += n - start
        means = {k: _scalar(v) / max(n, 1) for k, v in totals.items()}
        return distributed.average_metrics({"train": means}, self.device)["train"] if self.dist.enabled else means

    def fit(self, train_batches: Callable[[int], Iterable], train_step: Callable[[Any], dict],
            evaluate: Callable[[int], dict[str, dict[str, Any]]] | None = None,
            resume: str | Path | None = None, resume_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train until ``epochs`` (or early stopping); returns the best epoch and its metrics.  ``resume_state``: the
        checkpoint of ``resume`` when the caller has read it already."""
        if resume:
            self.resume(resume, resume_state)
        if self.dist.enabled:
            self._check_wrapped()
            if not resume:
                self._fold_rank_into_rng()
        stopped_early = False
        previous = self._stops.catch()
        try:
            while self.epoch < self.epochs:
                partial, self._partial = self._partial, None
                if partial is not None:  # the batches are drawn from where the stopped epoch drew them
                    partial["rng_now"] = rng_state()  # the checkpoint's RNG states, loaded by resume()
                    set_rng_state(partial["rng_epoch"])
                self._epoch_rng = rng_state() if self.resume_mid_epoch else None
                train_metrics = self._train_epoch(train_batches(self.epoch), train_step, partial)
                if self._bad is not None and bool(self._bad):  # GPU: a NaN in the epoch's last steps
                    raise NonFiniteLossError(f"loss became non-finite in epoch {self.epoch + 1}; the last good "
                                             f"checkpoint is {self.last_path} (lower --lr or resume with --resume "
                                             f"{self.run.dir})")
                self.epoch += 1
                self.run.log(self.step, "train", {**train_metrics, "lr": self.lr()}, epoch=self.epoch)
                distributed.average_running_stats(unwrap(m) for m in self.modules.values())
                with self.autocast(), torch.no_grad():  # no evaluation builds a graph
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
                stop = self.epoch < self.epochs and self._stops.agreed(0)
                if self.run.enabled and (self.epoch % self.checkpoint_every == 0 or self.epoch == self.epochs or stop):
                    save_checkpoint(self.last_path, state)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self.epoch, results)
                if stop:
                    self._stops.stop(self.run.experiment, self.run.dir, f"after epoch {self.epoch}, step "
                                     f"{self.step}: checkpoint {self.last_path} saved")
                if self.patience is not None and self.bad_epochs >= self.patience:
                    print(f"[{self.run.experiment}] early stop: no improvement of {self.monitor} for "
                          f"{self.bad_epochs} epochs", flush=True)
                    stopped_early = True
                    break
        except KeyboardInterrupt:
            print(f"\n[{self.run.experiment}] interrupted at epoch {self.epoch}; everything up to the last "
                  f"checkpoint is kept. Resume with: --resume {self.run.dir}", file=sys.stderr, flush=True)
            raise
        finally:
            self._stops.restore(previous)
        return {"best_epoch": self.best_epoch, "best_value": self.best_value, "best_metrics": self.best_metrics,
                "epochs_run": self.epoch, "steps": self.step, "stopped_early": stopped_early,
                "train_time_s": round(self.train_time_s, 3), "train_cpu_s": round(self.train_cpu_s, 3),
                "train_batches": self.train_batches}
