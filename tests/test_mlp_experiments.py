"""Smoke runs of mlp-numpy and mlp-pytorch (synthetic data, fake CIFAR-10 files) and their figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dl1.errors import DL1Error, UsageError
from dl1.experiments import execute, load
from dl1.run.files import read_jsonl


def check_run(summary: dict, epochs: int, n_classes: int = 10) -> Path:
    run_dir = Path(summary["run_dir"])
    records = read_jsonl(run_dir / "metrics.jsonl")
    for split in ("train", "val"):
        assert [r["epoch"] for r in records if r["split"] == split] == list(range(1, epochs + 1))
    test_rows = [r for r in records if r["split"] == "test"]
    assert len(test_rows) == 1 and test_rows[0]["acc"] == pytest.approx(summary["test_accuracy"])
    # the best-validation model is the one tested
    assert summary["val_accuracies"][summary["best_epoch"] - 1] == max(summary["val_accuracies"])
    test = summary["test"]
    cm = np.array(test["confusion_matrix"])
    assert cm.shape == (n_classes, n_classes) and len(test["classes"]) == n_classes
    assert np.trace(cm) / cm.sum() == pytest.approx(summary["test_accuracy"])
    assert set(test["f_beta"]) == {"0.1", "1", "10"} and len(test["precision"]) == n_classes
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["test_accuracy"] == summary["test_accuracy"]
    for name in ("curves.png", "confusion_matrix.png", "f_beta.png"):
        assert (run_dir / "figures" / name).stat().st_size > 5000
    return run_dir


@pytest.mark.parametrize("name,argv", [("mlp-numpy", []),
                                       ("mlp-pytorch", ["--use_batch_norm", "--hidden_dims", "16", "8"])])
def test_smoke_run_on_synthetic_data(name, argv, tmp_path):
    summary = execute(name, argv, smoke=True, out_dir=tmp_path, quiet=True)
    run_dir = check_run(summary, epochs=2)
    assert summary["synthetic"] is True and summary["dataset"] == "synthetic"
    if name == "mlp-pytorch":  # the batch-norm model trained, checkpointed and recorded its flag
        assert (run_dir / "checkpoints" / "best.pt").exists()
        assert json.loads((run_dir / "config.json").read_text())["use_batch_norm"] is True
    assert summary["test_accuracy"] > 0.5  # the synthetic clusters are learnable
    # figures are a function of the run folder alone
    for f in (run_dir / "figures").iterdir():
        f.unlink()
    paths = load(name).figures(run_dir)
    assert sorted(p.name for p in paths) == ["confusion_matrix.png", "curves.png", "f_beta.png"]


def test_numpy_best_checkpoint_reproduces_test_accuracy(tmp_path):
    from dl1.data.vision import load_flat
    from dl1.experiments.runners.mlp_numpy import evaluate
    from dl1.numpy_nn import MLP

    summary = execute("mlp-numpy", ["--epochs", "3", "--hidden_dims", "16", "8"], smoke=True, out_dir=tmp_path,
                      quiet=True)
    state = np.load(Path(summary["run_dir"]) / "checkpoints" / "best.npz", allow_pickle=False)
    assert int(state["epoch"]) == summary["best_epoch"]
    data = load_flat("synthetic", None, 42, 64)
    model = MLP(data.n_inputs, [16, 8], data.n_classes, dtype=np.float32)  # the checkpoint is float32
    model.load_state_dict({k: state[k] for k in state.files if k != "epoch"})
    assert evaluate(model, data.x_test, data.y_test)[0]["acc"] == pytest.approx(summary["test_accuracy"])


def _flipped_validation(seed: int = 0):
    """Two Gaussian clusters; the validation labels are the training rule flipped, so every epoch of training makes
    validation worse and the best-validation epoch is the first one, never the last."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    centres = np.array([[2.0, 0.0], [-2.0, 0.0]], np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        return centres[y] + rng.standard_normal((n, 2)).astype(np.float32), y

    (x_train, y_train), (x_val, y_val) = draw(256), draw(128)
    return SimpleNamespace(x_train=x_train, y_train=y_train, x_val=x_val, y_val=1 - y_val)


