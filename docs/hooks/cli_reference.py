"""MkDocs hook: the CLI reference, generated from the experiments' Configs at every build.

Every page holding the marker ``<!-- dl1:cli-reference -->`` gets, in its place, one section per experiment: the
command, its one-line description, a link to its docs page, and a table of every flag (type, default, range or
choices, help) read from the Config dataclass fields that ``dl1.config.arg`` built; then its presets and its
``--smoke`` overrides.  Nothing is written by hand, so the reference cannot drift from the code; a flag whose help
changes changes here on the next build (``tests/test_docs_site.py`` checks that).

``generate()`` is importable on its own (the tests call it without MkDocs).
"""

from __future__ import annotations

import dataclasses
import html
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

MARKER = "<!-- dl1:cli-reference -->"
ROOT = Path(__file__).resolve().parents[2]


def _import_dl1() -> None:
    """Use the checkout's sources when dl1 is not installed (``mkdocs build`` from a plain clone)."""
    try:
        import dl1  # noqa: F401
    except ImportError:  # pragma: no cover - the package is installed by make docs
        sys.path.insert(0, str(ROOT / "src"))


def experiments_and_configs() -> list[tuple[str, str, type, dict[str, Any], dict[str, dict[str, Any]]]]:
    """(name, description, Config, smoke overrides, presets) of every experiment, in ``dl1 list`` order: from the
    registry (``dl1.experiments.EXPERIMENTS``) when there is one, else from the experiment modules."""
    _import_dl1()
    from dl1 import experiments

    registry = getattr(experiments, "EXPERIMENTS", None)
    out = []
    if registry:
        entries = registry.values() if isinstance(registry, dict) else registry
        for e in sorted(entries, key=lambda e: e.name):
            out.append((e.name, e.description, e.Config, dict(e.smoke or {}), {k: dict(v) for k, v in
                                                                             (e.presets or {}).items()}))
        return out
    for name in experiments.names():
        module = experiments.load(name)
        out.append((name, experiments.describe(name), module.Config, dict(getattr(module, "SMOKE", {})),
                    {k: dict(v) for k, v in getattr(module, "PRESETS", {}).items()}))
    return out


def type_name(tp: Any) -> str:
    """A Config annotation as a reader says it: ``int``, ``float or none``, ``list of int``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " or ".join(type_name(a) for a in args)
        return f"{inner} or none" if len(args) < len(typing.get_args(tp)) else inner
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {type_name(args[0]) if args else 'str'}"
    if tp is bool:
        return "flag"
    return getattr(tp, "__name__", str(tp))


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return " ".join(_value(v) for v in value) or "(empty)"
    if isinstance(value, str):
        return repr(value) if value.strip() != value or not value else value
    return str(value)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return html.escape(text, quote=False).replace("|", "&#124;").replace("\n", " ")


def _code(text: str) -> str:
    return f"<code>{_cell(text)}</code>"


def _range(meta: Any) -> str:
    parts = []
    if meta.get("choices"):
        parts.append("one of " + ", ".join(_code(str(c)) for c in meta["choices"]))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None or hi is not None:
        left = "" if lo is None else f"{lo} {'≤' if meta.get('min_inclusive', True) else '<'} "
        right = "" if hi is None else f" ≤ {hi}"
        parts.append(_cell(f"{left}value{right}"))
    return "; ".join(parts) or "—"


def flag_rows(config_cls: type) -> list[dict[str, str]]:
    """One row per flag of ``config_cls``: flag, type, default, range, help."""
    hints = typing.get_type_hints(config_cls)
    rows = []
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        flag = meta.get("flag") or f"--{f.name}"
        tp = hints[f.name]
        if tp is bool or tp == bool | None:  # BooleanOptionalAction, as dl1.config.build_parser makes it
            flag = f"{flag} / --no-{flag[2:]}"
            tp = bool
        rows.append({"flag": flag, "type": type_name(tp), "default": _value(f.default), "range": _range(meta),
                     "help": meta.get("help", "")})
    return rows


def _overrides(values: dict[str, Any]) -> str:
    return ", ".join(f"`{k} = {_value(v)}`" for k, v in values.items())


def _flag_table(config_cls: type) -> list[str]:
    lines = ["| flag | type | default | range / choices | help |", "|---|---|---|---|---|"]
    for row in flag_rows(config_cls):
        lines.append(f"| {_code(row['flag'])} | {row['type']} | {_code(row['default'])} | {row['range']} | "
                     f"{_cell(row['help'])} |")
    return lines


def command_help(command: str) -> str:
    """What ``dl1 COMMAND --help`` prints, captured in this process from the command's own parser."""
    import contextlib
    import importlib
    import io

    from dl1 import cli

    module = importlib.import_module(cli.COMMANDS[command])
    out = io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "118"  # argparse wraps to the terminal: the same width on every machine
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            module.main(["--help"])
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return out.getvalue().rstrip()


