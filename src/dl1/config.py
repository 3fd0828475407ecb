"""Typed experiment configs <-> command line.

Every experiment declares a frozen dataclass whose fields are its flags.  ``arg()`` attaches the help text, the
allowed choices and the numeric range; ``parse_config`` builds an argparse parser from it.  A misspelt flag or a bad
value raises :class:`UsageError` with one line naming the nearest valid flag or the allowed range.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from dl1.errors import UsageError


def arg(default: Any, help: str, *, choices: Sequence[Any] | None = None, min: float | None = None,
        max: float | None = None, min_inclusive: bool = True, flag: str | None = None,
        allow_inf: bool = False) -> Any:
    """A config field with its help text, optional choices and numeric range (``min``/``max``).  NaN always fails
    the range check; infinity too unless ``allow_inf``."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "min_inclusive": min_inclusive, "flag": flag,
            "allow_inf": allow_inf}
    if isinstance(default, list | dict | set):
        raise TypeError("use tuples for sequence defaults (configs are frozen)")
    return dataclasses.field(default=default, metadata=meta)


PRECISIONS = ("fp32", "bf16", "fp16")


def precision_arg(default: str = "fp32", note: str = "") -> Any:
    """The ``--precision`` flag every torch experiment shares (see :mod:`dl1.train.precision`); ``note`` is added to
    its help."""
    return arg(default, "Precision of the forward passes (training and validation): fp32; bf16 = bfloat16 autocast "
                        "(CPU and CUDA); fp16 = float16 autocast (CUDA only; training adds a gradient scaler)."
               + (f" {note}" if note else ""), choices=PRECISIONS)


MAX_SEED = 2**32 - 1


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """The arguments a run may share with every other, declared once (as litgpt's ``TrainArgs``).

    A Config does not nest this group: it takes the ones it uses with :func:`shared`, a field of the same name, type,
    range and choices, so the flags stay ``--device``, ``--seed``, ... and ``config.json`` keeps one key per flag (old
    run folders replay unchanged).  What may differ per experiment: the default (a seed) and the help, which says
    what the value means there (what the seed draws, which files the data folder holds)."""

    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps.")
    seed: int = arg(0, "Random seed.", min=0, max=MAX_SEED)
    precision: str = precision_arg()
    threads: int = arg(0, "torch CPU threads (0 = torch's default).", min=0, max=4096)
    resume: str | None = arg(None, "Run folder (or checkpoint file) to continue from.")
    compile: bool = arg(False, "torch.compile the trained model (as nanoGPT's --compile); off by default: on a CPU the "
                               "compilation takes a minute or more and a small model's step gains little.")
    data_dir: str | None = arg(None, "Folder holding the dataset (default: $DL1_DATA, else ./data).")
    dist_timeout: float = arg(600.0, "Under torchrun: seconds a rank waits for the others (joining, every collective) "
                                     "before it stops with one line naming the rank and the cause (a rank that died "
                                     "or hangs).", min=1.0, max=86400.0)


RUN_ARGS = {f.name: f for f in dataclasses.fields(RunArgs)}


def shared(name: str, default: Any = dataclasses.MISSING, help: str | None = None, note: str = "") -> Any:
    """The :class:`RunArgs` field ``name`` for a Config: its type, range and choices; ``default`` and ``help`` (or a
    ``note`` added to the shared help) as this experiment needs them."""
    base = RUN_ARGS[name]
    meta = dict(base.metadata)
    meta["help"] = (help if help is not None else meta["help"]) + (f" {note}" if note else "")
    return dataclasses.field(default=base.default if default is dataclasses.MISSING else default, metadata=meta)


