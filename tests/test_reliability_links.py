"""Nothing dl1 writes goes through a symbolic link planted in a folder it owns (issue 26, item 1): ``dl1 report``
(``report.md``, ``figures/*.png``, the ``figures`` folder, a comparison's ``--out``), ``dl1 export`` (a linked
``RUN/export``, a link inside an earlier export, a linked ``--out``), GPT ``--resume`` (a linked ``samples.txt``) and
``dl1 sweep`` (a linked ``sweep.json``).  Each test plants links to a file (or folder) outside the run's folder, runs
the real command line, and checks that it says one line, exits non-zero, and left the outside file unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dl1.cli import main
from dl1.experiments import execute

SECRET = "# a file outside every dl1 folder: it must stay as it is\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("link-runs")
    return {name: Path(execute(name, [], smoke=True, out_dir=out, quiet=True)["run_dir"])
            for name in ("mlp-numpy", "gpt")}


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    """A file outside the test's temporary folder (and every run folder), which the planted links point to."""
    path = tmp_path_factory.mktemp("elsewhere") / "bashrc"
    path.write_text(SECRET)
    return path


def copy_run(runs: dict[str, Path], name: str, tmp_path: Path) -> Path:
    """A private copy of a finished run folder (each test plants its own links)."""
    return Path(shutil.copytree(runs[name], tmp_path / "run", symlinks=True))


def plant(link: Path, target: Path) -> None:
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(target)


def one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


@pytest.mark.parametrize("planted", ["report.md", "figures/curves.png", "figures/confusion_matrix.png"])
def test_report_refuses_a_linked_report_or_figure(runs, tmp_path, outside, capsys, planted):
    run = copy_run(runs, "mlp-numpy", tmp_path)
    plant(run / planted, outside)
    assert main(["report", str(run)]) == 1
    one_line(capsys, "symbolic link", planted.split("/")[-1])
    assert outside.read_text() == SECRET
    assert (run / planted).is_symlink()  # the link itself is left for the user to look at


def test_report_refuses_a_linked_figures_folder(runs, tmp_path, outside, capsys):
    run = copy_run(runs, "mlp-numpy", tmp_path)
    plant(run / "figures", outside.parent)
    assert main(["report", str(run)]) == 1
    one_line(capsys, "symbolic link", "figures")
    assert [p.name for p in outside.parent.iterdir()] == ["bashrc"] and outside.read_text() == SECRET
    assert not (run / "report.md").exists()


def test_report_writes_the_command_line_of_argv_txt_but_never_through_a_link(runs, tmp_path, outside, capsys):
    """The issue's probe: argv.txt holding backticks, report.md a link to a shell start-up file."""
    run = copy_run(runs, "mlp-numpy", tmp_path)
    (run / "argv.txt").write_text("dl1 run mlp-numpy --smoke `touch pwned`\n")
    plant(run / "report.md", outside)
    assert main(["report", str(run)]) == 1
    one_line(capsys, "symbolic link")
    assert outside.read_text() == SECRET
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0  # without the link: the report, with the command as recorded
    assert "pwned" in (run / "report.md").read_text() and outside.read_text() == SECRET


def test_comparison_refuses_a_linked_out(runs, tmp_path, outside, capsys):
    first = copy_run(runs, "mlp-numpy", tmp_path)
    second = Path(shutil.copytree(first, tmp_path / "run2"))
    link = tmp_path / "comparison.md"
    link.symlink_to(outside)
    assert main(["report", str(first), str(second), "--out", str(link)]) == 1
    one_line(capsys, "symbolic link", "comparison.md")
    assert outside.read_text() == SECRET


def test_export_refuses_a_linked_export_folder(runs, tmp_path, outside, capsys):
    run = copy_run(runs, "mlp-numpy", tmp_path)
    plant(run / "export", outside.parent)
    assert main(["export", str(run)]) == 1
    one_line(capsys, "symbolic link", "export")
    assert [p.name for p in outside.parent.iterdir()] == ["bashrc"] and outside.read_text() == SECRET


def test_export_refuses_a_linked_out_folder(runs, tmp_path, outside, capsys):
    run = copy_run(runs, "mlp-numpy", tmp_path)
    link = tmp_path / "exported"
    link.symlink_to(outside.parent, target_is_directory=True)
    assert main(["export", str(run), "--out", str(link)]) == 1
    one_line(capsys, "symbolic link")
    assert [p.name for p in outside.parent.iterdir()] == ["bashrc"] and outside.read_text() == SECRET


def test_export_refuses_an_earlier_export_with_a_link_inside(runs, tmp_path, outside, capsys):
    run = copy_run(runs, "mlp-numpy", tmp_path)
    assert main(["export", str(run)]) == 0
    capsys.readouterr()
    plant(run / "export" / "model.safetensors", outside)
    assert main(["export", str(run)]) == 2
    one_line(capsys, "--out", "not empty")
    assert outside.read_text() == SECRET and (run / "export" / "model.safetensors").is_symlink()


def test_gpt_resume_refuses_a_linked_samples_txt(runs, tmp_path, outside, capsys):
    run = copy_run(runs, "gpt", tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    plant(run / "samples.txt", outside)
    assert main(["run", "gpt", "--smoke", "--resume", str(run)]) == 1
    one_line(capsys, "symbolic link", "samples.txt")
    assert outside.read_text() == SECRET
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.is_symlink()}
    assert after == {k: v for k, v in before.items() if k != "samples.txt"}  # the run's records untouched


def test_resume_refuses_a_linked_checkpoint_folder_entry(runs, tmp_path, outside, capsys):
    run = copy_run(runs, "gpt", tmp_path)
    plant(run / "figures" / "gpt_loss.png", outside)
    assert main(["run", "gpt", "--smoke", "--resume", str(run)]) == 1
    one_line(capsys, "symbolic link", "gpt_loss.png")
    assert outside.read_text() == SECRET


def test_sweep_refuses_a_linked_sweep_json(tmp_path, outside, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").symlink_to(outside)
    assert main(["sweep", "mlp-numpy", "--grid", "seed=1", "--sweep_dir", str(sweep), "--", "--smoke"]) == 1
    one_line(capsys, "symbolic link", "sweep.json")
    assert outside.read_text() == SECRET
    assert sorted(p.name for p in sweep.iterdir()) == ["sweep.json"]  # no run started


def test_writers_refuse_links_below_the_folder_they_own(tmp_path, outside):
    """The helpers every writer above goes through: the file, and every folder between the owned one and it."""
    from dl1.errors import DL1Error
    from dl1.report import new_figure, save_figure
    from dl1.run.files import check_tree, make_folder, write_text_atomic

    owned = tmp_path / "owned"
    (owned / "figures").mkdir(parents=True)
    (owned / "figures" / "a.png").symlink_to(outside)
    fig, _ = new_figure()
    with pytest.raises(DL1Error, match="symbolic link"):
        save_figure(fig, owned / "figures" / "a.png")
    with pytest.raises(DL1Error, match="symbolic link"):
        check_tree(owned / "figures")
    (owned / "sub").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(DL1Error, match="symbolic link"):
        write_text_atomic(owned / "sub" / "x.md", "x", root=owned)
    with pytest.raises(DL1Error, match="symbolic link"):
        make_folder(owned / "sub" / "deeper", owned)
    with pytest.raises(DL1Error, match="symbolic link"):
        save_figure(fig, owned / "sub" / "b.png")
    assert [p.name for p in outside.parent.iterdir()] == ["bashrc"] and outside.read_text() == SECRET
    assert save_figure(fig, owned / "figures" / "c.png").read_bytes()[:4] == b"\x89PNG"
