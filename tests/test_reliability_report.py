"""What ``dl1 report`` and ``dl1 tour`` write from a run folder is escaped, and bad files are one line.

* Values from ``config.json``, ``argv.txt`` and file names are text in ``report.md`` / ``report.html``: ``<script>``
  and a figure named ``<img src=x onerror=...>.png`` come out escaped, a ``|`` or a newline (GPT's default sample
  prompt is ``"\\n"``) cannot shift a table's columns, and the ``Command:`` line is shell-quoted inside a code span,
  so that pasting it (or a shell reading it) runs nothing of what a hostile ``argv.txt`` holds.
* A cut ``samples/epoch_*.npz``, one that declares a 745 GiB array in a few bytes, and one holding Python objects are
  one line each under ``dl1 report`` (the header is checked against the file's size before anything is loaded).
* A TorchScript archive given as a checkpoint or weights file is refused with one line and no torch warning before
  it.
"""

import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from dl1.report import markdown

HOSTILE = "<script>alert(1)</script>"


def _dl1(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "DL1_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "dl1", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in (("mlp-numpy", []), ("gpt", ["--max_iters", "4", "--eval_interval", "2"]), ("vae", [])):
        proc = _dl1("run", name, "--smoke", *extra, "--run_dir", name, cwd=root)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[name] = root / name
    return out


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells, split as GitHub does: on every ``|`` not escaped with a backslash."""
    inner = line.strip()[1:-1] if line.strip().startswith("|") else line
    return re.split(r"(?<!\\)\|", inner)


def _outside_code_spans(text: str) -> str:
    return re.sub(r"(`+)(.+?)\1", "", text)


def _tables_are_whole(text: str) -> int:
    """Assert every row of every table has its header's number of cells; return how many rows were checked."""
    rows, width = 0, None
    for line in text.splitlines():
        if not line.startswith("|"):
            width = None
            continue
        cells = len(_cells(line))
        if width is None:
            width = cells
        assert cells == width, (line, width)
        rows += 1
    return rows


# -- escaping --------------------------------------------------------------------------------------------------------
def test_markdown_escapes_hostile_values():
    assert "<" not in markdown.cell(HOSTILE) and "<" not in markdown.text(HOSTILE)
    assert len(_cells(f"| {markdown.cell('a|b')} | {markdown.code('c|d', table=True)} |")) == 2
    assert markdown.cell("\n") == "\\\\n" and "\n" not in markdown.code("a\nb")
    assert markdown.code("a`b") == "``a`b``" and markdown.code("`") == "`` ` ``"
    assert markdown.cell("test_accuracy") == "test_accuracy" and markdown.cell("results.test.top1") == \
        "results.test.top1"
    assert markdown.image("x", "figures/a)<b> c.png") == "![x](figures/a%29%3Cb%3E%20c.png)"
    assert markdown.command("dl1 run gpt --sample_prompt '$(id)'") == "`dl1 run gpt --sample_prompt '$(id)'`"
    assert markdown.command("dl1 run gpt --x $(id) `id`") == "``dl1 run gpt --x '$(id)' '`id`'``"
    assert markdown.html(HOSTILE) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert markdown.fenced("a\n````\nb", "text") == ["`````text", "a", "````", "b", "`````"]


def test_report_of_a_hostile_run_folder_is_inert(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["mlp-numpy"], run)
    config = json.loads((run / "config.json").read_text())
    config.update(note=HOSTILE, pipe="a | b\nc")
    (run / "config.json").write_text(json.dumps(config))
    with (run / "argv.txt").open("a") as fh:
        fh.write('dl1 run mlp-numpy --smoke --note "$(touch PWNED)" `touch PWNED2`\n')
    png = next((run / "figures").glob("*.png"))
    for name in ("<img src=x onerror=alert(1)>.png", "a](javascript:alert(1)).png"):
        shutil.copyfile(png, run / "figures" / name)
    proc = _dl1("report", str(run), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (run / "report.md").read_text()
    markup = _outside_code_spans(md)  # a code span shows "<script>" as text (CommonMark escapes its content)
    assert "<script" not in markup
    assert "<img" not in markup
    assert not re.search(r"(?<!\\)\]\(javascript:", markup)  # an escaped "\](" ends no link text
    assert _tables_are_whole(md) >= 10
    command = re.search(r"^Command: (`+)(.*)\1$", md, re.M)
    assert command, md[:500]
    words = shlex.split(command.group(2))
    assert "$(touch PWNED)" in words and "`touch" in words  # the words as a shell splits them, each quoted
    shell = subprocess.run(["sh", "-c", f"set -- {command.group(2)}"], cwd=tmp_path, capture_output=True)
    assert shell.returncode == 0 and not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
    targets = re.findall(r"!\[(?:[^\]\\]|\\.)*\]\(([^)]+)\)", md)
    assert len(targets) >= 3 and all((run / unquote(t)).is_file() for t in targets)


def test_comparison_with_gpt_default_prompt_keeps_its_columns(runs, tmp_path):
    proc = _dl1("report", str(runs["gpt"]), str(runs["mlp-numpy"]), "--out", "cmp.md", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "cmp.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| run |"))
    assert "sample\\_prompt" in header or "sample_prompt" in header  # the prompt differs: one of the columns
    assert _tables_are_whole(text) >= 4
    assert "\\\\n" in text  # the "\n" prompt shown as \n


def test_tour_report_escapes_flag_values(tmp_path):
    out = tmp_path / "tours"
    proc = _dl1("tour", "--budget", "quick", "--parts", "gpt", "--txt_file", f"{HOSTILE}|x", "--out_dir", str(out),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (folder,) = [p for p in out.iterdir() if p.is_dir() and p.name != "cache"]
    md, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    assert "skipped" in md and "<script>alert" not in _outside_code_spans(md) and "<script>alert" not in page
    assert _tables_are_whole(md) >= 3


# -- snapshots ------------------------------------------------------------------------------------------------------
def _bad_snapshot(run: Path, kind: str) -> Path:
    path = run / "samples" / "epoch_001.npz"
    if kind == "cut":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "huge":  # a valid archive whose array header declares 200e9 float32 (745 GiB) in 64 bytes
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (200_000_000_000,)})
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("samples.npy", header.getvalue() + bytes(64))
    else:  # an object array: loading it would unpickle
        np.savez(path, samples=np.array([{"a": 1}], dtype=object))
    return path


