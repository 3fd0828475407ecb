"""The run package: nothing is written through a symbolic link planted in a run folder, every JSON dl1 reads is bounded
in depth and number size (a hostile file is one line, never a traceback), a killed writer's partial files are removed
when the folder is opened, and :class:`RunFolder` is the one read side of a run folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dl1.cli import main
from dl1.errors import DL1Error
from dl1.run import files
from dl1.run.files import loads, open_nofollow, read_json, read_jsonl_counted, safe_path, write_atomic, write_json
from dl1.run.folder import Run
from dl1.run.lock import LOCK_NAME
from dl1.run.reader import RunFolder

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_INT = b'{"experiment": "mlp-pytorch", "lr": ' + b"9" * 5000 + b"}"
SECRET = b"outside the run folder: never written by dl1\n"


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    """A file in a temporary folder of its own, which the links planted in run folders point to."""
    path = tmp_path_factory.mktemp("outside") / "target.txt"
    path.write_bytes(SECRET)
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dl1", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _assert_one_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode != 0 and "Traceback" not in err and err.count("\n") == 0, err
    for word in words:
        assert word in err, err


# -- no write through a link ----------------------------------------------------------------------------------------
def test_atomic_write_refuses_a_link_and_leaves_its_target(tmp_path, outside):
    link = tmp_path / "summary.json"
    link.symlink_to(outside)
    with pytest.raises(DL1Error, match="symbolic link") as err:
        write_json(link, {"a": 1})
    assert str(link) in str(err.value)
    assert outside.read_bytes() == SECRET and link.is_symlink() and not list(tmp_path.glob(".*.tmp"))


def test_a_linked_folder_inside_the_owned_one_is_refused(tmp_path, outside):
    (tmp_path / "figures").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(DL1Error, match="figures is a symbolic link"):
        write_atomic(tmp_path / "figures" / "target.txt", lambda fh: fh.write(b"x"), root=tmp_path)
    with pytest.raises(DL1Error, match="symbolic link"):
        safe_path(tmp_path, "figures/target.txt")
    assert outside.read_bytes() == SECRET


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", ""])
def test_safe_path_keeps_names_inside_the_folder(tmp_path, name):
    with pytest.raises(DL1Error, match="refusing to write"):
        safe_path(tmp_path, name)


@pytest.mark.parametrize("mode", ["w", "a", "wb", "x"])
def test_open_nofollow_refuses_a_link(tmp_path, outside, mode):
    link = tmp_path / "samples.txt"
    link.symlink_to(outside)
    with pytest.raises(DL1Error, match="symbolic link"):
        open_nofollow(link, mode)
    assert outside.read_bytes() == SECRET
    with open_nofollow(tmp_path / "plain.txt", mode) as fh:
        fh.write(b"ok" if "b" in mode else "ok")
    assert (tmp_path / "plain.txt").read_text() == "ok"


def test_run_refuses_a_linked_metrics_file(tmp_path, outside, capsys):
    run = Run("demo", {"lr": 0.1}, directory=tmp_path / "run", quiet=True)
    run.log(1, "train", {"loss": 1.0})
    (run.dir / "metrics.jsonl").unlink()
    (run.dir / "metrics.jsonl").symlink_to(outside)
    with pytest.raises(DL1Error, match="metrics.jsonl"):
        run.log(2, "train", {"loss": 0.5})
    with pytest.raises(DL1Error, match="symbolic link"):
        run.truncate_after(1)
    run.close()
    assert outside.read_bytes() == SECRET


@pytest.mark.parametrize("name", ["figures", "checkpoints", LOCK_NAME])
def test_run_refuses_a_folder_with_a_planted_link(tmp_path, outside, name):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / name).symlink_to(outside.parent if name != LOCK_NAME else outside)
    with pytest.raises(DL1Error, match="symbolic link"):
        Run("demo", {"lr": 0.1}, directory=folder, quiet=True)
    assert outside.read_bytes() == SECRET and outside.parent.joinpath("target.txt").exists()
    assert sorted(p.name for p in outside.parent.iterdir()) == ["target.txt"]


def test_run_figure_path_and_save_json_refuse_links(tmp_path, outside):
    run = Run("demo", {"lr": 0.1}, directory=tmp_path / "run", quiet=True)
    (run.figures / "curves.png").symlink_to(outside)
    with pytest.raises(DL1Error, match="curves.png"):
        run.figure_path("curves.png")
    (run.dir / "extra.json").symlink_to(outside)
    with pytest.raises(DL1Error, match="extra.json"):
        run.save_json("extra.json", {"a": 1})
    run.close()
    assert outside.read_bytes() == SECRET


def test_checkpoint_save_refuses_a_linked_checkpoint(tmp_path, outside):
    import torch

    from dl1.train import save_checkpoint

    link = tmp_path / "checkpoints" / "best.pt"
    link.parent.mkdir()
    link.symlink_to(outside)
    with pytest.raises(DL1Error, match="best.pt"):
        save_checkpoint(link, {"w": torch.zeros(2)})
    assert outside.read_bytes() == SECRET


# -- partial files of a killed writer -------------------------------------------------------------------------------
def test_stale_temporary_checkpoints_are_removed_when_the_folder_is_opened(tmp_path, capsys):
    run = Run("demo", {"lr": 0.1}, directory=tmp_path / "run", quiet=True)
    run.log(1, "train", {"loss": 1.0})
    run.close()
    stale = run.checkpoints / ".last.pt.999999.0123abcd.tmp"
    stale.write_bytes(b"\0" * 1000)
    keep = run.checkpoints / "notes.tmp"  # not a name of dl1's writer
    keep.write_text("mine")
    capsys.readouterr()
    again = Run("demo", {"lr": 0.1}, directory=run.dir, quiet=True)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "removed 1 partial file" in err and stale.name in err
    assert not stale.exists() and keep.exists()
    again.close()


# -- JSON limits ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, words", [(DEEP, "nested deeper"), (HUGE_INT, "characters"),
                                         (b"[" * 150 + b"]" * 150, "nested deeper"),
                                         (b'{"x": 1' + b"0" * 500 + b'.5}', "characters")])
def test_hostile_json_is_one_line_naming_the_file(tmp_path, data, words):
    path = tmp_path / "config.json"
    path.write_bytes(data)
    with pytest.raises(DL1Error, match=words) as err:
        read_json(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_json_within_the_limits_reads_as_before(tmp_path):
    value = {"seed": 2**64, "lr": 1e-300, "deep": [[[[[1]]]]], "inf": "inf"}
    assert loads(json.dumps(value), "x") == value
    assert files.MAX_JSON_DEPTH >= 20 and files.MAX_NUMBER_CHARS >= 25


def test_hostile_metric_lines_are_counted_not_raised(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "split": "train", "loss": 1.0}\n' + DEEP + b"\n"
                     + b'{"step": 2, "split": "train", "loss": ' + b"1" * 5000 + b"}\n")
    records, bad = read_jsonl_counted(path)
    assert [r["step"] for r in records] == [1] and bad == 2


# -- the read side --------------------------------------------------------------------------------------------------
def test_run_folder_reads_what_run_wrote(tmp_path):
    run = Run("demo", {"lr": 0.1}, directory=tmp_path / "run", quiet=True)
    run.log(1, "train", {"loss": 1.0})
    (run.checkpoints / "last.pt").write_bytes(b"x")
    run.finish(test={"acc": 0.5})
    run.close()
    folder = RunFolder(run.dir)
    assert folder.is_run() and folder.holds_run() and folder.experiment == "demo"
    assert folder.config == {"experiment": "demo", "lr": 0.1}
    assert folder.summary["test"] == {"acc": 0.5} and folder.env["device"] == "cpu"
    assert [r["loss"] for r in folder.metrics] == [1.0] and folder.bad_lines == 0
    assert folder.checkpoint() == folder.checkpoint(prefer="last") == run.checkpoints / "last.pt"
    assert RunFolder(tmp_path / "none").config == {} and not RunFolder(tmp_path / "none").is_run()


def test_run_records_the_device_it_is_told(tmp_path):
    run = Run("demo", {}, directory=tmp_path / "run", quiet=True, distributed={"backend": "gloo", "world_size": 2})
    run.device = "cuda:1"
    run.finish()
    run.close()
    env = RunFolder(run.dir).env
    assert env["device"] == "cuda:1" and env["world_size"] == 2 and env["distributed"]["backend"] == "gloo"


# -- through the command line ---------------------------------------------------------------------------------------
def _fake_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"experiment": "not-an-experiment", "lr": 0.1}))
    (folder / "summary.json").write_text(json.dumps({"test": {"acc": 0.5}}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "split": "train", "loss": 1.0 / s}) + "\n"
                                                  for s in (1, 2, 3)))
    return folder


@pytest.mark.parametrize("name", ["config.json", "summary.json"])
@pytest.mark.parametrize("content", [DEEP, HUGE_INT], ids=["deep", "huge-int"])
def test_report_of_hostile_json_is_one_line(tmp_path, capsys, name, content):
    run = _fake_run(tmp_path / "r")
    (run / name).write_bytes(content)
    assert main(["report", str(run)]) == 1
    assert name in one_error_line(capsys)


def test_report_of_hostile_metric_lines_warns_in_one_line(tmp_path, capsys):
    run = _fake_run(tmp_path / "r")
    with open(run / "metrics.jsonl", "ab") as fh:
        fh.write(DEEP + b"\n" + b'{"step": 4, "split": "train", "loss": ' + b"7" * 5000 + b"}\n")
    assert main(["report", str(run)]) == 0
    assert "2 line(s)" in one_error_line(capsys)


def test_report_of_deep_config_in_a_fresh_process_is_one_line(tmp_path):
    run = _fake_run(tmp_path / "r")
    (run / "config.json").write_bytes(DEEP)
    _assert_one_line(_cli("report", str(run)), "config.json")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished mlp-pytorch smoke run (checkpoints/last.pt and best.pt)."""
    from dl1 import experiments

    out = tmp_path_factory.mktemp("trained")
    return Path(experiments.execute("mlp-pytorch", [], smoke=True, out_dir=out, quiet=True)["run_dir"])


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("content", [DEEP, HUGE_INT], ids=["deep", "huge-int"])
def test_resume_of_hostile_config_is_one_line(run_copy, content):
    (run_copy / "config.json").write_bytes(content)
    before = sorted(p.name for p in run_copy.rglob("*"))
    _assert_one_line(_cli("run", "mlp-pytorch", "--smoke", "--resume", str(run_copy)), "config.json")
    assert sorted(p.name for p in run_copy.rglob("*")) == before


def test_resume_refuses_a_linked_metrics_file_and_checkpoint(run_copy, outside):
    (run_copy / "metrics.jsonl").unlink()
    (run_copy / "metrics.jsonl").symlink_to(outside)
    (run_copy / "checkpoints" / "best.pt").unlink()
    (run_copy / "checkpoints" / "best.pt").symlink_to(outside)
    proc = _cli("run", "mlp-pytorch", "--smoke", "--resume", str(run_copy), "--epochs", "3")
    _assert_one_line(proc, "symbolic link")
    assert outside.read_bytes() == SECRET


def test_resume_removes_a_killed_writers_partial_checkpoint(run_copy):
    stale = run_copy / "checkpoints" / ".last.pt.999999.0123abcd.tmp"
    stale.write_bytes(b"\0" * 4096)
    proc = _cli("run", "mlp-pytorch", "--smoke", "--resume", str(run_copy), "--epochs", "3")
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and "removed 1 partial file" in proc.stderr
