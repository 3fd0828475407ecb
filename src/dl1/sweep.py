"""``dl1 sweep NAME --grid "key=v1,v2" [--grid ...] [--jobs N] [--sweep_dir DIR] [-- extra flags]``

Runs the product of the grids, one run folder per combination (``SWEEP/key=v1_key2=w1/``), sequentially by default or
in ``--jobs N`` parallel processes.  Flags after ``--`` go to every run (``-- --smoke --epochs 3``); a flag there may
not also be a grid key, and a grid key may be given once.  Combinations whose folder already has ``summary.json`` are
skipped, an interrupted one is resumed when the experiment has a ``resume`` flag, and at the end ``dl1 report SWEEP``
writes one comparison table and a figure of the metric against the swept value.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from dl1 import experiments
from dl1.config import Parser
from dl1.errors import DL1Error, UsageError
from dl1.report.cli import main as report_main
from dl1.run.files import open_nofollow, write_text_atomic
from dl1.run.lock import lock_holder
from dl1.run.reader import check_output_folder, checkpoint_file, holds_run


def parse_grid(specs: list[str], valid: list[str]) -> dict[str, list[str]]:
    """``["a=1,2", "b=x"]`` -> ``{"a": ["1", "2"], "b": ["x"]}``; unknown keys name the closest flag."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        if "=" not in spec:
            raise UsageError(f"dl1 sweep: --grid needs KEY=V1,V2,... (got {spec!r})")
        key, values = spec.split("=", 1)
        key = key.strip().lstrip("-")
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            raise UsageError(f"dl1 sweep: unknown flag {key!r}" + (f"; did you mean {close[0]}?" if close else ""))
        if key in grid:
            raise UsageError(f"dl1 sweep: --grid {key} is given twice; list all its values once: --grid {key}=V1,V2")
        grid[key] = [v.strip() for v in values.split(",") if v.strip()]
        if not grid[key]:
            raise UsageError(f"dl1 sweep: --grid {key} has no values")
    return grid


RUN_SWITCHES = ("--smoke", "--tensorboard")  # flags of ``dl1 run`` itself (not of an experiment's config)


def split_extra(extra: list[str], grid: dict[str, list[str]]) -> tuple[list[str], bool]:
    """The config flags among the flags after ``--`` and whether ``--smoke`` is one of them.  A folder flag, or a
    flag that is also a grid key (one of the two values would silently win), is a UsageError."""
    for token in extra:
        name = token.split("=", 1)[0]
        if name in ("--out_dir", "--run_dir"):
            raise UsageError(f"dl1 sweep: {name} cannot be given to the runs of a sweep; each run gets "
                             f"SWEEP/<combination>/ (choose SWEEP with --sweep_dir)")
        key = name[2:].removeprefix("no-") if name.startswith("--") else None
        if key in grid:
            raise UsageError(f"dl1 sweep: --{key} is both a --grid key and a flag after --; give it once")
    return [t for t in extra if t not in RUN_SWITCHES], "--smoke" in extra


