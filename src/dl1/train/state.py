"""What a trainer's checkpoint holds, and how a run continues from one.

``last.pt`` holds the modules, optimisers, schedulers, gradient scaler, epoch, step, best value and metrics, patience
counter, the RNG states (every rank's, under torchrun) and the experiment's ``extra_state``; ``best.pt`` the modules and
the best metrics.  A stop signal (:mod:`dl1.train.stopping`) inside an epoch of a trainer made with
``resume_mid_epoch=True`` (an experiment whose batches of an epoch are a pure function of the epoch and the RNG state at
its start, and whose other per-step state is in ``extra_state``: GPT) adds a ``partial`` record (the batch reached, the
epoch's running sums, the RNG states at the epoch's start and now), from which a resume continues exactly; any other
trainer stops at the step and resumes from its last epoch checkpoint (that epoch's steps are redone, exactly).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dl1.errors import DL1Error, UsageError, first_line
from dl1.run.folder import Run
from dl1.run.reader import checkpoint_file
from dl1.train import distributed
from dl1.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from dl1.train.distributed import DistInfo
from dl1.train.stopping import StopSignals


def unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # a DistributedDataParallel given by a caller keeps the model in .module


class TrainerState:
    """The checkpoint side of :class:`dl1.train.engine.Trainer`: saving, loading and resuming its state.  Mixed into
    the trainer, whose constructor sets the attributes below."""

    run: Run
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    scaler: torch.amp.GradScaler
    dist: DistInfo
    device: torch.device
    epochs: int
    total_steps: int | None
    extra_state: Any
    resume_mid_epoch: bool
    epoch: int
    step: int
    best_value: float | None
    best_epoch: int | None
    best_metrics: dict[str, Any]
    bad_epochs: int
    _partial: dict[str, Any] | None
    _epoch_rng: dict[str, Any] | None
    _stops: StopSignals

    @property
    def last_path(self) -> Path:
        return self.run.checkpoints / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run.checkpoints / "best.pt"

    def state_dict(self) -> dict[str, Any]:
        state = {
            "modules": {k: unwrap(m).state_dict() for k, m in self.modules.items()},
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
            unwrap(m).load_state_dict(state["modules"][k])
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
        self._partial = self._own_partial(state.get("partial"))
        if restore_rng and "rng" in state:
            ranks = state.get("rng_ranks") or []
            if len(ranks) == self.dist.world_size:
                set_rng_state(ranks[self.dist.rank])
            else:  # saved with another number of ranks: rank 0's stream, and a stream of its own on every other rank
                set_rng_state(state["rng"])
                self._fold_rank_into_rng()

    def resume(self, source: str | Path, state: dict[str, Any] | None = None) -> None:
        """Continue from a checkpoint file or a run folder (its ``checkpoints/last.pt``, else ``best.pt``), or from
        ``state``, that checkpoint already read by the caller (the file is then not read again).  The run folder is
        committed (config, env, argv written; metrics cut back to the checkpoint's step) only after the checkpoint
        has been loaded, so a checkpoint that does not fit changes nothing."""
        path = checkpoint_file(source, prefer="last")
        if state is None:  # read once already when the run was opened (dl1.experiments checks it before writing)
            state = self.run.resume_state(path)
        try:
            self.load_state_dict(load_checkpoint(path, map_location=self.device) if state is None else state)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise DL1Error(f"cannot resume from {path}: it does not fit this model/optimiser (were different "
                           f"size flags used?): {first_line(exc)}") from None
        self._check_not_past_the_end(path)
        self.run.truncate_after(self.step)
        print(f"[{self.run.experiment}] resumed from {path} at epoch {self.epoch}, step {self.step}", flush=True)

    def _check_not_past_the_end(self, path: Path) -> None:
        """Refuse (exit 2, the run folder unchanged) to resume a checkpoint that has trained more epochs or steps than
        this run asks for: it would end as "done" with a config that records the smaller count."""
        over_steps = self.total_steps is not None and self.step > self.total_steps
        if self.epoch > self.epochs or over_steps:
            asked = f"{self.total_steps} steps" if over_steps else f"{self.epochs} epochs"
            raise UsageError(f"cannot resume from {path}: it has trained {self.epoch} epoch(s), {self.step} "
                             f"optimisation step(s), more than the {asked} asked for now (give at least as many)")

    def _own_partial(self, partial: Any) -> dict[str, Any] | None:
        """This rank's share of a mid-epoch checkpoint's ``partial`` record (None for an epoch-end checkpoint, or for
        one saved with another number of ranks, whose streams cannot continue exactly: its epoch restarts)."""
        if not isinstance(partial, dict):
            return None
        ranks = partial.get("ranks") or []
        if len(ranks) != self.dist.world_size:
            print(f"[{self.run.experiment}] note: the checkpoint stopped inside epoch {self.epoch + 1} with "
                  f"{len(ranks)} rank(s); with {self.dist.world_size} that epoch restarts from its beginning",
                  file=sys.stderr, flush=True)
            return None
        return {"batch": int(partial["batch"]), **ranks[self.dist.rank]}

    def load_best(self) -> dict[str, Any]:
        """Load the best checkpoint's weights into the modules (the last ones if none was saved).  Under torchrun
        rank 0 reads the file and sends the weights to the others (no other node needs the run folder)."""
        state: dict[str, Any] = {}
        if self.dist.is_main:
            path = self.best_path if self.best_path.exists() else self.last_path
            if path.exists():
                state = load_checkpoint(path, map_location=self.device)
                for k, m in self.modules.items():
                    unwrap(m).load_state_dict(state["modules"][k])
        if self.dist.enabled:
            distributed.broadcast_modules(unwrap(m) for m in self.modules.values())
        return state

    def _fold_rank_into_rng(self) -> None:
        """Give every rank but 0 a random stream of its own (dropout masks, noise, prior samples differ per rank, as
        its data does); rank 0 keeps the stream a single process would have."""
        if self.dist.rank > 0:
            seed = (torch.initial_seed() + 1_000_003 * self.dist.rank) % 2**63
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)

    def _stop_mid_epoch(self, batch: int, totals: dict[str, Any]) -> None:
        """Stop after ``batch`` batches of the current epoch: save a mid-epoch ``last.pt`` when the experiment can
        continue from one exactly, else keep the last epoch checkpoint (that epoch's steps are then redone)."""
        if not self.resume_mid_epoch:
            kept = self.last_path if self.last_path.exists() else None
            where = f"the checkpoint of epoch {self.epoch} ({kept})" if kept else "no checkpoint yet (it starts afresh)"
            self._stops.stop(self.run.experiment, self.run.dir,
                             f"in epoch {self.epoch + 1} after {batch} batch(es): a resume continues from {where}")
        own = {"totals": {k: v.detach().cpu() if isinstance(v, torch.Tensor) else float(v) for k, v in totals.items()},
               "rng_epoch": self._epoch_rng}
        state = self.state_dict()  # on every rank: its collectives (RNG streams, the experiment's extra state)
        state["partial"] = {"batch": batch, "ranks": distributed.gather(own)}
        if self.run.enabled:
            save_checkpoint(self.last_path, state)
        self._stops.stop(self.run.experiment, self.run.dir, f"in epoch {self.epoch + 1} after {batch} batch(es), "
                         f"step {self.step}: checkpoint {self.last_path} saved")
