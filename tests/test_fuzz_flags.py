"""Every numeric flag of every experiment against ``nan``, ``inf``, ``-1``, ``0`` and a huge value.

Each value is either refused while the config is parsed and checked (``UsageError``/``DL1Error``, one line), or is
genuinely valid: NaN, infinity and a huge value (1e30 for a float, 10**12 for an int) are never valid.  The cases run
in-process (parse + validate + preflight, no training); a handful also run end to end through ``python -m dl1``.
Test ids start with the experiment name, so ``-k gpt`` runs one experiment's cases.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from functools import cache

import pytest

from dl1 import experiments
from dl1.config import _resolve
from dl1.errors import DL1Error

VALUES = {float: ("nan", "inf", "-1", "0", "1e30"), int: ("nan", "inf", "-1", "0", str(10**12))}
NEVER_VALID = {"nan", "inf", "1e30", str(10**12)}


@cache
def numeric_fields(name: str) -> tuple[tuple[str, str, type], ...]:
    """(field, flag, element type) of every int/float field, tuples of them included."""
    config = experiments.load(name).Config
    hints = typing.get_type_hints(config)
    out = []
    for f in dataclasses.fields(config):
        elem, _, _ = _resolve(hints[f.name])
        if elem in (int, float):
            out.append((f.name, f.metadata.get("flag") or f"--{f.name}", elem))
    return tuple(out)


CASES = [pytest.param(name, field, flag, value, id=f"{name}-{field}-{value}")
         for name in experiments.names() for field, flag, elem in numeric_fields(name) for value in VALUES[elem]]


@cache
def _baseline_preflight(name: str) -> str | None:
    """The preflight error of the smoke config without any flag (None when it passes)."""
    return _outcome(name, [])[1]


def _outcome(name: str, argv: list[str]) -> tuple[str, str | None]:
    """("refused", message) | ("accepted", None) | ("crash", what) for parse + validate + preflight."""
    try:
        cfg = experiments.make_config(name, argv, smoke=True)
        experiments.preflight(experiments.load(name), cfg)
    except DL1Error as exc:
        return "refused", str(exc)
    except Exception as exc:  # noqa: BLE001 - any other exception is the defect this test looks for
        return "crash", f"{type(exc).__name__}: {str(exc)[:160]!r}"
    return "accepted", None


def check_case(name: str, flag: str, value: str) -> str | None:
    """None if the case behaves; else what is wrong (one line)."""
    kind, message = _outcome(name, [f"{flag}={value}"])
    if kind == "crash":
        return f"not a one-line dl1 error: {message}"
    if kind == "refused":
        if message == _baseline_preflight(name):
            kind = "accepted"  # refused for a reason unrelated to the value (e.g. missing data): say nothing of it
        elif "\n" in message:
            return f"refusal is not one line: {message!r}"
        elif "Traceback" in message:
            return "refusal shows a traceback"
    if kind == "accepted" and value in NEVER_VALID:
        return "accepted (needs a finite max)" if value not in ("nan", "inf") else "accepted"
    return None


@pytest.mark.parametrize("name, field, flag, value", CASES)
def test_numeric_flag_refused_or_valid(name, field, flag, value):
    problem = check_case(name, flag, value)
    assert problem is None, f"dl1 run {name} {flag} {value}: {problem}"


@pytest.mark.parametrize("name", experiments.names())
def test_every_numeric_field_has_a_range(name):
    """A min and a max on every numeric field: a value outside is refused before any work starts."""
    config = experiments.load(name).Config
    missing = [field for field, _, _ in numeric_fields(name)
               if next(f for f in dataclasses.fields(config) if f.name == field).metadata.get("max") is None
               or next(f for f in dataclasses.fields(config) if f.name == field).metadata.get("min") is None]
    assert not missing, f"{name}: numeric fields without min/max: {', '.join(missing)}"


def _end_to_end_cases() -> list:
    """Per experiment: NaN for its first float flag (a huge value for its first int flag if it has no float), and
    -1 for a count that must be positive (epochs, batch size) when it has one."""
    cases = []
    for name in experiments.names():
        fields = numeric_fields(name)
        floats = [(fl, "nan") for _, fl, e in fields if e is float]
        ints = [(fl, str(10**12)) for _, fl, e in fields if e is int]
        flag, value = (floats or ints)[0]
        cases.append(pytest.param(name, flag, value, id=f"{name}{flag}={value}"))
        counts = [fl for f, fl, e in fields if f in ("epochs", "batch_size", "max_iters")]
        if counts:
            cases.append(pytest.param(name, counts[0], "-1", id=f"{name}{counts[0]}=-1"))
    return cases


@pytest.mark.parametrize("name, flag, value", _end_to_end_cases())
def test_bad_value_end_to_end(name, flag, value, tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "dl1", "run", name, "--smoke", f"{flag}={value}", "--out_dir",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode in (1, 2), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists() or not any(p.is_dir() for p in out.rglob("*")), list(out.rglob("*"))
