"""The read side of a run folder: :class:`RunFolder` (its config, summary, metrics, environment and checkpoints),
and the checks made before one is written (:func:`holds_run`, :func:`check_output_folder`).

Every JSON file is read through :mod:`dl1.run.files` (bounded depth and number size): a cut, binary or hostile file
is one line naming it.  Torch-free.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from dl1.errors import DL1Error, UsageError
from dl1.run.files import read_json_object, read_jsonl_counted

RUN_FILES = ("config.json", "metrics.jsonl", "summary.json")


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


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` already holds a run (its config, metrics, summary or a checkpoint)."""
    folder = Path(folder)
    if any((folder / name).exists() for name in RUN_FILES):
        return True
    checkpoints = folder / "checkpoints"
    return checkpoints.is_dir() and any(checkpoints.iterdir())


def check_output_folder(path: str | Path, flag: str) -> None:
    """Refuse, before anything is created, a folder that cannot be made or written: a file in its place or above it
    (:class:`UsageError`) or a nearest existing folder that is not writable (:class:`DL1Error`)."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:  # exists() is also False below a file
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DL1Error(f"{flag} {path}: {probe} is not writable")


class RunFolder:
    """A run folder as its readers see it (report, replay, export): each file read once, on first use.

    ``config``, ``summary``, ``env`` and :meth:`json` are JSON objects (``{}`` when the file is absent; one-line
    :class:`DL1Error` naming a cut, binary, hostile or non-object file); ``metrics`` the records of
    ``metrics.jsonl`` and ``bad_lines`` how many of its lines are not records; :meth:`checkpoint` the checkpoint
    file (``prefer="best"`` or ``"last"``)."""

    def __init__(self, path: str | Path):
        self.dir = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.dir)!r})"

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def figures(self) -> Path:
        return self.dir / "figures"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    def is_run(self) -> bool:
        """Whether the folder has a ``config.json`` (every run folder has one from its start)."""
        return (self.dir / "config.json").is_file()

    def holds_run(self) -> bool:
        return holds_run(self.dir)

    def json(self, name: str) -> dict[str, Any]:
        """The JSON object in ``name`` (``summary.json``, ``graphs.json``, ...), ``{}`` when it is absent."""
        return read_json_object(self.dir / name)

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        """``config.json``: ``{"experiment": NAME, flag: value, ...}``."""
        return self.json("config.json")

    @property
    def experiment(self) -> str | None:
        name = self.config.get("experiment")
        return name if isinstance(name, str) else None

    @functools.cached_property
    def summary(self) -> dict[str, Any]:
        return self.json("summary.json")

    @functools.cached_property
    def env(self) -> dict[str, Any]:
        return self.json("env.json")

    @functools.cached_property
    def _metrics(self) -> tuple[list[dict[str, Any]], int]:
        return read_jsonl_counted(self.dir / "metrics.jsonl")

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return self._metrics[0]

    @property
    def bad_lines(self) -> int:
        return self._metrics[1]

    def checkpoint(self, prefer: str = "best") -> Path:
        return checkpoint_file(self.dir, prefer=prefer)
