"""Config dataclasses <-> flags, and the CLI's error handling (one line, exit 2)."""

import subprocess
import sys
from dataclasses import dataclass

import pytest

from dl1.cli import main
from dl1.config import arg, config_from_dict, config_to_dict, parse_config
from dl1.errors import UsageError


@dataclass(frozen=True)
class Cfg:
    hidden_dims: tuple[int, ...] = arg((128,), "hidden sizes", min=1)
    lr: float = arg(0.1, "learning rate", min=0, min_inclusive=False)
    dataset: str = arg("cifar10", "dataset", choices=("cifar10", "cifar100"))
    use_batch_norm: bool = arg(False, "batch norm")
    resume: str | None = arg(None, "run folder to resume")


def test_defaults_and_flags():
    cfg = parse_config(Cfg, ["--hidden_dims", "256", "128", "--lr", "0.01", "--use_batch_norm"], prog="t")
    assert cfg == Cfg(hidden_dims=(256, 128), lr=0.01, use_batch_norm=True)
    assert parse_config(Cfg, [], prog="t") == Cfg()
    assert parse_config(Cfg, ["--resume", "runs/x"], prog="t").resume == "runs/x"


def test_misspelt_flag_names_nearest():
    with pytest.raises(UsageError, match="did you mean --hidden_dims"):
        parse_config(Cfg, ["--hiden_dims", "3"], prog="t")


@pytest.mark.parametrize("argv, pattern", [
    (["--lr", "0"], "out of range; allowed: 0 < value"),
    (["--lr", "abc"], "invalid float value"),
    (["--hidden_dims", "0"], "out of range"),
    (["--dataset", "imagenet"], "invalid choice"),
])
def test_bad_values(argv, pattern):
    with pytest.raises(UsageError, match=pattern):
        parse_config(Cfg, argv, prog="t")


def test_round_trip_dict():
    cfg = Cfg(hidden_dims=(4, 5))
    assert config_from_dict(Cfg, {**config_to_dict(cfg), "gone": 1}) == cfg


def test_cli_unknown_command_exit_2(capsys):
    assert main(["rnu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean run" in err


def test_cli_unknown_experiment_exit_2(capsys):
    assert main(["run", "gnnn"]) == 2
    assert "did you mean gnn" in capsys.readouterr().err


def test_cli_misspelt_flag_subprocess():
    """The installed entry point: exit 2, one line on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "dl1", "run", "gnn", "--sed", "3"], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--seed" in lines[0] and "Traceback" not in proc.stderr


def test_cli_list_names_every_experiment():
    from dl1 import experiments

    proc = subprocess.run([sys.executable, "-m", "dl1", "list"], capture_output=True, text=True, check=True)
    for name in experiments.names():
        line = next(ln for ln in proc.stdout.splitlines() if ln.split()[0] == name)
        assert len(line.split(None, 1)) == 2, f"{name} has no description"


def test_cli_help_shows_defaults(capsys):
    assert main(["run", "gnn", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default:" in out and "--out_dir" in out


def test_failed_run_leaves_no_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DL1_OFFLINE", "1")
    assert main(["run", "mlp-numpy", "--dataset", "cifar10", "--data_dir", str(tmp_path / "none"),
                 "--out_dir", str(tmp_path / "runs")]) == 1
    assert not list((tmp_path / "runs").glob("mlp-numpy/*"))
