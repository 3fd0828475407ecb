"""``--resume auto``: what a requeued job (SLURM, any scheduler) does with its ``--run_dir``, decided before anything
is loaded.

* the folder is absent, empty, or holds only a lock left by a dead process: start fresh there;
* it holds a checkpoint (``checkpoints/last.pt`` or ``best.pt``): continue that run (as ``--resume RUN_DIR``; the
  checks of an explicit resume follow: same experiment, a readable checkpoint, not fewer epochs than trained);
* it holds a run's records but no checkpoint (a run stopped or killed before its first checkpoint) and no live
  process holds its lock: its partial records are cleared, one line says so, and the run starts fresh;
* a live process holds its lock, or it holds a finished run without a checkpoint: refused with one line.

Torch-free.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from dl1.errors import DL1Error, UsageError
from dl1.run.lock import LOCK_NAME, lock_holder

AUTO = "auto"
# what a run writes in its folder (a folder holding only these, and no checkpoint, is a run that never reached one)
RECORD_FILES = ("config.json", "argv.txt", "env.json", "metrics.jsonl", "samples.txt", "report.md", LOCK_NAME)
RECORD_DIRS = ("checkpoints", "figures", "tensorboard", "synthetic_data", "samples")


def has_checkpoint(folder: Path) -> bool:
    return any((folder / "checkpoints" / name).is_file() for name in ("last.pt", "best.pt"))


def resolve(run_dir: str | Path | None, rank0: bool = True) -> str | None:
    """The ``resume`` value ``--resume auto`` stands for in ``run_dir``: the folder itself (continue) or None (start
    fresh, after clearing a checkpoint-less run's partial records on ``rank0``)."""
    if run_dir is None:
        raise UsageError("--resume auto needs --run_dir DIR: the folder a requeued job continues (or starts in)")
    folder = Path(run_dir)
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise UsageError(f"--run_dir {folder} is a file, not a folder")
    if has_checkpoint(folder):
        return str(folder)
    owner = lock_holder(folder)
    if owner is not None:
        raise DL1Error(f"--resume auto: run folder {folder} is in use by process {owner if owner > 0 else '?'}; "
                       "wait for it to end or choose another folder")
    if (folder / "summary.json").exists():
        raise UsageError(f"--resume auto: {folder} holds a finished run without a checkpoint; choose another folder")
    records = [p for p in (*map(folder.joinpath, RECORD_FILES), *map(folder.joinpath, RECORD_DIRS))
               if p.exists() or p.is_symlink()]
    if rank0 and any(p.name != LOCK_NAME for p in records):
        clear(records)
        print(f"note: --resume auto: {folder} holds no checkpoint (a run stopped before its first one); its partial "
              f"records ({', '.join(sorted(p.name for p in records))}) are cleared and the run starts afresh",
              file=sys.stderr, flush=True)
    return None


def clear(paths: list[Path]) -> None:
    """Remove these records (a link is removed, never followed)."""
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise DL1Error(f"--resume auto: cannot clear {path}: {exc.strerror or exc}") from None