def other_commands() -> list[str]:
    """``dl1 generate`` (a Config, as the experiments) and the ``--help`` of every other command."""
    _import_dl1()
    from dl1 import cli

    lines = ["## Other commands { #other-commands }", ""]
    generate_config = getattr(importlib_module("dl1.generate"), "Config", None)
    if generate_config is not None:
        lines += ["### `dl1 generate` { #generate }", "", "Sample text from a trained GPT (`--checkpoint`) or GPT-2's "
                  "weights (`--pretrained`); see [Character GPT](../parts/gpt.md).", "",
                  *_flag_table(generate_config), ""]
    for command in sorted(cli.COMMANDS):
        if command == "generate" and generate_config is not None:
            continue
        lines += [f"### `dl1 {command}` {{ #{command} }}", "", "```text", command_help(command), "```", ""]
    lines += ["### `dl1 run` common flags { #run-common-flags }", "", "```text", cli.RUN_EPILOG.rstrip(), "```", ""]
    return lines


def importlib_module(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


def nav_titles(nav: Any) -> dict[str, str]:
    """Page file -> its title in the site's navigation (``mkdocs.yml``'s ``nav``)."""
    out: dict[str, str] = {}
    for item in nav or []:
        if isinstance(item, dict):
            for title, value in item.items():
                if isinstance(value, str):
                    out[value] = title
                else:
                    out.update(nav_titles(value))
    return out


def generate(page_prefix: str = "../parts/", titles: dict[str, str] | None = None) -> str:
    """The Markdown of the whole CLI reference (``titles``: page file -> title, for the links to the part pages)."""
    titles = titles or {}
    entries = experiments_and_configs()
    lines = ["Generated from the code at build time (`docs/hooks/cli_reference.py` reads every experiment's "
             "`Config`): what `dl1 run NAME --help` prints, as tables.", "",
             "| experiment | what it does | flags |", "|---|---|---:|"]
    for name, description, config_cls, _, _ in entries:
        lines.append(f"| [`{name}`](#{name}) | {_cell(description)} | {len(dataclasses.fields(config_cls))} |")
    lines.append("")
    for name, description, config_cls, smoke, presets in entries:
        lines += [f"## `{name}` {{ #{name} }}", "", _cell(description), "",
                  f"```\ndl1 run {name} [flags]\n```", "",
                  f"The method, the figures and the numbers: [{titles.get(f'parts/{name}.md', name)}]"
                  f"({page_prefix}{name}.md).", "",
                  *_flag_table(config_cls), ""]
        if presets:
            lines += ["**Presets** (`--preset NAME`: the recipe's values become the defaults; explicit flags win):",
                      ""]
            lines += [f"- `{preset}`: {_overrides(values)}" for preset, values in presets.items()]
            lines.append("")
        if smoke:
            lines += [f"**`--smoke`** (a seconds-long check on tiny or synthetic data, never a result): "
                      f"{_overrides(smoke)}.", ""]
    return "\n".join(lines + other_commands())


TOUR_MARKER = "<!-- dl1:tour-parts -->"
TOUR_TIMES = ROOT / "docs" / "figures" / "tour" / "tour.json"


def tour_parts() -> str:
    """The tour's parts as a table, read from ``dl1.tour`` (so a part added there appears here), with the seconds
    each took in the tour that ``make docs-figures`` ran (``docs/figures/tour/tour.json``), when there is one."""
    _import_dl1()
    import json
    import shlex

    from dl1 import tour

    times = json.loads(TOUR_TIMES.read_text()) if TOUR_TIMES.is_file() else {}
    seconds = {p["key"]: p for p in times.get("parts", [])}
    when = ""
    if times:
        when = (f" Times: the {times.get('budget', 'default')} tour of `make docs-figures` on "
                f"{times.get('cpu', 'an unnamed CPU')}, {times.get('date', '')} ({times.get('note', 'one run')}); "
                f"— is a part that run did not time.")
    lines = [f"The parts of `dl1 tour` (read from `dl1.tour` at build time).{when}", "",
             "| part | what it runs (default budget) | needs | time |", "|---|---|---|---|"]
    for part in tour._parts("shakespeare", None, None):
        command = shlex.join(["dl1", "run", part.experiment, *part.argv["default"]])
        row = seconds.get(part.key, {})
        took = f"{row['seconds']:.0f} s" if row.get("status") == "ok" else (row.get("status") or "—")
        if row.get("budget") and row["budget"] != times.get("budget"):
            took += f" ({row['budget']} budget)"
        lines.append(f"| [{_cell(part.title)}](parts/{part.experiment}.md) | {_code(command)} | "
                     f"{_cell(part.needs or 'nothing')} | {took} |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if TOUR_MARKER in markdown:
        markdown = markdown.replace(TOUR_MARKER, tour_parts())
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, generate(titles=nav_titles(config["nav"])))
