"""The run folder a run writes: :class:`Run`.

A run folder ``runs/<experiment>/<timestamp>/`` holds ``config.json`` (every flag's value: ``dl1 run NAME --config``
replays it), ``argv.txt`` (the command as typed, one line per start), ``env.json`` (versions, device, threads, the
git commit of a dl1 checkout), ``metrics.jsonl`` (one JSON line per logged step and split), ``summary.json``,
``figures/`` and ``checkpoints/``.  ``metrics.jsonl`` is the only record of the run's numbers: figures and reports
are computed from it (:class:`dl1.run.reader.RunFolder`).  With ``tensorboard=True`` the same numbers also go to
``tensorboard/`` (:mod:`dl1.run.tensorboard`).

While a process writes a run folder it holds ``run.lock`` there (:mod:`dl1.run.lock`).  A run folder that already
holds a run is continued, never overwritten: its ``config.json``, ``env.json`` and ``argv.txt`` are rewritten (and
``metrics.jsonl`` cut back to the checkpoint's step) only after the checkpoint has been read and loaded
(:meth:`Run.commit`).  Opening a folder removes the partial files a killed writer left (``.NAME.PID.HEX.tmp``), with a
note.  Nothing is written through a symbolic link (:mod:`dl1.run.files`): a link among the folder's files, or in
``figures/`` and ``checkpoints/``, is refused with one line before any work.  A fresh run that cannot make its folder
or write its first records (a full disk) is one line and leaves no folder behind, so that the same command can be
run again once there is space.

The run learns its device from whoever chose it (``device = run.device = choose_device(cfg.device)``) and the facts
of a joined process group from whoever joined it (``distributed=``): both go to ``env.json``.
"""

from __future__ import annotations

import atexit
import json
import shlex
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from dl1.errors import DL1Error, first_line
from dl1.run import tensorboard as tb
from dl1.run.env import env_info, now
from dl1.run.files import (
    append_text,
    jsonable,
    read_jsonl,
    remove_stale_temporaries,
    safe_path,
    write_json,
    write_text_atomic,
)
from dl1.run.lock import RunLock
from dl1.run.reader import holds_run


