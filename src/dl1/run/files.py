"""Files dl1 writes whole or not at all, never through a symbolic link, and JSON read with limits.

* :func:`write_atomic` writes into a temporary file beside the target and renames it over the target only when the
  write has finished (``.NAME.PID.HEX.tmp``: :func:`remove_stale_temporaries` clears those a killed writer left);
* :func:`safe_path` and :func:`open_nofollow` are the one check every writer uses: a path inside a folder dl1 owns
  (a run, an export, a tour, a sweep) whose file or any folder below the owned one is a symbolic link is refused
  with one line naming it, so that a link planted in a run folder never redirects a write elsewhere
  (:func:`check_tree` checks a whole folder, :func:`make_folder` makes one, :func:`write_file` writes one file);
* :func:`loads` / :func:`read_json` / :func:`read_jsonl` read JSON with a bound on nesting depth and on the length of
  a number: a hostile file (nested 100,000 deep, a 5,000-digit integer) is one-line :class:`DL1Error` naming it.

Torch-free (``--help`` paths import it).
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from dl1.errors import DL1Error, first_line

MAX_JSON_DEPTH = 100  # nesting of objects and arrays (dl1's own files stay under 10)
MAX_NUMBER_CHARS = 100  # characters of one JSON number (a float64 needs < 25; a seed < 21)
_TEMPORARY = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")  # what write_atomic names its temporary files
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


# -- writing, never through a link ----------------------------------------------------------------------------------
def _refuse_link(path: Path, link: Path) -> DL1Error:
    what = "it is" if link == path else f"{link} is"
    return DL1Error(f"refusing to write {path}: {what} a symbolic link (dl1 never writes through a link)")


def check_no_links(path: str | Path, root: str | Path | None = None) -> Path:
    """``path`` if neither it nor any folder between ``root`` (exclusive, the folder dl1 owns) and it is a symbolic
    link; without ``root`` only ``path`` itself is checked.  Otherwise one-line :class:`DL1Error` naming the link."""
    path = Path(path)
    chain = [path]
    if root is not None:
        root = Path(root)
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            raise DL1Error(f"refusing to write {path}: it is outside {root}") from None
        chain = [root.joinpath(*parts[:i]) for i in range(1, len(parts) + 1)]
    for part in chain:
        if part.is_symlink():
            raise _refuse_link(path, part)
    return path


def safe_path(folder: str | Path, name: str | Path) -> Path:
    """``folder/name`` for writing: ``name`` must stay inside ``folder`` (no absolute path, no ``..``) and no part
    of it below ``folder`` may be a symbolic link; one-line :class:`DL1Error` otherwise."""
    folder, name = Path(folder), Path(name)
    if name.is_absolute() or ".." in name.parts or not name.parts:
        raise DL1Error(f"refusing to write {folder / name}: {str(name)!r} is not a name inside {folder}")
    return check_no_links(folder / name, folder)


def open_nofollow(path: str | Path, mode: str = "w", root: str | Path | None = None,
                  encoding: str | None = "utf-8") -> IO[Any]:
    """``open(path, mode)`` for writing (``w``, ``a``, ``x``, with ``b`` for bytes) that refuses, with one line, a
    ``path`` that is a symbolic link (``O_NOFOLLOW``) or has one between ``root`` and it."""
    path = check_no_links(path, root)
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    flags |= {"w": os.O_TRUNC, "a": os.O_APPEND, "x": os.O_EXCL}[mode.replace("b", "")[:1]]
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise _refuse_link(path, path) from None
        raise DL1Error(f"cannot write {path}: {first_line(exc)}") from None
    return open(fd, mode.replace("x", "w"), encoding=None if "b" in mode else encoding)


def check_tree(folder: str | Path, root: str | Path | None = None) -> Path:
    """``folder`` if neither it (nor a folder between ``root`` and it) nor anything below it is a symbolic link:
    checked before a command rewrites files in a folder it owns (``figures/`` of ``dl1 report``).  Otherwise one-line
    :class:`DL1Error` naming the link."""
    folder = check_no_links(folder, root)
    if folder.is_dir():
        for parent, folders, files in os.walk(folder):  # os.walk does not follow links into folders
            for name in sorted(folders + files):
                if (Path(parent) / name).is_symlink():
                    link = Path(parent) / name
                    raise DL1Error(f"refusing to write into {folder}: {link} is a symbolic link (dl1 never writes "
                                   "through a link)")
    return folder


def make_folder(path: str | Path, root: str | Path | None = None) -> Path:
    """``mkdir -p path`` that refuses (one line) a ``path`` that is, or has below ``root``, a symbolic link; a folder
    that cannot be made (a full disk, no permission, a file in its place) is one-line :class:`DL1Error`."""
    path = check_no_links(path, root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DL1Error(f"cannot create folder {path}: {first_line(exc)}") from None
    return check_no_links(path, root)


def near_root(path: str | Path) -> Path | None:
    """The folder two levels above ``path`` (``RUN`` of ``RUN/figures/x.png``): as ``root`` of a write whose caller
    names no owned folder, it has the file and the folder holding it checked for links."""
    path = Path(path)
    return path.parent.parent if len(path.parts) >= 2 else None


def append_text(path: str | Path, text: str, root: str | Path | None = None) -> None:
    """Append ``text`` to ``path`` (created if missing), never through a link; a failure is one-line DL1Error."""
    try:
        with open_nofollow(path, "a", root) as fh:
            fh.write(text)
    except OSError as exc:
        raise DL1Error(f"cannot write {path}: {first_line(exc)}") from None


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None], root: str | Path | None = None) -> Path:
    """``write(file)`` into a temporary file beside ``path``, flushed to disk and renamed to ``path`` only when it
    returns: a failure or an interruption leaves neither a partial ``path`` nor the temporary file (the previous file,
    if any, stays as it was).  Exceptions propagate unchanged; the temporary name is unique per writer.  A ``path``
    that is a symbolic link (or has one between ``root`` and it) is refused with one-line :class:`DL1Error`."""
    path = check_no_links(path, root)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # O_EXCL: never an existing file or link; the usual permissions (a mkstemp file is private to its owner)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        with open(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_file(path: str | Path, write: Callable[[BinaryIO], None], root: str | Path | None = None) -> Path:
    """:func:`write_atomic`, with a failed write (a full disk, no permission) as one-line :class:`DL1Error` naming
    ``path`` (the previous file, if any, is kept)."""
    try:
        return write_atomic(path, write, root)
    except OSError as exc:
        raise DL1Error(f"cannot write {path} (the previous file is kept): {first_line(exc)}") from None


def write_text_atomic(path: str | Path, text: str, root: str | Path | None = None) -> Path:
    """Write ``text`` atomically (see :func:`write_file`); a failed write is one-line :class:`DL1Error`."""
    return write_file(path, lambda fh: fh.write(text.encode("utf-8")), root)


def remove_stale_temporaries(*folders: str | Path) -> list[Path]:
    """Remove the temporary files of :func:`write_atomic` in ``folders`` (not below them): called by the one process
    that holds a run folder's lock, to which every such file is a killed writer's partial one.  Returns them."""
    removed = []
    for folder in map(Path, folders):
        if folder.is_symlink() or not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if _TEMPORARY.match(path.name) and (path.is_symlink() or path.is_file()):
                try:
                    path.unlink()
                except OSError:
                    continue
                removed.append(path)
    return removed


# -- JSON ------------------------------------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """``value`` with NumPy and torch scalars as numbers, arrays as lists, paths as text, inf/nan as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if hasattr(value, "item") and hasattr(value, "numel") and value.numel() == 1:  # torch scalar tensor
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON text dl1 writes (NumPy and torch scalars as numbers, inf/nan as strings)."""
    return json.dumps(jsonable(obj), indent=2) + "\n"


def write_json(path: str | Path, obj: Any, root: str | Path | None = None) -> None:
    """Write JSON atomically (temp file + rename); a failed write leaves no temp file and the old file as it was."""
    write_text_atomic(path, json_text(obj), root)


def _number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise ValueError(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
        return kind(text)
    return parse


_DECODER = json.JSONDecoder(parse_int=_number(int), parse_float=_number(float))


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def loads(data: str | bytes, source: str | Path) -> Any:
    """The JSON value of ``data`` (UTF-8 bytes or text), at most :data:`MAX_JSON_DEPTH` deep and with numbers of at
    most :data:`MAX_NUMBER_CHARS` characters; anything else is one-line :class:`DL1Error` naming ``source``."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = _DECODER.decode(text)
    except RecursionError:
        raise DL1Error(f"{source} is not a readable JSON file (nested deeper than {MAX_JSON_DEPTH})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise DL1Error(f"{source} is not a readable JSON file ({first_line(exc, 120)})") from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise DL1Error(f"{source} is not a readable JSON file (nested deeper than {MAX_JSON_DEPTH})")
    return value


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path`` (UTF-8, see :func:`loads`).  A missing file raises ``FileNotFoundError``; a cut,
    binary, unreadable or hostile one raises one-line :class:`DL1Error` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DL1Error(f"{path} is not a readable JSON file ({first_line(exc, 120)})") from None
    return loads(data, path)


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON object file ({} if absent); a cut, binary, hostile or non-object file is one-line DL1Error."""
    path = Path(path)
    try:
        value = read_json(path)
    except FileNotFoundError:
        return {}
    if not isinstance(value, dict):
        raise DL1Error(f"{path} does not hold a JSON object")
    return value


def read_jsonl_counted(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a ``metrics.jsonl`` file and the number of lines that are not one (binary, cut, foreign or
    beyond the JSON limits).  A record is a JSON object with an integer ``step`` and a string ``split``."""
    records: list[dict[str, Any]] = []
    bad = 0
    path = Path(path)
    if not path.is_file():
        return records, bad
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DL1Error(f"cannot read {path}: {first_line(exc)}") from None
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            record = loads(raw, path)
        except DL1Error:
            bad += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("split"), str) \
                and isinstance(record.get("step"), int) and not isinstance(record.get("step"), bool):
            records.append(record)
        else:
            bad += 1
    return records, bad


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (a truncated last line, or any line that is not a record, is
    ignored)."""
    return read_jsonl_counted(path)[0]