def _resolve(tp: Any) -> tuple[Any, bool, bool]:
    """Return (element type, is_sequence, is_optional) for an annotation."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return (args[0] if args else str), True, optional
    return tp, False, optional


class Parser(argparse.ArgumentParser):
    """The argument parser of every dl1 command: a bad flag is one line (``prog: message``), exit status 2."""

    def error(self, message: str) -> typing.NoReturn:  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def _optional_type(elem: Any):
    def convert(text: str):
        if text.lower() in ("none", "null", ""):
            return None
        return elem(text)

    convert.__name__ = elem.__name__
    return convert


def build_parser(config_cls: type, prog: str, description: str = "") -> argparse.ArgumentParser:
    """An argparse parser whose flags are the dataclass fields, each with its default in the help."""
    parser = Parser(prog=prog, description=description, allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        flag = meta.get("flag") or f"--{f.name}"
        elem, is_seq, optional = _resolve(hints[f.name])
        help_text = meta.get("help", "")
        default = f.default
        if meta.get("choices"):
            help_text += f" Choices: {', '.join(map(str, meta['choices']))}."
        if meta.get("min") is not None or meta.get("max") is not None:
            help_text += f" Range: {_range_text(meta)}."
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        help_text += f" (default: {shown})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if elem is bool and not is_seq:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _optional_type(elem) if optional else elem
            if is_seq:
                kwargs["nargs"] = "+"
            if meta.get("choices") and not is_seq:
                kwargs["choices"] = list(meta["choices"])
            kwargs["metavar"] = f.name.upper()
        parser.add_argument(flag, **kwargs)
    return parser


def _range_text(meta: Any) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    left = "" if lo is None else (f"{lo} <= " if meta.get("min_inclusive", True) else f"{lo} < ")
    right = "" if hi is None else f" <= {hi}"
    return f"{left}value{right}"


def _check_range(name: str, value: Any, meta: Any) -> None:
    values = value if isinstance(value, tuple) else (value,)
    lo, hi = meta.get("min"), meta.get("max")
    for v in values:
        if v is None or isinstance(v, str | bool):
            continue
        if isinstance(v, float) and not math.isfinite(v) and not meta.get("allow_inf", False):
            raise UsageError(f"--{name}: {v} is not a finite number; allowed: {_range_text(meta)}")
        if isinstance(v, float) and math.isnan(v):
            raise UsageError(f"--{name}: nan is not a number; allowed: {_range_text(meta)}")
        bad_lo = lo is not None and (v < lo if meta.get("min_inclusive", True) else v <= lo)
        bad_hi = hi is not None and v > hi
        if bad_lo or bad_hi:
            raise UsageError(f"--{name}: {v} is out of range; allowed: {_range_text(meta)}")
    choices = meta.get("choices")
    if choices and isinstance(value, tuple):
        for v in value:
            if v not in choices:
                raise UsageError(f"--{name}: invalid choice {v!r} (choose from {', '.join(map(str, choices))})")


def validate(cfg: Any) -> Any:
    """Check every field's range/choices; raises UsageError naming the flag and the allowed range."""
    for f in dataclasses.fields(cfg):
        _check_range(f.name, getattr(cfg, f.name), f.metadata)
    check = getattr(cfg, "check", None)
    if callable(check):
        check()
    return cfg


def parse_config(config_cls: type, argv: Sequence[str], prog: str, description: str = "",
                 base: dict[str, Any] | None = None, resolve: Callable[[Any], Any] | None = None) -> Any:
    """Parse ``argv`` into a validated ``config_cls`` instance; ``base`` overrides defaults (e.g. smoke presets).
    ``resolve(cfg) -> cfg``: the step that may read files (a run folder given for a file, the newest run), run on the
    parsed config before it is checked, so the Config's own construction stays pure."""
    parser = build_parser(config_cls, prog, description)
    if base:
        parser.set_defaults(**base)
    namespace, unknown = parser.parse_known_args(list(argv))
    if unknown:
        raise UsageError(_unknown_message(prog, parser, unknown))
    values = vars(namespace)
    hints = typing.get_type_hints(config_cls)
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
        _, is_seq, _ = _resolve(hints[name])
        if is_seq and value is not None and not isinstance(values[name], tuple):
            values[name] = (values[name],)
    cfg = config_cls(**values)
    return validate(resolve(cfg) if resolve is not None else cfg)


def _unknown_message(prog: str, parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    first = next((u for u in unknown if u.startswith("-")), unknown[0])
    name = first.split("=", 1)[0]
    close = difflib.get_close_matches(name, flags, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else "; see --help for the valid flags"
    if not name.startswith("-"):
        return f"{prog}: unexpected argument {name!r}{hint}"
    return f"{prog}: unknown flag {name}{hint}"


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def config_from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a config from ``config_to_dict`` output, ignoring keys the class no longer has."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
    return config_cls(**clean)


def values_from_file(config_cls: type, values: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """The fields of ``config_cls`` in ``values`` (a ``config.json``), each checked against its field's type (a whole
    number where a float is expected is taken; lists become tuples), and the keys the class does not have.  A value
    of the wrong type is one-line :class:`UsageError` naming ``source`` and the key."""
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            continue
        elem, is_seq, optional = _resolve(hints[key])
        try:
            clean[key] = _typed(value, elem, is_seq, optional)
        except TypeError:
            want = f"{'a list of ' if is_seq else ''}{elem.__name__}{' or null' if optional else ''}"
            raise UsageError(f"{source}: {key} is {json_repr(value)}, not {want}") from None
    return clean, sorted(k for k in values if k not in fields)


def _typed(value: Any, elem: Any, is_seq: bool, optional: bool) -> Any:
    if value is None:
        if optional:
            return None
        raise TypeError
    if is_seq:
        if not isinstance(value, list | tuple):
            raise TypeError
        return tuple(_typed(v, elem, False, False) for v in value)
    if elem is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if elem is float and isinstance(value, str) and value in ("inf", "-inf", "nan"):  # how config.json writes them
        return float(value)
    if not isinstance(value, elem) or (elem is int and isinstance(value, bool)):
        raise TypeError
    return value


def json_repr(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def to_flags(config_cls: type, values: dict[str, Any]) -> list[str]:
    """The command-line flags that set ``values`` (field name -> value) on ``config_cls``: the inverse of parsing."""
    hints = typing.get_type_hints(config_cls)
    out: list[str] = []
    for f in dataclasses.fields(config_cls):
        if f.name not in values:
            continue
        value, flag = values[f.name], f.metadata.get("flag") or f"--{f.name}"
        elem, is_seq, _ = _resolve(hints[f.name])
        if elem is bool and not is_seq:
            out.append(flag if value else f"--no-{flag[2:]}")
        elif value is None:
            out += [flag, "none"]
        elif is_seq:
            out += [flag, *(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out
