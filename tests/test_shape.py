"""The package's shape: experiment and model modules import no matplotlib, ``dl1 run NAME --help`` imports no torch,
no module switches the global matplotlib backend or uses pyplot, and src/ cites no file that is not in it."""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

import dl1
from dl1 import experiments

SRC = Path(dl1.__file__).parent
HEAVY = ("torch", "matplotlib", "open_clip", "transformers", "torchvision")
MODELS = sorted(m.name for m in pkgutil.iter_modules([str(SRC / "models")]) if not m.name.startswith("_"))

PROBE = """
import json, sys
def loaded():
    return sorted(m for m in {heavy!r} if m in sys.modules)
import importlib
importlib.import_module({module!r})
after_import = loaded()
help_ok = None
if {help!r}:
    import contextlib, io
    from dl1.cli import main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["run", {name!r}, "--help"])
    help_ok = code == 0 and "(default:" in out.getvalue()
print(json.dumps({{"after_import": after_import, "after_help": loaded(), "help_ok": help_ok}}))
"""


@cache
def probe(module: str, name: str = "") -> dict:
    """Import ``module`` in a fresh interpreter (then, given an experiment name, run ``dl1 run NAME --help``) and
    report which heavy packages were loaded after each step."""
    code = PROBE.format(heavy=HEAVY, module=module, name=name, help=bool(name))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _experiment_module(name: str) -> str:
    return f"dl1.experiments.{name.replace('-', '_')}"


@pytest.mark.parametrize("name", experiments.names())
def test_experiment_import_has_no_matplotlib(name):
    result = probe(_experiment_module(name), name)
    assert "matplotlib" not in result["after_import"], f"import {_experiment_module(name)} loads matplotlib"


@pytest.mark.parametrize("name", experiments.names())
def test_run_help_imports_no_torch(name):
    result = probe(_experiment_module(name), name)
    assert result["help_ok"], f"dl1 run {name} --help did not print the flags"
    heavy = [m for m in result["after_help"] if m != "matplotlib"]
    assert not heavy, f"dl1 run {name} --help imports {', '.join(heavy)}"


@pytest.mark.parametrize("model", MODELS)
def test_model_import_has_no_matplotlib(model):
    result = probe(f"dl1.models.{model}")
    assert "matplotlib" not in result["after_import"], f"import dl1.models.{model} loads matplotlib"


@pytest.mark.parametrize("module", ["dl1.cli", "dl1.config", "dl1.run.folder", "dl1.run.reader", "dl1.run.device",
                                    "dl1.run.torchrun", "dl1.experiments", "dl1.errors", "dl1.sweep", "dl1.report.cli"])
def test_command_line_core_imports_nothing_heavy(module):
    result = probe(module)
    assert not result["after_import"], f"import {module} loads {', '.join(result['after_import'])}"


def test_list_imports_nothing_heavy():
    code = ("import contextlib, io, sys\nfrom dl1.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main(['list'])\nprint([m for m in {HEAVY!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def _grep(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if rx.search(line):
                hits.append(f"{path.relative_to(SRC.parent)}:{i}: {line.strip()}")
    return hits


def test_no_global_matplotlib_backend_or_pyplot():
    hits = _grep(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot|from matplotlib\.pyplot ")
    assert not hits, "use dl1.report.new_figure instead:\n" + "\n".join(hits)


def test_no_citation_of_a_missing_spec():
    hits = _grep("SPEC §")
    assert not hits, "say the fact itself:\n" + "\n".join(hits)
