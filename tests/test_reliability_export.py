"""``dl1 export`` never overwrites another run's records and exits 0 only with a model that loads (issue 26, item 2).

``--out`` refuses the run's own folder, another run's folder and a folder that is neither empty nor an earlier export
(an export is recognised by its ``config.json``: ``"format": "dl1-export"``, or a ``GPT2LMHeadModel`` config beside
``char_tokenizer.json``), and replaces an earlier export whole.  A run whose ``config.json`` disagrees with its
weights, or lacks a key the model needs, is one line with nothing written.  The export is written into a folder beside
``--out`` and renamed into place: a full disk (simulated in :mod:`tests.test_reliability_disk`) leaves ``--out`` as it
was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dl1.cli import main
from dl1.experiments import execute
from dl1.export import load_model


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export-runs")
    return {"first": Path(execute("mlp-numpy", [], smoke=True, out_dir=out, quiet=True)["run_dir"]),
            "other": Path(execute("mlp-pytorch", [], smoke=True, out_dir=out, quiet=True)["run_dir"])}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (hidden ones too) with its bytes: what "unchanged" means here."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


def copy_run(run: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(run, tmp_path / name))


@pytest.mark.parametrize("which", ["itself", "other"])
def test_out_refuses_a_run_folder(runs, which, capsys):
    target = runs["first"] if which == "itself" else runs["other"]
    before = snapshot(target)
    assert main(["export", str(runs["first"]), "--out", str(target)]) == 2
    one_line(capsys, "is a run folder")
    assert snapshot(target) == before  # config.json, metrics, checkpoints: byte for byte
    assert json.loads((target / "config.json").read_text())["experiment"] == \
        ("mlp-numpy" if which == "itself" else "mlp-pytorch")


def test_out_refuses_a_run_folder_that_has_only_its_config(runs, tmp_path, capsys):
    """A run killed early: config.json naming its experiment, nothing else."""
    target = tmp_path / "young-run"
    target.mkdir()
    (target / "config.json").write_text(json.dumps({"experiment": "vae", "epochs": 40}))
    assert main(["export", str(runs["first"]), "--out", str(target)]) == 2
    one_line(capsys, "is a run folder")
    assert json.loads((target / "config.json").read_text()) == {"experiment": "vae", "epochs": 40}


@pytest.mark.parametrize("files", [{"notes.txt": "mine"}, {"config.json": '{"not": "an export"}'},
                                   {"config.json": '{"format": "dl1-export"}', "extra": {}}])
def test_out_refuses_a_folder_that_is_not_empty_and_not_an_export(runs, tmp_path, capsys, files):
    target = tmp_path / "mine"
    target.mkdir()
    for name, text in files.items():
        if isinstance(text, dict):
            (target / name).mkdir()
        else:
            (target / name).write_text(text)
    before = snapshot(target)
    assert main(["export", str(runs["first"]), "--out", str(target)]) == 2
    one_line(capsys, "not empty")
    assert snapshot(target) == before and sorted(p.name for p in target.iterdir()) == sorted(files)


def test_out_takes_an_empty_folder_and_replaces_an_earlier_export(runs, tmp_path, capsys):
    target = tmp_path / "exported"
    target.mkdir()
    assert main(["export", str(runs["first"]), "--out", str(target)]) == 0
    first = snapshot(target)
    assert sorted(first) == ["config.json", "model.safetensors"]
    assert main(["export", str(runs["other"]), "--out", str(target)]) == 0  # an earlier export: replaced whole
    assert sorted(snapshot(target)) == ["config.json", "model.safetensors"]
    assert json.loads((target / "config.json").read_text())["experiment"] == "mlp-pytorch"
    assert not load_model(target).training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no temporary folder left beside it
    capsys.readouterr()


@pytest.mark.parametrize("which, edit, message", [
    ("first", lambda c: c.update(hidden_dims=[7]), "does not match the weights"),
    ("first", lambda c: c.update(hidden_dims=[32, 32, 32]), "does not match the weights"),
    ("first", lambda c: c.pop("hidden_dims"), "lacks 'hidden_dims'"),
    ("first", lambda c: c.update(hidden_dims=5), "does not describe a mlp-numpy model"),
    ("first", lambda c: c.pop("experiment"), "names no experiment"),
    ("other", lambda c: c.pop("use_batch_norm"), "lacks 'use_batch_norm'"),
    ("other", lambda c: c.update(use_batch_norm=not c["use_batch_norm"]), "does not match the weights"),
])
def test_a_config_that_does_not_fit_the_weights_is_one_line_and_writes_nothing(runs, tmp_path, capsys, which, edit,
                                                                                  message):
    run = copy_run(runs[which], tmp_path)
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(run)
    assert main(["export", str(run)]) == 1
    one_line(capsys, "config.json", message)
    assert snapshot(run) == before and not (run / "export").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_the_export_that_exits_0_loads_the_run_weights(runs, tmp_path, capsys):
    """The check before exit 0 is the one a user's load_model makes: every tensor of the checkpoint, strictly."""
    from dl1.export_format import trainer_modules

    out = tmp_path / "export"
    assert main(["export", str(runs["other"]), "--out", str(out)]) == 0
    modules, _ = trainer_modules(runs["other"] / "checkpoints" / "best.pt")
    state = load_model(out).state_dict()
    assert set(state) == set(modules["model"])
    assert all(torch.equal(state[k], modules["model"][k]) for k in state)
    capsys.readouterr()
