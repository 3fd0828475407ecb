"""dl1 bench's table: measured, recorded and missing references; the alternating rounds of benchmarks/prompt_step."""

from __future__ import annotations

import importlib.util
from argparse import Namespace
from pathlib import Path

from dl1.bench import print_table, ratio_rows


def _benchmark(name: str):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(out: str, case: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if case in ln)
    return [c.strip() for c in line.split("  ") if c.strip()]


def test_references_are_measured_recorded_or_not_measured(capsys):
    rows = ratio_rows({"rows": [
        {"case": "measured", "threads": 1, "ours": 2.0, "reference": 1.0, "ratio": 2.0, "goal": "<= 1.10"},
        {"case": "stored", "threads": 1, "ours": 2.0, "reference": 4.0, "ratio": 0.5, "goal": ">= 1",
         "recorded": "peer README"},
        {"case": "absent", "threads": 1, "ours": 2.0, "reference": None, "ratio": None, "goal": None}]})
    print_table({"demo": rows})
    out = capsys.readouterr().out
    assert _cells(out, "measured") == ["demo", "measured", "1", "2", "1", "2", "<= 1.10"]
    assert _cells(out, "stored") == ["demo", "stored", "1", "2", "4 recorded (peer README)", "0.5", ">= 1"]
    assert _cells(out, "absent") == ["demo", "absent", "1", "2", "not measured", "—"]


def test_prompt_step_times_every_step_in_each_rotating_round():
    bench = _benchmark("prompt_step")
    calls: list[str] = []
    steps = {name: (lambda n=name: calls.append(n)) for name in ("plain", "a", "b", "c")}
    times = bench.alternate(steps, Namespace(warmup=1, repeats=3), Namespace(type="cpu"))
    assert {k: len(v) for k, v in times.items()} == {"plain": 3, "a": 3, "b": 3, "c": 3}
    warmup, rounds = calls[:4], calls[4:]
    assert warmup == ["plain", "a", "b", "c"]
    assert rounds == ["plain", "a", "b", "c", "a", "b", "c", "plain", "b", "c", "plain", "a"]