def _format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Run:
    """One run folder; every experiment logs through ``log`` and ends with ``finish``.

    ``enabled=False`` (non-zero distributed ranks) keeps everything in memory and writes nothing.  A folder that
    already holds a run (``resumed``) is left as it is until :meth:`commit`, which the Trainer calls once the
    checkpoint has been loaded (and which ``log``, ``save_json`` and ``finish`` call first).  ``close()`` releases
    the folder's lock (also done at exit).  ``device`` (set by whoever chose it) and ``distributed`` (the joined
    process group's facts) are what ``env.json`` records.  ``resume_from``: ``(path, checkpoint)``, the checkpoint a
    continued run resumes from, read once before the run was opened and handed on by :meth:`resume_state`.
    """

    def __init__(self, experiment: str, config: dict[str, Any] | None = None, root: str | Path = "runs",
                 argv: list[str] | None = None, directory: str | Path | None = None, enabled: bool = True,
                 quiet: bool = False, tensorboard: bool = False, device: Any = None,
                 distributed: dict[str, Any] | None = None, resume_from: tuple[str | Path, Any] | None = None):
        self.experiment = experiment
        self.enabled = enabled
        self.quiet = quiet
        self.device = device
        self.distributed = dict(distributed or {})
        self._resume_from = resume_from  # (path, checkpoint) read already by whoever opened the run
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
        self.resumed = holds_run(self.dir)
        self._config, self._argv, self._tensorboard = config, argv, tensorboard
        self._records: list[dict[str, Any]] = []
        self._scratch: Path | None = None  # synthetic_dir() of a rank that writes no run folder
        self._made: list[Path] = []        # what this Run created, newest last (removed by discard())
        self._made_root: Path | None = None  # the outermost folder it created
        self._committed = False
        self._lock = RunLock(self.dir)
        self._tb = None
        self._t0 = time.time()
        self._env: dict[str, Any] = {}
        if enabled:
            self._make_folder()
            try:
                try:
                    self._lock.acquire()
                    self._remove_partial_files()
                    self._records = read_jsonl(self.dir / "metrics.jsonl")
                    if not self.resumed:
                        self.commit()
                except OSError as exc:  # a full disk, a folder that turned read-only: one line
                    raise DL1Error(f"cannot write run folder {self.dir}: {first_line(exc)}") from None
            except BaseException:
                self.discard()  # a fresh run that could not write its first files leaves no folder behind
                self.close()  # a refused continued run: its lock is released at once
                raise

    def _make_folder(self) -> None:
        missing = self.dir
        while not missing.parent.exists() and missing.parent != missing.parent.parent:
            missing = missing.parent
        try:
            if not self.dir.exists():
                self._made_root = missing
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if self._made_root is not None:  # the parents it made before the disk ran full: gone again
                self._remove_empty_parents(self.dir)
            raise DL1Error(f"cannot create run folder {self.dir}: {first_line(exc)}") from None

    def _remove_empty_parents(self, folder: Path) -> None:
        """Remove ``folder`` and its parents up to the outermost one this Run made, while they are empty."""
        assert self._made_root is not None
        while True:
            try:
                folder.rmdir()
            except OSError:
                return
            if folder == self._made_root or folder.parent == folder:
                return
            folder = folder.parent

    def _check_links(self) -> None:
        """Refuse (one line), before any work, a symbolic link among the run folder's files or in ``figures/`` and
        ``checkpoints/``: a link planted there (``samples.txt`` -> a file elsewhere) would redirect a later write."""
        for folder in (self.dir, safe_path(self.dir, "figures"), safe_path(self.dir, "checkpoints")):
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    safe_path(self.dir, path.relative_to(self.dir))

    def _remove_partial_files(self) -> None:
        """Remove what a killed writer left half-written (this process holds the lock: nobody else writes here)."""
        self._check_links()
        removed = remove_stale_temporaries(self.dir, self.checkpoints)
        if removed:
            names = ", ".join(str(p.relative_to(self.dir)) for p in removed)
            print(f"note: removed {len(removed)} partial file(s) a killed writer left in {self.dir}: {names}",
                  file=sys.stderr, flush=True)

    def _new(self, path: Path) -> Path:
        if not path.exists():
            self._made.append(path)
        return path

    def commit(self) -> None:
        """Write ``config.json``, ``argv.txt`` and ``env.json`` (a continued run: once its checkpoint is loaded)."""
        if self._committed or not self.enabled:
            return
        self._committed = True
        for folder in (self.figures, self.checkpoints):
            self._new(safe_path(self.dir, folder.name)).mkdir(parents=True, exist_ok=True)
        if self._config is not None:
            self._write_json(self._new(self.dir / "config.json"), {"experiment": self.experiment, **self._config})
        argv = self._argv if self._argv is not None else sys.argv
        append_text(self._new(self.dir / "argv.txt"), shlex.join(argv) + "\n", self.dir)
        self._env = env_info(device=self._device(), distributed=self.distributed)
        self._write_json(self._new(self.dir / "env.json"), self._env)
        if self._tensorboard:  # optional TensorBoard event files beside metrics.jsonl
            self._tb = tb.open_writer(self._new(safe_path(self.dir, "tensorboard")))

    def _write_json(self, path: Path, obj: Any) -> None:
        write_json(path, obj, root=self.dir)

    def _device(self, summary: dict[str, Any] | None = None) -> str:
        """The run's device: what its summary says, else the one the run was told, else the CPU."""
        if summary and isinstance(summary.get("device"), str):
            return summary["device"]
        return str(self.device) if self.device is not None else "cpu"

    def recorded(self) -> bool:
        """Whether the folder holds anything of this run's work (a metric line, a checkpoint, a figure, a summary)."""
        files = (self.dir / "metrics.jsonl", self.dir / "summary.json")  # empty: a write that a full disk refused
        return any(p.is_file() and p.stat().st_size > 0 for p in files) or any(
            d.is_dir() and any(d.iterdir()) for d in (self.checkpoints, self.figures))

    def discard(self) -> bool:
        """Remove what this Run wrote if it recorded nothing (it failed before its first log or checkpoint): the
        folder itself when it made it.  A continued or a non-writing run is never touched.  True if removed."""
        if not self.enabled or self.resumed or self.recorded():
            return False
        self.close()
        if self._made_root is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.dir != self._made_root:
                self._remove_empty_parents(self.dir.parent)  # the empty parents it made
            return True
        for path in reversed(self._made):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return True

    def close(self) -> None:
        """Release the run folder's lock and flush TensorBoard; the Run still answers ``metrics()``."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self._lock.release()

    # -- logging ---------------------------------------------------------------------------------------------------
    def log(self, step: int, split: str, metrics: dict[str, Any], **extra: Any) -> None:
        """Append one line ``{"step", "split", **extra, **metrics}`` to metrics.jsonl and print it."""
        record = {"step": int(step), "split": split, **jsonable(extra), **jsonable(metrics),
                  "time": round(time.time() - self._t0, 3)}
        self._records.append(record)
        if self.enabled:
            self.commit()
            append_text(self.dir / "metrics.jsonl", json.dumps(record) + "\n", self.dir)
        if self._tb is not None:
            tb.add_record(self._tb, record, metrics, extra)
        if not self.quiet:
            shown = " ".join(f"{k}={_format_value(v)}" for k, v in record.items() if k not in ("split", "time"))
            print(f"[{self.experiment}] {split:>5} {shown}", flush=True)

    def log_image(self, tag: str, image: Any, step: int) -> None:
        """Show an image in TensorBoard's images tab (with ``--tensorboard``; otherwise nothing happens): a uint8 (or
        [0, 1] float) array, ``(H, W)`` grey or ``(H, W, 3)`` colour.  The run folder keeps its own record of it."""
        if self._tb is not None:
            tb.add_image(self._tb, tag, image, step)

    def metrics(self, split: str | None = None) -> list[dict[str, Any]]:
        """Records logged so far (optionally of one split)."""
        return [r for r in self._records if split is None or r["split"] == split]

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (used when resuming from a checkpoint taken at ``step``); commits a
        continued run first."""
        self._records = [r for r in self._records if r["step"] <= step]
        if self.enabled:
            self.commit()
            path = self.dir / "metrics.jsonl"
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in self._records), root=self.dir)

    def resume_state(self, path: str | Path) -> Any | None:
        """The checkpoint at ``path`` when whoever opened this run read it already (``resume_from``:
        :func:`dl1.experiments.execute` reads a continued run's checkpoint once, to check it before anything is
        written), handed on once; None otherwise (the caller then reads the file)."""
        if self._resume_from is None or Path(self._resume_from[0]).resolve() != Path(path).resolve():
            return None
        state, self._resume_from = self._resume_from[1], None
        return state

    # -- files -----------------------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.dir / name

    def synthetic_dir(self) -> Path:
        """Where a smoke run writes its tiny fake data files: ``synthetic_data/`` in the run folder; on a torchrun
        rank other than 0 (which writes nothing in the run folder) a temporary folder of its own, removed when the
        process ends (the files are seeded: every rank writes the same ones)."""
        if self.enabled:
            return safe_path(self.dir, "synthetic_data")
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="dl1-synthetic-"))
            atexit.register(shutil.rmtree, self._scratch, ignore_errors=True)
        return self._scratch

    def figure_path(self, name: str) -> Path:
        """``figures/name``, refused (one line) when it or ``figures`` is a symbolic link."""
        return safe_path(self.dir, Path("figures") / name)

    def save_json(self, name: str, obj: Any) -> Path:
        path = self.dir / name
        if self.enabled:
            self.commit()
            self._write_json(safe_path(self.dir, name), obj)
        return path

    def finish(self, **sections: Any) -> dict[str, Any]:
        """Write ``summary.json`` (the run's final numbers) and return it."""
        summary = {"experiment": self.experiment, "run_dir": str(self.dir),
                   "wall_time_s": round(time.time() - self._t0, 2), **jsonable(sections)}
        if self.enabled:
            self.commit()
            self._write_json(self.dir / "summary.json", summary)
            # the device and threads are known now (torch is imported inside the experiment)
            self._write_json(self.dir / "env.json", {**env_info(self._device(summary), self.distributed),
                                                    "time": self._env.get("time"), "finished": now()})
        if self._tb is not None:
            tb.add_final(self._tb, self._config or {}, summary)
        if not self.quiet:
            print(f"[{self.experiment}] done: {self.dir}/summary.json", flush=True)
        return summary
