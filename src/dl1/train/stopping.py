"""Save and stop on a signal: the flag that SIGTERM and SIGUSR1 set, and the step every rank agrees to stop at.

SIGTERM and SIGUSR1 (a SLURM job's time limit or preemption, ``scancel --signal``) mean "save and stop": the current
step finishes, every rank agrees on the step to stop at (an all-reduced flag), the checkpoint ``--resume`` expects is
written (by the trainer, :mod:`dl1.train.state`), one line is printed and the process exits with status 75
(``EXIT_STOPPED``, EX_TEMPFAIL: try again).  SIGINT (Ctrl-C) keeps its meaning: stop now, keep the last checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

import torch

from dl1.train.distributed import DistInfo

EXIT_STOPPED = 75  # EX_TEMPFAIL of sysexits.h: stopped by a signal after saving; resume to continue
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class RunStopped(SystemExit):
    """Raised once a stop signal's checkpoint is written: the process exits with :data:`EXIT_STOPPED` and no
    traceback (rank 0 has printed the one line); a caller of ``fit`` or ``execute`` may catch it."""

    def __init__(self, message: str, signal_name: str):
        super().__init__(EXIT_STOPPED)
        self.message, self.signal_name = message, signal_name


class StopSignals:
    """The stop flag of one training loop: set by the signal handler, read between steps (:meth:`agreed`)."""

    def __init__(self, dist: DistInfo, device: torch.device):
        self.dist, self.device = dist, device
        self.signal = 0  # the stop signal received (0: none); set by the handler, read between steps

    def catch(self) -> dict[int, Any]:
        """Make SIGTERM and SIGUSR1 set the flag that the loop reads between steps (main thread only: elsewhere
        Python cannot install handlers, and they keep their meaning).  Returns the handlers to restore."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}

    @staticmethod
    def restore(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signal = self.signal or int(signum)  # nothing else here: the loop acts between two steps

    def agreed(self, batch: int) -> bool:
        """Whether to stop now.  One process: a signal arrived.  Under torchrun every rank must stop at the same
        step (a rank that stopped alone would leave the others waiting in a collective), so the ranks all-reduce
        their flags (the largest signal number wins) at the same batches: every batch on a CPU, every 10th on a GPU
        (each check is a host sync), and at every epoch's end (``batch`` 0)."""
        if not self.dist.enabled:
            return self.signal != 0
        if batch % (1 if self.device.type == "cpu" else 10):
            return False
        flag = torch.tensor([float(self.signal)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self.signal = int(flag.item())
        return self.signal != 0

    def stop(self, experiment: str, run_dir: Path, where: str) -> NoReturn:
        """Print the one line (rank 0) and leave with :data:`EXIT_STOPPED`."""
        name = signal.Signals(self.signal).name if self.signal in set(STOP_SIGNALS) else "a signal"
        message = (f"[{experiment}] stopped by {name} {where}; continue with --resume {run_dir} "
                   f"(exit status {EXIT_STOPPED})")
        if self.dist.is_main:
            print(message, file=sys.stderr, flush=True)
        raise RunStopped(message, name)
