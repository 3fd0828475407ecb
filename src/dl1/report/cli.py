"""``dl1 report RUN_DIR... [--out FILE] [--metric KEY]``: rebuild each run's figures and report.md from its folder;
with several runs (or a sweep folder) also write one comparison: every run's numbers (no column dropped) and, where
the runs allow, the course's robustness table (clean vs noisy top-1 of zero-shot CLIP, the ResNet-18 probe, visual and
deep prompts, beside the reference solution's numbers), the visual- and deep-prompt figures and the 110-way
cross-dataset table (the tables are printed too).

A run whose ``config.json`` or ``summary.json`` is cut or not JSON is skipped with a one-line warning and the others
are reported (exit status 1 when any was skipped); a single such run is a one-line error.  Lines of ``metrics.jsonl``
that are not records are left out, with a warning."""

from __future__ import annotations

import sys
from pathlib import Path

from dl1.config import Parser
from dl1.errors import DL1Error, UsageError, first_line
from dl1.experiments import EXPERIMENTS
from dl1.report.runs import compare_runs, is_run_dir, read_json_file, read_run, write_run_report


def _find_runs(folders: list[Path]) -> tuple[list[Path], list[str] | None, Path | None]:
    """Run folders named or found below the arguments (hidden folders, such as a sweep's ``.failed``, excluded),
    the swept flags and the sweep folder."""
    runs, swept, sweep_dir = [], None, None
    for d in folders:
        if not d.is_dir():
            raise UsageError(f"dl1 report: {d} is not a folder")
        if is_run_dir(d):
            runs.append(d)
            continue
        children = sorted(c.parent for c in d.rglob("config.json")
                          if not any(part.startswith(".") for part in c.relative_to(d).parts))
        if not children:
            raise UsageError(f"dl1 report: {d} holds no run folder (no config.json)")
        runs += children
        if (d / "sweep.json").exists():
            try:
                grid = read_json_file(d / "sweep.json").get("grid")
                swept, sweep_dir = list(grid), d
            except (DL1Error, TypeError) as exc:
                print(f"dl1 report: warning: {d / 'sweep.json'} ignored: {first_line(exc)}", file=sys.stderr)
    return runs, swept, sweep_dir


def _report(run_dir: Path) -> Path:
    try:
        run = read_run(run_dir)
        if run["bad_lines"]:
            print(f"dl1 report: warning: {run_dir / 'metrics.jsonl'}: {run['bad_lines']} line(s) that are not "
                  f"records left out", file=sys.stderr)
        entry = EXPERIMENTS.get(str(run["config"].get("experiment")))  # its figures, as its registry entry says
        return write_run_report(run_dir, run, figures=entry.figures if entry else None)
    except OSError as exc:
        raise DL1Error(f"cannot write the report of {run_dir}: {first_line(exc)}") from None


def main(argv: list[str]) -> int:
    parser = Parser(prog="dl1 report", description=__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders, or a folder of runs (e.g. a sweep)")
    parser.add_argument("--out", type=Path, default=None,
                        help="comparison file (default: SWEEP/report.md for a sweep, else ./comparison.md)")
    parser.add_argument("--metric", default=None, help="summary key plotted against the swept value, e.g. test.acc")
    args = parser.parse_args(argv)
    runs, swept, sweep_dir = _find_runs(args.run_dirs)
    if len(args.run_dirs) > 1:  # runs of several folders: no single swept flag to plot against
        swept, sweep_dir = None, None
    if args.out is not None and args.out.is_dir():
        raise UsageError(f"dl1 report: --out {args.out} is a folder; give a file name such as {args.out}/report.md")
    if len(runs) == 1:
        print(f"report: {_report(runs[0])}")
        return 0
    reported = []
    for r in runs:
        try:
            print(f"report: {_report(r)}")
            reported.append(r)
        except DL1Error as exc:
            print(f"dl1 report: warning: skipped {r}: {exc}", file=sys.stderr)
    if not reported:
        raise DL1Error(f"dl1 report: none of the {len(runs)} run folders could be read")
    if len(reported) > 1:
        out = args.out or (sweep_dir / "report.md" if sweep_dir else Path("comparison.md"))
        try:
            print(f"comparison: {compare_runs(reported, out, swept=swept, metric=args.metric, echo=True)}")
        except OSError as exc:
            raise DL1Error(f"cannot write the comparison {out}: {first_line(exc)}") from None
    return 1 if len(reported) < len(runs) else 0
