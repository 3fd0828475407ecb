"""A full disk is one line, and leaves nothing half-made (issue 26, items 2 and 3): a fresh run onto a full disk
leaves no folder that blocks a rerun, and an export onto a full disk leaves ``--out`` as it was (an earlier export
byte for byte, no temporary folder beside it).

The full disk is simulated in-process, below one folder only: every file dl1 writes there (through
:mod:`dl1.run.files`, and the pid in ``run.lock``) fails with ``ENOSPC`` as the kernel's write does, and with
``completely=True`` so does creating a folder.  (Checked by hand on a 1 MiB tmpfs too; see the issue's report.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

import dl1.run.files
from dl1.cli import main
from dl1.experiments import execute
from dl1.export import load_model

NO_SPACE = os.strerror(errno.ENOSPC)


class _FullFile:
    """An open file whose every write fails as on a full disk."""

    def __init__(self, real: Any):
        self._real = real

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, NO_SPACE)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._real.close()


def full_disk(monkeypatch, root: Path, completely: bool) -> None:
    """Make the disk below ``root`` full (see the module's doc); ``monkeypatch.undo()`` frees it."""
    root = root.resolve()
    fds: set[int] = set()

    def below(path: Any) -> bool:
        try:
            Path(os.path.abspath(os.fsdecode(path))).resolve().relative_to(root)
        except (ValueError, TypeError):
            return False
        return True

    real_open, real_mkdir, real_pwrite = os.open, os.mkdir, os.pwrite

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if flags & (os.O_WRONLY | os.O_RDWR) and below(path):
            fds.add(fd)
        return fd

    def fake_file(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        real = open(file, mode, *args, **kwargs)
        return _FullFile(real) if (isinstance(file, int) and file in fds) or (
            not isinstance(file, int) and below(file) and mode[:1] in "wax") else real

    def fake_pwrite(fd: int, data: bytes, offset: int) -> int:
        if fd in fds:
            raise OSError(errno.ENOSPC, NO_SPACE)
        return real_pwrite(fd, data, offset)

    def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if below(path) and not os.path.lexists(path):
            raise OSError(errno.ENOSPC, NO_SPACE)
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "pwrite", fake_pwrite)
    monkeypatch.setattr(dl1.run.files, "open", fake_file, raising=False)
    if completely:
        monkeypatch.setattr(os, "mkdir", fake_mkdir)


def one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("completely", [True, False], ids=["no-folder-either", "folders-but-no-file"])
@pytest.mark.parametrize("where", ["--run_dir", "--out_dir"])
def test_a_fresh_run_onto_a_full_disk_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys, completely,
                                                                       where):
    disk = tmp_path / "disk"
    disk.mkdir()
    folder = disk / ("run" if where == "--run_dir" else "runs")
    argv = ["run", "mlp-numpy", "--smoke", where, str(folder)]
    full_disk(monkeypatch, disk, completely)
    assert main(argv) == 1
    one_line(capsys, "No space left on device")
    assert list(disk.iterdir()) == []  # no half-made folder (nor its parents)
    monkeypatch.undo()  # space freed: the same command now runs, into the same folder
    assert main(argv) == 0
    run = folder if where == "--run_dir" else next(folder.glob("mlp-numpy/*"))
    assert (run / "summary.json").is_file() and (run / "checkpoints" / "best.npz").is_file()


def test_a_full_disk_after_the_run_folder_was_made_leaves_no_records(tmp_path, monkeypatch, capsys):
    """The folder exists (the user made it, empty) and the disk is full: its first records cannot be written, and the
    folder stays empty, so that the same --run_dir is taken again once there is space."""
    run = tmp_path / "run"
    run.mkdir()
    full_disk(monkeypatch, tmp_path, completely=False)
    assert main(["run", "mlp-numpy", "--smoke", "--run_dir", str(run)]) == 1
    one_line(capsys, "No space left on device")
    assert list(run.iterdir()) == []
    monkeypatch.undo()
    assert main(["run", "mlp-numpy", "--smoke", "--run_dir", str(run)]) == 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return Path(execute("mlp-pytorch", [], smoke=True, out_dir=tmp_path_factory.mktemp("disk-runs"),
                        quiet=True)["run_dir"])


@pytest.mark.parametrize("completely", [True, False], ids=["no-folder-either", "folders-but-no-file"])
@pytest.mark.parametrize("earlier", [True, False], ids=["over-an-earlier-export", "into-a-new-folder"])
def test_an_export_onto_a_full_disk_is_one_line_and_leaves_out_as_it_was(finished, tmp_path, monkeypatch, capsys,
                                                                         completely, earlier):
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "exported"
    if earlier:
        assert main(["export", str(finished), "--out", str(out)]) == 0
        (out / "config.json").write_text((out / "config.json").read_text().replace('"load"', '"earlier": 1, "load"'))
        capsys.readouterr()
    before = snapshot(disk)
    full_disk(monkeypatch, disk, completely)
    assert main(["export", str(finished), "--out", str(out)]) == 1
    one_line(capsys, "No space left on device", str(out))
    assert snapshot(disk) == before  # the earlier export byte for byte; nothing beside it
    assert sorted(p.name for p in disk.iterdir()) == (["exported"] if earlier else [])
    monkeypatch.undo()
    if earlier:
        assert not load_model(out).training  # still a working export
    assert main(["export", str(finished), "--out", str(out)]) == 0
    assert '"earlier"' not in (out / "config.json").read_text() and sorted(p.name for p in disk.iterdir()) == \
        ["exported"]


def test_the_simulated_full_disk_fails_like_a_real_one(tmp_path, monkeypatch):
    """The simulation is the kernel's answer: OSError ENOSPC from the write, none outside the full folder."""
    from dl1.errors import DL1Error
    from dl1.run.files import append_text, write_text_atomic

    full_disk(monkeypatch, tmp_path / "disk", completely=True)
    (tmp_path / "elsewhere").mkdir()
    write_text_atomic(tmp_path / "elsewhere" / "a.txt", "fine")
    with pytest.raises(OSError) as info:
        (tmp_path / "disk").mkdir()
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    (tmp_path / "disk").mkdir()
    full_disk(monkeypatch, tmp_path / "disk", completely=False)
    for write in (lambda p: write_text_atomic(p, "x"), lambda p: append_text(p, "x")):
        with pytest.raises(DL1Error, match="No space left on device"):
            write(tmp_path / "disk" / "b.txt")
    assert not [p for p in (tmp_path / "disk").iterdir() if p.name != "b.txt"]  # no temporary file left