def test_numpy_fit_keeps_a_copy_of_the_best_epoch_not_the_live_model(tmp_path):
    """The returned and the saved model are the one after the best epoch (here epoch 1 of 5), not the final one."""
    from dl1.experiments.mlp_numpy import Config
    from dl1.experiments.runners.mlp_numpy import fit
    from dl1.numpy_nn import MLP
    from dl1.run.folder import Run

    data = _flipped_validation()

    def train(epochs: int, name: str):
        cfg = Config(hidden_dims=(4,), lr=0.003, batch_size=32, epochs=epochs, seed=0)
        run = Run("mlp-numpy", {}, directory=tmp_path / name, quiet=True)
        model = MLP(2, [4], 2, dtype=np.float32, rng=np.random.default_rng(0))
        return model, run, *fit(model, data, cfg, run)

    live, run, best, best_epoch, val_accs = train(5, "five")
    assert best_epoch == 1 and val_accs[0] > max(val_accs[1:])  # validation got worse after epoch 1
    _, _, after_one, _, _ = train(1, "one")                      # the same training stopped after epoch 1
    expected = after_one.state_dict()
    assert not np.array_equal(live.state_dict()["layers.0.weight"], expected["layers.0.weight"])  # it moved on
    for key, value in best.state_dict().items():
        np.testing.assert_array_equal(value, expected[key], err_msg=f"returned model, {key}")
    with np.load(run.checkpoints / "best.npz", allow_pickle=False) as saved:
        assert int(saved["epoch"]) == 1
        for key, value in expected.items():
            np.testing.assert_array_equal(saved[key], value, err_msg=f"best.npz, {key}")


def test_numpy_train_epoch_casts_batches_to_the_model_dtype():
    """Training code asks for float32; a default (float64, the course's) model still trains on float32 images."""
    from dl1.experiments.runners.mlp_numpy import train_epoch
    from dl1.numpy_nn import MLP, SGD

    data = _flipped_validation()
    for dtype in (np.float32, np.float64):
        model = MLP(2, [4], 2, dtype=dtype, rng=np.random.default_rng(0))
        stats = train_epoch(model, SGD(model.parameters(), 0.1), data.x_train, data.y_train, 32,
                            np.random.default_rng(0))
        assert np.isfinite(stats["loss"]) and 0 <= stats["acc"] <= 1
        assert all(p.dtype == dtype for p, _ in model.parameters())


@pytest.mark.parametrize("name", ["mlp-numpy", "mlp-pytorch"])
def test_cifar10_files_through_the_real_loader(name, tmp_path):
    from dl1.data.fake import write_cifar

    write_cifar(tmp_path / "data", "cifar10", n_train=5300, n_test=40)
    summary = execute(name, ["--dataset", "cifar10", "--data_dir", str(tmp_path / "data"), "--epochs", "1",
                             "--hidden_dims", "8", "--batch_size", "100"], out_dir=tmp_path / "runs", quiet=True)
    check_run(summary, epochs=1)
    assert summary["dataset"] == "cifar10" and summary["synthetic"] is False
    assert summary["test"]["classes"][0] == "airplane"
    assert len(read_jsonl(Path(summary["run_dir"]) / "metrics.jsonl")) == 3


def test_user_errors(tmp_path):
    with pytest.raises(DL1Error, match="cifar10"):  # offline and absent: one clear line
        execute("mlp-numpy", ["--dataset", "cifar10", "--data_dir", str(tmp_path / "empty")], out_dir=tmp_path,
                quiet=True)
    with pytest.raises(UsageError, match="batch_size"):
        execute("mlp-numpy", ["--batch_size", "100000"], smoke=True, out_dir=tmp_path, quiet=True)
    with pytest.raises(UsageError, match="hidden_dims"):
        execute("mlp-pytorch", ["--hiden_dims", "5"], smoke=True, out_dir=tmp_path, quiet=True)
    with pytest.raises(UsageError):
        execute("mlp-numpy", ["--lr", "0"], smoke=True, out_dir=tmp_path, quiet=True)
    with pytest.raises(UsageError):
        execute("mlp-numpy", ["--dataset", "imagenet"], smoke=True, out_dir=tmp_path, quiet=True)


def test_figures_from_a_hand_written_run_folder(tmp_path):
    """The report needs only metrics.jsonl and summary.json (here 100 classes: no per-cell annotations)."""
    from dl1.metrics import per_class_report
    from dl1.report.classification import make_classification_figures

    lines = [{"step": e, "split": s, "epoch": e, "loss": 1.0 / e, "acc": 0.5 + 0.01 * e} for e in (1, 2, 3)
             for s in ("train", "val")]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    cm = np.random.default_rng(0).integers(0, 5, size=(100, 100)) + np.eye(100, dtype=int) * 50
    (tmp_path / "summary.json").write_text(json.dumps({"test": per_class_report(cm, [f"c{i}" for i in range(100)])}))
    paths = make_classification_figures(tmp_path, title="hand-written")
    assert [p.name for p in paths] == ["curves.png", "confusion_matrix.png", "f_beta.png"]
    assert all(p.stat().st_size > 5000 for p in paths)
    with pytest.raises(DL1Error, match="metrics.jsonl"):
        make_classification_figures(tmp_path / "nothing")


def test_unknown_device_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--device: Invalid device string: 'tpu7'"):
        execute("mlp-pytorch", ["--device", "tpu7"], smoke=True, out_dir=tmp_path, quiet=True)
    assert not any(p.is_dir() for p in tmp_path.rglob("*"))
