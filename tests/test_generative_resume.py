"""A VAE or AAE run killed in the middle and resumed logs exactly what the uninterrupted run logs (smoke size)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dl1.data.loaders as loaders
from dl1.experiments import execute


class Killed(Exception):
    """Stands in for the process being killed while it trains."""


def records(run_dir: str | Path) -> list[dict]:
    """Every record of metrics.jsonl without its wall-clock time."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


@pytest.mark.parametrize("name", ["vae", "aae"])
def test_killed_and_resumed_run_logs_every_number_of_the_uninterrupted_run(name, tmp_path, monkeypatch):
    full = execute(name, ["--epochs", "3"], smoke=True, out_dir=tmp_path / "full", quiet=True)

    class DiesAtEpoch2(loaders.TensorBatches):  # the batches of the epoch after the first checkpoint never come
        def __init__(self, *tensors, epoch=0, **kwargs):
            if epoch == 2:
                raise Killed
            super().__init__(*tensors, epoch=epoch, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loaders, "TensorBatches", DiesAtEpoch2)
        with pytest.raises(Killed):
            execute(name, ["--epochs", "3"], smoke=True, out_dir=tmp_path / "killed", quiet=True)
    (run_dir,) = (tmp_path / "killed" / name).iterdir()
    assert not (run_dir / "summary.json").exists() and (run_dir / "checkpoints" / "last.pt").exists()
    resumed = execute(name, ["--epochs", "3", "--resume", str(run_dir)], smoke=True, out_dir=tmp_path / "killed",
                      quiet=True)
    assert resumed["run_dir"] == str(run_dir)
    assert records(run_dir) == records(full["run_dir"])
    assert len([r for r in records(run_dir) if r["split"] == "train"]) == 3
