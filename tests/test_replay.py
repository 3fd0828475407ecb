"""A run replays from its folder: ``argv.txt`` and the report hold the command as typed, ``--config RUN`` starts a run
with exactly that configuration (flags given with it win), ``--print_config`` prints it, ``env.json`` records versions,
device, threads and the git commit; ``dl1 --version``; progress bars decided by the environment."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dl1.cli import main
from dl1.experiments import command_line, make_config
from dl1.run import env as run_env
from dl1.run import files as run_files

ROOT = Path(__file__).resolve().parents[1]


def _records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in run_files.read_jsonl(run_dir / "metrics.jsonl")]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """``dl1 run mlp-pytorch --smoke --tensorboard --run_dir ... --seed 3`` through the command line."""
    import torch

    torch.set_num_threads(1)  # as every test runs (the autouse fixture): float sums in the same order
    folder = tmp_path_factory.mktemp("replay") / "first run"  # a space: the command must quote it
    assert main(["run", "mlp-pytorch", "--smoke", "--tensorboard", "--run_dir", str(folder), "--seed", "3"]) == 0
    return folder


def test_argv_and_report_hold_the_whole_command(smoke_run):
    typed = f"dl1 run mlp-pytorch --smoke --tensorboard --run_dir {shlex.quote(str(smoke_run))} --seed 3"
    assert (smoke_run / "argv.txt").read_text().splitlines()[-1] == typed
    assert main(["report", str(smoke_run)]) == 0
    assert f"Command: `{typed}`" in (smoke_run / "report.md").read_text()


def test_config_of_a_run_replays_it_with_the_same_metrics(smoke_run, tmp_path):
    again = tmp_path / "again"
    assert main(["run", "mlp-pytorch", "--config", str(smoke_run / "config.json"), "--run_dir", str(again)]) == 0
    assert json.loads((again / "config.json").read_text()) == json.loads((smoke_run / "config.json").read_text())
    assert _records(again) == _records(smoke_run) and len(_records(again)) >= 5
    assert shlex.split((again / "argv.txt").read_text())[3:5] == ["--config", str(smoke_run / "config.json")]


def test_flags_given_with_config_win_and_print_config_makes_no_folder(smoke_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "mlp-pytorch", "--config", str(smoke_run), "--epochs", "5", "--print_config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((smoke_run / "config.json").read_text())
    assert printed == {**saved, "epochs": 5} and printed["seed"] == 3 and printed["dataset"] == "synthetic"
    assert not list(tmp_path.iterdir())  # no run folder, no runs/


def test_print_config_is_what_config_json_holds(tmp_path, capsys):
    assert main(["run", "gpt", "--smoke", "--preset", "nanogpt-cpu", "--max_iters", "7", "--print_config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["experiment"] == "gpt" and printed["max_iters"] == 7 and printed["n_embd"] == 128
    replayed = make_config("gpt", [], config=printed)  # the preset's values came with it; the preset is not reapplied
    assert replayed.max_iters == 7 and replayed.preset == "nanogpt-cpu"


def test_config_of_another_experiment_is_refused_with_one_line(smoke_run, capsys):
    assert main(["run", "vae", "--config", str(smoke_run / "config.json")]) == 2
    err = _one_line(capsys)
    assert "config of a mlp-pytorch run, not of vae" in err


@pytest.mark.parametrize("content, code, pattern", [
    ("{not json", 1, "not a readable JSON"),
    ('["a list"]', 2, "JSON object"),
    ('{"experiment": "mlp-pytorch", "epochs": "three"}', 2, "epochs is \"three\", not int"),
    ('{"experiment": "mlp-pytorch", "epochs": 0}', 2, "--epochs: 0 is out of range"),
])
def test_a_bad_config_file_is_one_line(tmp_path, capsys, content, code, pattern):
    path = tmp_path / "config.json"
    path.write_text(content)
    assert main(["run", "mlp-pytorch", "--config", str(path), "--out_dir", str(tmp_path / "runs")]) == code
    assert pattern in _one_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_unknown_keys_are_named_and_resume_is_not_replayed(tmp_path, capsys):
    values = {"experiment": "vae", "epochs": 4, "gone_flag": 1, "resume": str(tmp_path)}
    cfg = make_config("vae", [], config=values)
    err = capsys.readouterr().err
    assert cfg.epochs == 4 and cfg.resume is None and "gone_flag" in err and "not resuming" in err


def test_command_line_of_an_api_call_names_every_setting():
    assert command_line("vae", ["--epochs", "2"], smoke=True, out_dir="x",
                        overrides={"z_dim": 2, "data_dir": None}) == \
        ["dl1", "run", "vae", "--smoke", "--out_dir", "x", "--z_dim", "2", "--data_dir", "none", "--epochs", "2"]
    flags = command_line("mlp-pytorch", overrides={"use_batch_norm": False, "hidden_dims": (8, 4)})[3:]
    assert make_config("mlp-pytorch", flags).hidden_dims == (8, 4)
    assert flags == ["--hidden_dims", "8", "4", "--no-use_batch_norm"]


def test_every_default_config_survives_its_json(tmp_path):
    from dl1 import experiments
    from dl1.config import config_to_dict

    for name in experiments.names():
        cfg = make_config(name, smoke=True)
        text = run_files.json_text({"experiment": name, **config_to_dict(cfg)})
        assert make_config(name, config=json.loads(text)) == cfg, name


def test_env_json_records_versions_device_threads_and_commit(smoke_run):
    from importlib import metadata

    env = json.loads((smoke_run / "env.json").read_text())
    for dist, key in run_env.PACKAGES.items():
        assert env[key] == metadata.version(dist)
    assert env["python"] == sys.version.split()[0]
    assert env["device"] == "cpu" and env["threads"]["torch"] >= 1 and env["threads"]["cpu_count"] >= 1
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout (CI's clean clone is one)
        assert env["git"]["commit"] == head.stdout.strip()
    else:
        assert "git" not in env


def test_no_git_commit_outside_a_checkout(tmp_path, monkeypatch):
    installed = tmp_path / "site-packages" / "dl1"
    installed.mkdir(parents=True)
    monkeypatch.setattr(run_env, "__file__", str(installed / "run" / "env.py"))
    monkeypatch.setattr(run_env, "_GIT", {})  # not looked up yet
    assert run_env.git_state() == {} and "git" not in run_env.env_info()


def test_version(capsys):
    from dl1 import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dl1 {__version__}"
    proc = subprocess.run([sys.executable, "-m", "dl1", "--version"], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == f"dl1 {__version__}"


# -- progress bars ----------------------------------------------------------------------------------------------------
class _Kernel:
    config = {"IPKernelApp": {"connection_file": "kernel.json"}}


@pytest.mark.parametrize("env, notebook, tty, shown", [
    ({}, True, False, True),                        # Jupyter: stderr is no terminal, bars still show
    ({}, False, True, True),                        # a terminal
    ({}, False, False, False),                      # a log file
    ({"CI": "true"}, True, True, False),            # CI logs stay free of bars
    ({"DL1_PROGRESS": "1", "CI": "true"}, False, False, True),
    ({"DL1_PROGRESS": "0"}, True, True, False),
])
def test_progress_bars_follow_the_environment(monkeypatch, env, notebook, tty, shown):
    import types

    from dl1.train.engine import show_progress

    for key in ("DL1_PROGRESS", "CI"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    fake = types.SimpleNamespace(get_ipython=lambda: _Kernel() if notebook else None)
    monkeypatch.setitem(sys.modules, "IPython", fake)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    assert show_progress() is shown
