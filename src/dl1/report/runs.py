"""Reports computed from run folders alone: learning curves, ``report.md``, and comparison tables of several runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dl1.errors import DL1Error, first_line
from dl1.report import markdown, new_figure, save_figure
from dl1.report.robustness_figures import course_sections
from dl1.report.summary import flatten
from dl1.run.files import check_no_links, check_tree, make_folder, read_json_object, safe_path, write_text_atomic
from dl1.run.reader import RunFolder

SKIP_KEYS = {"step", "split", "epoch", "time"}


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object file of a run folder ({} if absent); a cut, binary or non-object file is one-line DL1Error."""
    return read_json_object(path)


def read_run(run_dir: Path) -> dict[str, Any]:
    """config, summary and metric records of a run folder (and how many lines of metrics.jsonl are not records)."""
    folder = RunFolder(run_dir)
    return {"dir": folder.dir, "config": folder.config, "summary": folder.summary, "metrics": folder.metrics,
            "bad_lines": folder.bad_lines}


def is_run_dir(path: Path) -> bool:
    return RunFolder(path).is_run()


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """One panel per numeric metric, one line per split, against the optimisation step."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in SKIP_KEYS and isinstance(v, int | float) and not isinstance(v, bool) and k not in keys:
                keys.append(k)
    if not keys:
        return None
    keys = keys[:8]
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = new_figure(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for split in dict.fromkeys(r["split"] for r in records):
            pts = [(r["step"], r[key]) for r in records if r["split"] == split and isinstance(r.get(key), int | float)]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=split)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def experiment_figures(run_dir: Path, experiment: str, figures: Callable[[Path], Any] | None) -> bool:
    """Call the experiment's ``figures(run_dir)`` (its registry entry's, given by the caller); False without one."""
    if figures is None:
        return False
    try:
        figures(Path(run_dir))
    except (KeyError, ValueError, TypeError, IndexError) as exc:  # records that are not what the experiment wrote
        raise DL1Error(f"{run_dir}: its records do not fit {experiment}'s figures "
                       f"({type(exc).__name__}: {first_line(exc, 120)})") from None
    return True


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _table(rows: list[dict[str, Any]], columns: list[str], code_columns: tuple[str, ...] = ()) -> str:
    """A Markdown table; every header and cell escaped (a ``|`` or a newline in a value cannot shift the columns),
    the ``code_columns`` as code spans."""
    def show(row: dict[str, Any], c: str) -> str:
        return markdown.code(_fmt(row.get(c)), table=True) if c in code_columns else markdown.cell(_fmt(row.get(c)))

    lines = ["| " + " | ".join(markdown.cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(show(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_run_report(run_dir: Path, run: dict[str, Any] | None = None,
                     figures: Callable[[Path], Any] | None = None) -> Path:
    """Rebuild ``figures/`` and ``report.md`` of one run from its folder (``run``: its :func:`read_run`, if read;
    ``figures``: the experiment's own figures, else the learning curves are drawn)."""
    run = run if run is not None else read_run(run_dir)
    run_dir = Path(run_dir)
    experiment = str(run["config"].get("experiment", run_dir.parent.name))
    report = safe_path(run_dir, "report.md")  # a link planted in the run folder is refused, never written through
    check_tree(safe_path(run_dir, "figures"))
    before = report.stat().st_mtime_ns if report.exists() else None
    if not experiment_figures(run_dir, experiment, figures) and run["metrics"]:
        plot_curves(run["metrics"], run_dir / "figures" / "curves.png", title=experiment)
    if report.exists() and report.stat().st_mtime_ns != before:
        return report  # the experiment wrote its own report (e.g. gnn's question-by-question answers)
    argv = (run_dir / "argv.txt").read_text(errors="replace").strip() if (run_dir / "argv.txt").exists() else ""
    summary = {k: v for k, v in flatten(run["summary"]).items() if k not in ("run_dir",)}
    config = {k: v for k, v in run["config"].items() if k != "experiment"}
    command = markdown.command(argv.splitlines()[-1] if argv else None)  # shell-quoted: pasting it runs dl1 only
    parts = [f"# {markdown.cell(experiment)}: {markdown.cell(run_dir.name)}", "", f"Command: {command}", "",
             "## Results", "", _table([{"metric": k, "value": v} for k, v in summary.items()], ["metric", "value"]),
             "", "## Config", "", _table([{"flag": k, "value": json.dumps(v)} for k, v in config.items()],
                                         ["flag", "value"], code_columns=("value",)), "", "## Figures", ""]
    if (run_dir / "table.md").exists():  # an experiment's own table (e.g. cnn-compare), without HTML
        parts[parts.index("## Results"):parts.index("## Results")] = [markdown.inert((run_dir / "table.md")
                                                                                     .read_text()), ""]
    for png in sorted((run_dir / "figures").glob("*.png")):
        parts += [markdown.image(png.stem, f"figures/{png.name}"), ""]
    write_text_atomic(report, "\n".join(parts) + "\n", root=run_dir)
    return report


WRAP = 8  # metric columns per comparison table; more columns continue in the next table


def _priority(key: str) -> int:
    """Headline numbers first: test metrics, then validation and losses, then the rest."""
    if "test" in key or key.endswith(("top1", "acc", "bpd")):
        return 0
    return 1 if "val" in key or "loss" in key else 2


def comparison_tables(rows: list[dict[str, Any]], lead: list[str], numeric: list[str]) -> list[str]:
    """Markdown of ``rows``: the ``lead`` columns, then every numeric column, none dropped.  Columns with one value
    in every run are listed once under the tables; the others, headline metrics first, are wrapped into tables of
    at most ``WRAP`` columns, each repeating the lead columns."""
    same = [k for k in numeric if len(rows) > 1 and all(k in r for r in rows) and len({r[k] for r in rows}) == 1]
    varying = sorted((k for k in numeric if k not in same), key=lambda k: (_priority(k), numeric.index(k)))
    chunks = [varying[i:i + WRAP] for i in range(0, len(varying), WRAP)] or [[]]
    out = []
    for i, chunk in enumerate(chunks):
        if len(chunks) > 1:
            out += [f"Columns {i * WRAP + 1}–{i * WRAP + len(chunk)} of {len(varying)}:", ""]
        out += [_table(rows, [*lead, *chunk]), ""]
    if same:
        out += ["Same in every run: " + "; ".join(f"{markdown.cell(k)} = {markdown.cell(_fmt(rows[0][k]))}"
                                                  for k in same), ""]
    return out


def compare_runs(run_dirs: list[Path], out: Path, swept: list[str] | None = None, metric: str | None = None,
                 echo: bool = False) -> Path:
    """One comparison of several runs (the config values that differ + all their summary numbers), the course's
    tables and figures the runs allow (robustness, visual and deep prompts, cross-dataset; printed too with
    ``echo``), and for a sweep a figure of ``metric`` against the swept value."""
    runs = [read_run(d) for d in run_dirs]
    configs = [{k: json.dumps(v) for k, v in r["config"].items()} for r in runs]
    differ = swept or [k for k in configs[0] if len({c.get(k) for c in configs}) > 1]
    rows, numeric = [], []
    for r in runs:
        flat = {k: v for k, v in flatten(r["summary"]).items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "wall_time_s"}
        rows.append({"run": r["dir"].name, **{k: r["config"].get(k) for k in differ}, **flat})
        numeric += [k for k in flat if k not in numeric]
    metric = metric or _default_metric(numeric)
    make_folder(out.parent)
    check_no_links(out)
    course = course_sections(runs, out.parent)
    if echo and course:
        print("\n".join(line for line in course if not line.startswith("![")))
    text = ["# Comparison", "", *course, "## All runs", "", *comparison_tables(rows, ["run", *differ], numeric)]
    if swept and metric:
        fig = _plot_sweep(rows, swept, metric, out.parent / "figures" / f"sweep_{metric.replace('/', '_')}.png")
        if fig:
            text += [markdown.image(f"{metric} vs {swept[0]}", f"figures/{fig.name}"), ""]
    write_text_atomic(out, "\n".join(text) + "\n")
    return out


def _default_metric(keys: list[str]) -> str | None:
    for want in ("test.acc", "test.top1", "test.bpd", "test.loss", "val.acc", "val.loss"):
        for k in keys:
            if k.endswith(want) or want in k:
                return k
    return keys[0] if keys else None


def _plot_sweep(rows: list[dict[str, Any]], swept: list[str], metric: str, path: Path) -> Path | None:
    x_key, group_keys = swept[0], swept[1:]
    groups: dict[str, list[tuple[Any, float]]] = {}
    for r in rows:
        if r.get(metric) is None:
            continue
        label = ", ".join(f"{k}={r.get(k)}" for k in group_keys) or metric
        groups.setdefault(label, []).append((r.get(x_key), r[metric]))
    if not groups:
        return None
    fig, ax = new_figure(figsize=(6, 4))
    for label, pts in groups.items():
        pts.sort(key=lambda p: (0, p[0]) if isinstance(p[0], int | float) else (1, str(p[0])))
        ax.plot([str(p[0]) for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel(x_key)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return path
