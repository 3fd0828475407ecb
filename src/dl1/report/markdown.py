"""Escaping for the Markdown and HTML that dl1 writes (``report.md``, comparisons, the tour's report).

Every value that comes from a run folder (a config value, ``argv.txt``, a run or figure file name, a metric label)
goes through one of these before it is written, so that it shows as the text it is and never as markup: a ``|`` or a
newline cannot shift a table's columns (GPT's default sample prompt is ``"\\n"``), ``<script>`` is text, a backtick
cannot end a code span, a figure named ``a)<b>.png`` is still one link.

* :func:`cell` and :func:`text`: a table cell and prose (markup characters backslash-escaped, ``<`` as ``&lt;``,
  control characters shown as ``\\n``, ``\\t``, ...);
* :func:`code`: a code span holding the value literally (a fence longer than any run of backticks in it;
  ``table=True`` inside a table, where ``|`` must still be escaped);
* :func:`fenced`: a block of several lines (a GPT's sample) as a fenced code block no line of it can close;
* :func:`command`: a command line (``argv.txt``) re-quoted for a POSIX shell, so that pasting it runs ``dl1`` and
  nothing else (``$(...)`` and backticks stay quoted), as a code span;
* :func:`link` / :func:`image`: a link or image with an escaped label and a percent-encoded target;
* :func:`html`: HTML text and attribute values.

Torch-free.
"""

from __future__ import annotations

import html as _html
import re
import shlex
from typing import Any
from urllib.parse import quote

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_MARKUP = re.compile(r"[\\`*\[\]|~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")  # what is markup anywhere in a line
_ENTITY = re.compile(r"&(?=#|[A-Za-z][A-Za-z0-9]*;)")  # an & that would start an entity
_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+(?=[.)]))")  # a heading, quote, list or rule marker at a line's start
_BACKTICKS = re.compile(r"`+")


def _visible(value: Any) -> str:
    """``value`` as text with every control character (newline, tab, escape, ...) written as its escape."""
    def escape(match: re.Match[str]) -> str:
        c = match.group()
        named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
        return named.get(c, f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")

    return _CONTROL.sub(escape, "" if value is None else str(value))


def cell(value: Any) -> str:
    """``value`` as the text of a table cell that renders as itself: one line (control characters as ``\\n``,
    ...); backslash, backticks, ``*``, ``[``, ``]``, ``|``, ``~`` and an ``_`` at a word's edge backslash-escaped;
    ``<`` (a tag, an autolink) and an ``&`` that would start an entity as HTML entities.  Plain names
    (``test.acc``, ``seed=1``, ``lr_max``, ``-0.5``) stay as they are."""
    out = _ENTITY.sub("&amp;", _visible(value)).replace("<", "&lt;")
    return _MARKUP.sub(lambda m: "\\" + m.group(), out)


def text(value: Any) -> str:
    """``value`` as Markdown text anywhere in a line, a line's start included: :func:`cell`, and a heading, quote,
    list or rule marker at its start escaped."""
    def marker(m: re.Match[str]) -> str:
        return m.group(1) + (m.group(2) + "\\" if m.group(2).isdigit() else "\\" + m.group(2))

    return _LINE_START.sub(marker, cell(value), count=1)


def code(value: Any, table: bool = False) -> str:
    """``value`` as an inline code span that shows it literally (one line: control characters as escapes).  The
    fence is one backtick longer than the longest run of backticks in it.  ``table=True``: for a table cell, where
    GitHub's tables split on ``|`` even inside a code span (``\\|`` shows as ``|`` there)."""
    body = _visible(value)
    longest = max((len(m) for m in _BACKTICKS.findall(body)), default=0)
    fence = "`" * (longest + 1)
    if body.startswith(("`", " ")) or body.endswith(("`", " ")):
        body = f" {body} "  # CommonMark strips one space on each side
    if table:
        body = body.replace("|", "\\|")
    return f"{fence}{body}{fence}"


def fenced(block: str, info: str = "") -> list[str]:
    """The lines of a fenced code block showing ``block`` (several lines) literally: the fence is longer than any run
    of backticks in it, so no line of it can close the block."""
    longest = max((len(m) for m in _BACKTICKS.findall(block)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, *block.replace("\r\n", "\n").replace("\r", "\n").split("\n"), fence]


def quote_command(line: str) -> str:
    """A command line (as ``argv.txt`` holds it) re-quoted word by word for a POSIX shell: what a hostile line holds
    (``$(...)``, backticks, ``;``) stays inside single quotes.  A line the shell could not split is quoted whole."""
    try:
        words = shlex.split(line)
    except ValueError:
        return shlex.quote(line)
    return shlex.join(words)


def command(line: str | None, table: bool = False) -> str:
    """A command line as an inert code span: shell-quoted (:func:`quote_command`), then :func:`code`; ``?`` when
    there is none."""
    if not line:
        return code("?", table)
    return code(quote_command(_visible(line)), table)


def target(path: str) -> str:
    """A link target (a relative path such as ``figures/NAME.png``) percent-encoded: spaces, parentheses, ``<``,
    quotes and the rest cannot end the link or start markup."""
    return quote(path, safe="/")


def link(label: Any, path: str) -> str:
    """``[label](path)`` with the label as :func:`text` and the path as :func:`target`."""
    return f"[{text(label)}]({target(path)})"


def image(alt: Any, path: str) -> str:
    """``![alt](path)`` with the alternative text as :func:`text` and the path as :func:`target`."""
    return f"!{link(alt, path)}"


def html(value: Any) -> str:
    """``value`` as HTML text or a quoted attribute value (``&``, ``<``, ``>``, both quotes escaped)."""
    return _html.escape("" if value is None else str(value), quote=True)


def inert(block: str) -> str:
    """A Markdown block written by dl1 itself but read back from a run folder (an experiment's ``table.md``): kept as
    Markdown, with ``<`` escaped so that it holds no HTML."""
    return block.replace("<", "&lt;")
