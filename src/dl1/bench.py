"""``dl1 bench [NAME...] [--quick] [--out_dir DIR]``: run the benchmarks in ``benchmarks/`` and print one table.

Every benchmark script exposes ``main(argv) -> int``, takes ``--out FILE`` (and ``--quick``) and writes JSON whose
rows carry a ``ratio`` (ours against a floor or a baseline), the thread count and the ratio's ``goal``.  A row's
reference is measured in the same run, unless the row names the source of a stored number in ``recorded``: the table
then prints the reference as ``recorded (<source>)``.  A reference that could not be measured is ``None`` and prints
as "not measured".  This command runs the ones asked for (all by default), collects every row with a ratio and prints
them as one table; the combined results go to ``OUT_DIR/bench.json``.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from dl1.config import Parser
from dl1.errors import DL1Error, UsageError
from dl1.run.reader import check_output_folder


def bench_dir() -> Path:
    """``benchmarks/`` of the source checkout this package is installed from (editable install)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "benchmarks").is_dir() and (parent / "pyproject.toml").exists():
            return parent / "benchmarks"
    raise DL1Error("benchmarks/ not found: dl1 bench runs from a source checkout (pip install -e .)")


def available() -> list[str]:
    return sorted(p.stem for p in bench_dir().glob("*.py") if not p.stem.startswith("_"))


def _load(name: str):
    path = bench_dir() / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"dl1_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ratio_rows(obj: Any) -> list[dict[str, Any]]:
    """Every dict inside ``obj`` that has a ``ratio`` key, flattened to its scalar fields."""
    rows: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        if "ratio" in obj:
            rows.append({k: v for k, v in obj.items() if isinstance(v, int | float | str | bool) or v is None})
        for v in obj.values():
            if isinstance(v, dict | list):
                rows += ratio_rows(v)
    elif isinstance(obj, list):
        for v in obj:
            rows += ratio_rows(v)
    return rows


# how the benchmarks name a row's case, our number and the number it is compared with
CASE_KEYS = ("case", "name", "model", "method", "what", "preprocess", "batch_size")
OURS_KEYS = ("ours", "ours_s", "step_s", "full_img_s", "value")
REFERENCE_KEYS = ("reference", "baseline", "floor", "plain_s", "bare_img_s")


def _fmt(v: Any) -> str:
    if v is None:
        return "not measured"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def reference_text(row: dict[str, Any]) -> str:
    """The reference cell: the number measured in the same run, or a stored number marked ``recorded (source)``."""
    ref = next((row[k] for k in REFERENCE_KEYS if k in row), None)
    text = _fmt(ref)
    if row.get("recorded") and ref is not None:
        text += f" recorded ({row['recorded']})"
    return text


def print_table(results: dict[str, list[dict[str, Any]]]) -> None:
    header = ["benchmark", "case", "threads", "ours", "reference", "ratio", "goal"]
    lines = []
    for name, rows in results.items():
        for r in rows:
            case = " ".join(str(r[k]) for k in CASE_KEYS if r.get(k) not in (None, ""))
            ours = next((r[k] for k in OURS_KEYS if k in r), "")
            ratio = "—" if r["ratio"] is None else _fmt(r["ratio"])
            lines.append([name, _fmt(case), _fmt(r.get("threads", "")), _fmt(ours), reference_text(r), ratio,
                          "" if r.get("goal") is None else _fmt(r["goal"])])
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in lines:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def main(argv: list[str]) -> int:
    parser = Parser(prog="dl1 bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all); see benchmarks/")
    parser.add_argument("--quick", action="store_true", help="small sizes (a check that they run, not a measurement)")
    parser.add_argument("--out_dir", type=Path, default=Path("runs") / "bench", help="where JSON results go")
    args = parser.parse_args(argv)
    known = available()
    for n in args.names:
        if n not in known:
            close = difflib.get_close_matches(n, known, n=1)
            raise UsageError(f"dl1 bench: unknown benchmark {n!r}" + (f"; did you mean {close[0]}?" if close
                                                                       else f"; known: {', '.join(known)}"))
    check_output_folder(args.out_dir, "--out_dir")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    failed = []
    for name in args.names or known:
        out = args.out_dir / f"{name}.json"
        print(f"== {name}", flush=True)
        t0 = time.time()
        code = _load(name).main(["--out", str(out), *(["--quick"] if args.quick else [])])
        if code not in (0, None) or not out.exists():
            failed.append(name)
            continue
        results[name] = ratio_rows(json.loads(out.read_text()))
        print(f"   ({time.time() - t0:.0f} s)", flush=True)
    from dl1.bench_env import describe, machine

    print()
    print_table(results)
    print(describe())  # every number above was measured on this CPU
    (args.out_dir / "bench.json").write_text(json.dumps({**results, "machine": machine()}, indent=2))
    print(f"\nresults: {args.out_dir / 'bench.json'}")
    if failed:
        raise DL1Error(f"benchmarks failed: {', '.join(failed)}")
    return 0
