"""``dl1 report RUN_DIR... [--out FILE] [--metric KEY]``: rebuild each run's figures and report.md from its folder;
with several runs (or a sweep folder) also write one comparison table."""

from __future__ import annotations

import json
from pathlib import Path

from dl1.config import Parser
from dl1.errors import UsageError
from dl1.report.runs import compare_runs, is_run_dir, write_run_report


def main(argv: list[str]) -> int:
    parser = Parser(prog="dl1 report", description=__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders, or a folder of runs (e.g. a sweep)")
    parser.add_argument("--out", type=Path, default=None,
                        help="comparison file (default: SWEEP/report.md for a sweep, else ./comparison.md)")
    parser.add_argument("--metric", default=None, help="summary key plotted against the swept value, e.g. test.acc")
    args = parser.parse_args(argv)
    runs, swept, sweep_dir = [], None, None
    for d in args.run_dirs:
        if not d.is_dir():
            raise UsageError(f"dl1 report: {d} is not a folder")
        if is_run_dir(d):
            runs.append(d)
            continue
        children = sorted(p for p in d.rglob("config.json"))
        if not children:
            raise UsageError(f"dl1 report: {d} holds no run folder (no config.json)")
        runs += [c.parent for c in children]
        if (d / "sweep.json").exists():
            swept, sweep_dir = list(json.loads((d / "sweep.json").read_text())["grid"]), d
    for r in runs:
        print(f"report: {write_run_report(r)}")
    if len(runs) > 1:
        out = args.out or (sweep_dir / "report.md" if sweep_dir else Path("comparison.md"))
        print(f"comparison: {compare_runs(runs, out, swept=swept, metric=args.metric)}")
    return 0