def combinations(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def combo_name(combo: dict[str, str]) -> str:
    return "_".join(f"{k}={v}" for k, v in combo.items()).replace("/", "-")


def folder_names(combos: list[dict[str, str]]) -> list[str]:
    """One folder name per combination, injective: where sanitising (``/`` -> ``-``) gives two combinations one name
    (``dA/t.txt`` and ``dA-t.txt``; also names equal but for case, one folder on some file systems), each of them
    gets a short hash of its exact values.  Checked before the first run starts."""
    names = [combo_name(c) for c in combos]
    groups: dict[str, int] = {}
    for name in names:
        groups[name.casefold()] = groups.get(name.casefold(), 0) + 1
    names = [f"{name}-{_short_hash(c)}" if groups[name.casefold()] > 1 else name for name, c in zip(names, combos)]
    seen: dict[str, dict[str, str]] = {}
    for name, combo in zip(names, combos):
        other = seen.setdefault(name.casefold(), combo)
        if other is not combo:
            raise UsageError(f"dl1 sweep: grid values {other} and {combo} would share the run folder {name}; "
                             f"give each value once")
    return names


def _short_hash(combo: dict[str, str]) -> str:
    """8 hex digits of SHA-256 over the combination's exact keys and values."""
    return hashlib.sha256(json.dumps(sorted(combo.items())).encode()).hexdigest()[:8]


def _resume_flags(folder: Path, resumable: bool) -> list[str]:
    """``--resume FOLDER`` for an interrupted run with a checkpoint.  An unfinished run that cannot be continued is
    moved to ``SWEEP/.failed/`` (kept, out of the report) so that the combination starts afresh in its folder."""
    if not holds_run(folder) or lock_holder(folder) is not None:  # a folder in use: its run refuses it
        return []
    if resumable:
        try:
            checkpoint_file(folder, prefer="last")
            return ["--resume", str(folder)]
        except DL1Error:
            pass
    aside = folder.parent / ".failed" / f"{folder.name}-{datetime.now():%Y%m%d-%H%M%S}"
    aside.parent.mkdir(exist_ok=True)
    folder.rename(aside)
    print(f"  {folder.name}: the unfinished run without a checkpoint moved to {aside}", flush=True)
    return []


BUSY = -1000  # the result of a combination whose folder another live process holds (an earlier sweep's run)


class Jobs:
    """The runs a sweep has started, each in its own process group.  A SIGTERM (SIGINT, SIGHUP) to the sweep is
    forwarded to every running run's group (each saves what it has and stops), no new run starts, and the sweep ends
    once they have: rerunning it then continues them.  Without this a SIGTERM to the sweep orphaned its run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.signal: int | None = None  # the signal that stopped the sweep

    def forward(self, signum: int, frame: object = None) -> None:
        with self.lock:  # taken only by the worker threads, never by the main thread this handler runs in
            self.signal = signum
            for proc in list(self.running):
                _signal_group(proc, signum)

    def run(self, argv: list[str], log_path: Path) -> int | None:
        """The exit status of ``argv`` (stdout and stderr appended to ``log_path``); None if the sweep was stopped
        before it started."""
        with self.lock:
            if self.signal is not None:
                return None
            with open_nofollow(log_path, "a") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self.running.add(proc)
        try:
            return proc.wait()
        finally:
            with self.lock:
                self.running.discard(proc)

    @contextlib.contextmanager
    def forwarding(self):
        """Forward SIGTERM, SIGINT and SIGHUP while the block runs (in the main thread only: signals are its to
        handle; the runs sit in their own process groups, so a terminal's Ctrl-C or hang-up reaches them only so)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = [getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n)]
        previous = {sig: signal.signal(sig, self.forward) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):  # it has just ended
        pass


def _run_one(jobs: Jobs, name: str, folder: Path, combo: dict[str, str], extra: list[str],
             resumable: bool) -> tuple[str, int | None]:
    if jobs.signal is not None:  # the sweep is stopping: leave the folder as it is
        return folder.name, None
    holder = lock_holder(folder) if folder.is_dir() else None
    if holder is not None:  # an earlier sweep's run still at work in this folder: leave it to finish
        print(f"  {folder.name}: still running in process {holder}; not started again", flush=True)
        return folder.name, BUSY
    argv = [sys.executable, "-m", "dl1", "run", name, "--run_dir", str(folder), *extra]
    for k, v in combo.items():
        argv += [f"--{k}", *v.split()]
    argv += _resume_flags(folder, resumable)
    return folder.name, jobs.run(argv, folder.parent / f"{folder.name}.log")


def _outcome(code: int | None, log: Path, stopped: bool) -> str:
    if code == 0:
        return "ok"
    if code is None:
        return "not started (the sweep was stopped)"
    if code == BUSY:
        return "still running in another process (rerun the sweep when it ends)"
    if stopped:
        return f"stopped (exit {code}, log {log}); rerun the sweep to continue it"
    return f"FAILED (exit {code}, log {log})"


def _key(combo: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(combo.items())


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = Parser(prog="dl1 sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="experiment name (dl1 list)")
    parser.add_argument("--grid", action="append", required=True, help='"flag=v1,v2,..." (repeatable)')
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (default: 1, sequential)")
    parser.add_argument("--sweep_dir", type=Path, default=None,
                        help="folder of the sweep (default: runs/sweeps/NAME-<timestamp>); reuse it to skip done runs")
    parser.add_argument("--metric", default=None, help="summary key to plot against the first swept flag")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise UsageError("dl1 sweep: --jobs must be >= 1")
    entry = experiments.load(args.name)  # its registry entry: the flags are its Config's fields
    fields = [f.name for f in dataclasses.fields(entry.Config)]
    grid = parse_grid(args.grid, fields)
    config_extra, smoke = split_extra(extra, grid)
    combos = combinations(grid)
    for combo in combos:  # validate every combination before starting any
        flags = [x for k, v in combo.items() for x in (f"--{k}", *v.split())]
        experiments.make_config(args.name, [*config_extra, *flags], smoke=smoke)
    folders = dict(zip(map(_key, combos), folder_names(combos)))  # injective, checked before any run starts
    sweep_dir = args.sweep_dir or Path("runs") / "sweeps" / f"{args.name}-{datetime.now():%Y%m%d-%H%M%S}"
    check_output_folder(sweep_dir, "--sweep_dir")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep_dir / "sweep.json", json.dumps({"experiment": args.name, "grid": grid, "extra": extra},
                                                           indent=2), root=sweep_dir)  # never through a link
    todo = [c for c in combos if not (sweep_dir / folders[_key(c)] / "summary.json").exists()]
    print(f"sweep {args.name}: {len(combos)} runs, {len(combos) - len(todo)} already done, {len(todo)} to run "
          f"({args.jobs} at a time) in {sweep_dir}", flush=True)
    resumable = "resume" in fields
    jobs = Jobs()
    with jobs.forwarding(), ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda c: _run_one(jobs, args.name, sweep_dir / folders[_key(c)], c, extra,
                                                   resumable), todo))
    for n, code in results:
        print(f"  {n}: {_outcome(code, sweep_dir / f'{n}.log', jobs.signal is not None)}", flush=True)
    if jobs.signal is not None:
        print(f"dl1 sweep: stopped by {signal.Signals(jobs.signal).name} (forwarded to its running runs, which have "
              f"ended); rerun the same command to continue", file=sys.stderr, flush=True)
        return 128 + jobs.signal
    failed = [n for n, code in results if code not in (0, BUSY)]
    busy = [n for n, code in results if code == BUSY]

    done = [sweep_dir / folders[_key(c)] for c in combos if (sweep_dir / folders[_key(c)] / "summary.json").exists()]
    if done:
        report_main([str(sweep_dir), *(["--metric", args.metric] if args.metric else [])])
    if busy and not failed:
        raise DL1Error(f"{len(busy)} of {len(todo)} sweep runs are still running in other processes: "
                       f"{', '.join(busy)}; rerun the sweep when they end")
    if failed:
        raise DL1Error(f"{len(failed)} of {len(todo)} sweep runs failed: {', '.join(failed)}")
    return 0
