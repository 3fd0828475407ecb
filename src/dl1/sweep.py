"""``dl1 sweep NAME --grid "key=v1,v2" [--grid ...] [--jobs N] [--sweep_dir DIR] [-- extra flags]``

Runs the product of the grids, one run folder per combination (``SWEEP/key=v1_key2=w1/``), sequentially by default or
in ``--jobs N`` parallel processes.  Flags after ``--`` go to every run (``-- --smoke --epochs 3``); a flag there may
not also be a grid key, and a grid key may be given once.  Combinations whose folder already has ``summary.json`` are
skipped, an interrupted one is resumed when the experiment has a ``resume`` flag, and at the end ``dl1 report SWEEP``
writes one comparison table and a figure of the metric against the swept value.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from dl1 import experiments
from dl1.config import Parser
from dl1.errors import DL1Error, UsageError
from dl1.runtime import check_output_folder, checkpoint_file, holds_run, lock_holder


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


def _run_one(name: str, folder: Path, combo: dict[str, str], extra: list[str], resumable: bool) -> tuple[str, int]:
    argv = [sys.executable, "-m", "dl1", "run", name, "--run_dir", str(folder), *extra]
    for k, v in combo.items():
        argv += [f"--{k}", *v.split()]
    argv += _resume_flags(folder, resumable)
    with open(folder.parent / f"{folder.name}.log", "a") as log:
        code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT)
    return folder.name, code


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
    module = experiments.load(args.name)
    fields = [f.name for f in dataclasses.fields(module.Config)]
    grid = parse_grid(args.grid, fields)
    config_extra, smoke = split_extra(extra, grid)
    combos = combinations(grid)
    for combo in combos:  # validate every combination before starting any
        flags = [x for k, v in combo.items() for x in (f"--{k}", *v.split())]
        experiments.make_config(args.name, [*config_extra, *flags], smoke=smoke)
    sweep_dir = args.sweep_dir or Path("runs") / "sweeps" / f"{args.name}-{datetime.now():%Y%m%d-%H%M%S}"
    check_output_folder(sweep_dir, "--sweep_dir")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(json.dumps({"experiment": args.name, "grid": grid, "extra": extra},
                                                     indent=2))
    todo = [c for c in combos if not (sweep_dir / combo_name(c) / "summary.json").exists()]
    print(f"sweep {args.name}: {len(combos)} runs, {len(combos) - len(todo)} already done, {len(todo)} to run "
          f"({args.jobs} at a time) in {sweep_dir}", flush=True)
    resumable = "resume" in fields
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda c: _run_one(args.name, sweep_dir / combo_name(c), c, extra, resumable), todo))
    failed = [n for n, code in results if code != 0]
    for n, code in results:
        print(f"  {n}: {'ok' if code == 0 else f'FAILED (exit {code}, log {sweep_dir / n}.log)'}")
    from dl1.report.cli import main as report_main

    done = [sweep_dir / combo_name(c) for c in combos if (sweep_dir / combo_name(c) / "summary.json").exists()]
    if done:
        report_main([str(sweep_dir), *(["--metric", args.metric] if args.metric else [])])
    if failed:
        raise DL1Error(f"{len(failed)} of {len(todo)} sweep runs failed: {', '.join(failed)}")
    return 0