@pytest.mark.parametrize("kind, says", [("cut", "not a readable snapshot"),
                                        ("huge", "declares an array of shape (200000000000,) float32 (745 GiB)"),
                                        ("objects", "Python objects")])
def test_bad_snapshot_is_one_line(runs, tmp_path, kind, says):
    run = tmp_path / "run"
    shutil.copytree(runs["vae"], run)
    path = _bad_snapshot(run, kind)
    proc = _dl1("report", str(run), cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and says in lines[0], proc.stderr[-2000:]


# -- no warning before a refusal -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torchscript(tmp_path_factory) -> Path:
    import torch

    class AddOne(torch.nn.Module):
        def forward(self, x):
            return x + 1

    path = tmp_path_factory.mktemp("ts") / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scripting itself is deprecated: not what is tested
        torch.jit.save(torch.jit.trace(AddOne(), torch.zeros(1)), str(path))
    return path


@pytest.mark.parametrize("args", [["generate", "--checkpoint", "{ts}"],
                                  ["run", "resnet-transfer", "--smoke", "--weights", "{ts}", "--run_dir", "r"],
                                  ["run", "gpt", "--smoke", "--resume", "{ts}", "--run_dir", "g"]])
def test_torchscript_archive_is_refused_without_a_warning(torchscript, tmp_path, args):
    proc = _dl1(*[a.format(ts=torchscript) for a in args], cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "TorchScript archive" in lines[0], proc.stderr
