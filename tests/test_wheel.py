"""dl1 as an installed wheel, not the repository: the wheel holds every subpackage and data file (the shipped tiny
Shakespeare), and, installed into a fresh virtual environment that reuses only the torch stack of ``.venv``, the tour
runs from an empty folder without reading any file of the repository."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, fashion_mnist_here, need
from setuptools import find_namespace_packages

SRC = ROOT / "src"
CORPUS = "dl1/data/corpora/tiny_shakespeare.txt"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel . --no-deps`` of a copy of the project (the build writes build/ and egg-info: never into the
    repository), with the setuptools of this environment (no build isolation: offline)."""
    tmp = tmp_path_factory.mktemp("wheel")
    copy = tmp / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    shutil.copytree(SRC, copy / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(copy), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = (tmp / "dist").glob("dl1-*.whl")
    return built


def test_wheel_holds_every_subpackage_module_and_the_corpus(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = [p for p in find_namespace_packages(str(SRC)) if p.split(".")[0] == "dl1" and "__pycache__" not in p]
    assert "dl1.train" in packages and "dl1.data" in packages
    for package in packages:  # every folder of src/dl1, and every file in it but caches
        folder = SRC.joinpath(*package.split("."))
        for path in folder.iterdir():
            if path.is_file() and path.suffix != ".pyc":
                rel = path.relative_to(SRC).as_posix()
                assert rel in names, f"{rel} is not in {wheel.name}"
    corpus = zipfile.ZipFile(wheel).read(CORPUS)
    assert len(corpus) == 1_115_394 and corpus.startswith(b"First Citizen:\n")
    from dl1.data.text import NAMED_CORPORA

    assert hashlib.sha256(corpus).hexdigest() == NAMED_CORPORA["shakespeare"][1]
    (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "dl1 = dl1.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.slow  # a venv, a wheel install and three tour parts: about a minute
def test_installed_wheel_runs_the_tour_from_an_empty_folder(wheel, tmp_path):
    """The wheel in a new venv; its dependencies come from this environment's site-packages through a .pth file
    appended AFTER the venv's own (so the wheel's dl1 wins, and the repository's editable install, a .pth inside
    that folder, is never processed)."""
    need("Fashion-MNIST", fashion_mnist_here(), "make test (apt-get install dataset-fashion-mnist)")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "zz_reuse_torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DL1_DATA", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", DL1_PROGRESS="0",
               TORCH_HOME=str(tmp_path / "torch_home"))  # not the repository's .torch_home (tests set that one)
    probe = subprocess.run([str(python), "-c", "import dl1, sys, json; print(json.dumps([dl1.__file__, sys.path]))"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    where, path = json.loads(probe.stdout)
    assert Path(where).is_relative_to(venv), where
    assert not any(Path(p).resolve() == SRC.resolve() for p in path if p), path
    tour = subprocess.run([str(venv / "bin" / "dl1"), "tour", "--budget", "quick", "--parts", "gnn", "gpt",
                           "mlp-numpy"], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert tour.returncode == 0, (tour.stdout + tour.stderr)[-3000:]
    summaries = {json.loads(p.read_text())["experiment"]: json.loads(p.read_text())
                 for p in work.glob("runs/**/summary.json")}
    assert {"gnn", "gpt", "mlp-numpy"} <= set(summaries), sorted(summaries)
    corpus = Path(summaries["gpt"]["data"]["txt_file"])
    assert corpus.is_relative_to(venv) and corpus.name == "tiny_shakespeare.txt"  # the wheel's own copy
    assert not summaries["gpt"]["data"]["synthetic"]
    repo = str(ROOT.resolve())
    for p in work.glob("runs/**/env.json"):  # no run recorded a dl1 checkout (a git commit of the repository)
        assert repo not in p.read_text(), p
    assert repo not in tour.stdout + tour.stderr
