"""Seeding, device choice, environment capture and the run folder (``Run``).

A run folder ``runs/<experiment>/<timestamp>/`` holds ``config.json``, ``argv.txt``, ``env.json``, ``metrics.jsonl``
(one JSON line per logged step and split), ``summary.json``, ``figures/`` and ``checkpoints/``.  ``metrics.jsonl`` is
the only record of the run's numbers: figures and reports are computed from it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dl1.errors import DL1Error


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if imported) torch, CPU and CUDA."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)


def choose_device(preference: str = "auto"):
    """The torch device to use: ``auto`` picks CUDA, then MPS, then CPU."""
    import torch

    if preference != "auto":
        if preference.startswith("cuda") and not torch.cuda.is_available():
            raise DL1Error(f"device {preference!r} requested but CUDA is not available on this machine")
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def env_info() -> dict[str, Any]:
    """Versions, thread counts and devices: written to ``env.json`` of every run."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "time": datetime.now().isoformat(timespec="seconds"),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                                           "HF_HUB_OFFLINE", "TORCH_HOME", "DL1_DATA") if k in os.environ},
    }
    if "torch" in sys.modules:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
            info["cuda_version"] = torch.version.cuda
    try:
        import dl1

        info["dl1"] = dl1.__version__
    except Exception:  # pragma: no cover
        pass
    return info


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and hasattr(value, "numel") and value.numel() == 1:  # torch scalar tensor
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (a truncated last line is ignored)."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def checkpoint_file(source: str | Path, prefer: str = "best") -> Path:
    """The checkpoint a path names: a file as it is; a run folder's ``checkpoints/best.pt`` then ``last.pt``
    (``prefer="last"``, for resuming: ``last.pt`` then ``best.pt``).  Raises :class:`DL1Error` when there is none."""
    path = Path(source)
    if path.is_file():
        return path
    if not path.exists():
        raise DL1Error(f"checkpoint not found: {path}")
    order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
    for folder in (path / "checkpoints", path):
        for name in order:
            if (folder / name).is_file():
                return folder / name
    raise DL1Error(f"no checkpoint in {path} (looked for checkpoints/{order[0]} and checkpoints/{order[1]})")


def _format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Run:
    """One run folder; every experiment logs through ``log`` and ends with ``finish``.

    ``enabled=False`` (non-zero distributed ranks) keeps everything in memory and writes nothing.
    """

    def __init__(self, experiment: str, config: dict[str, Any] | None = None, root: str | Path = "runs",
                 argv: list[str] | None = None, directory: str | Path | None = None, enabled: bool = True,
                 quiet: bool = False, tensorboard: bool = False):
        self.experiment = experiment
        self.enabled = enabled
        self.quiet = quiet
        self.resumed = directory is not None and Path(directory).exists()
        if directory is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            directory = Path(root) / experiment / stamp
            n = 1
            while directory.exists():
                n += 1
                directory = Path(root) / experiment / f"{stamp}-{n}"
        self.dir = Path(directory)
        self.figures = self.dir / "figures"
        self.checkpoints = self.dir / "checkpoints"
        self._records: list[dict[str, Any]] = []
        if enabled:
            self.figures.mkdir(parents=True, exist_ok=True)
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            if config is not None:
                write_json(self.dir / "config.json", {"experiment": experiment, **config})
            with open(self.dir / "argv.txt", "a") as fh:
                fh.write(" ".join(argv if argv is not None else sys.argv) + "\n")
            write_json(self.dir / "env.json", env_info())
            self._records = read_jsonl(self.dir / "metrics.jsonl")
        self._t0 = time.time()
        self._tb = None
        if tensorboard and enabled:  # optional TensorBoard event files beside metrics.jsonl
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"))

    # -- logging ---------------------------------------------------------------------------------------------------
    def log(self, step: int, split: str, metrics: dict[str, Any], **extra: Any) -> None:
        """Append one line ``{"step", "split", **extra, **metrics}`` to metrics.jsonl and print it."""
        record = {"step": int(step), "split": split, **_jsonable(extra), **_jsonable(metrics),
                  "time": round(time.time() - self._t0, 3)}
        self._records.append(record)
        if self.enabled:
            with open(self.dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("step", "time"):
                    self._tb.add_scalar(f"{split}/{k}", v, record["step"])
            self._tb.flush()
        if not self.quiet:
            shown = " ".join(f"{k}={_format_value(v)}" for k, v in record.items() if k not in ("split", "time"))
            print(f"[{self.experiment}] {split:>5} {shown}", flush=True)

    def metrics(self, split: str | None = None) -> list[dict[str, Any]]:
        """Records logged so far (optionally of one split)."""
        return [r for r in self._records if split is None or r["split"] == split]

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (used when resuming from a checkpoint taken at ``step``)."""
        self._records = [r for r in self._records if r["step"] <= step]
        if self.enabled:
            path = self.dir / "metrics.jsonl"
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self._records))
            os.replace(tmp, path)

    # -- files -----------------------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.dir / name

    def figure_path(self, name: str) -> Path:
        return self.figures / name

    def save_json(self, name: str, obj: Any) -> Path:
        path = self.dir / name
        if self.enabled:
            write_json(path, obj)
        return path

    def finish(self, **sections: Any) -> dict[str, Any]:
        """Write ``summary.json`` (the run's final numbers) and return it."""
        summary = {"experiment": self.experiment, "run_dir": str(self.dir),
                   "wall_time_s": round(time.time() - self._t0, 2), **_jsonable(sections)}
        if self.enabled:
            write_json(self.dir / "summary.json", summary)
        if not self.quiet:
            print(f"[{self.experiment}] done: {self.dir}/summary.json", flush=True)
        return summary
