"""The training engine: exact resume after an interruption, NaN guard, atomic safe checkpoints, early stopping."""

import pytest
import torch
from torch import nn

from dl1.data.loaders import TensorBatches
from dl1.errors import DL1Error
from dl1.run.folder import Run
from dl1.train import Trainer, load_checkpoint, save_checkpoint, warmup_cosine, warmup_cosine_factor


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _fit(run: Run, epochs: int, resume=None, interrupt_after: int | None = None, lr: float = 0.05):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.2), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = warmup_cosine(opt, warmup=3, total=epochs * 6)
    x, y = _data()

    def on_epoch_end(epoch, _results):
        if interrupt_after is not None and epoch == interrupt_after:
            raise KeyboardInterrupt

    trainer = Trainer(run, {"model": model}, {"main": opt}, schedulers={"main": sched}, epochs=epochs,
                      monitor="val/loss", on_epoch_end=on_epoch_end, clip_grad_norm=1.0)

    def step(batch):
        xb, yb = batch
        loss = nn.functional.cross_entropy(model(xb), yb)
        trainer.backward_step(loss)
        return {"loss": loss}

    def evaluate(epoch):
        model.eval()
        with torch.no_grad():
            return {"val": {"loss": nn.functional.cross_entropy(model(x), y).item()}}

    result = trainer.fit(lambda e: TensorBatches(x, y, batch_size=16, shuffle=True, seed=7, epoch=e), step,
                         evaluate, resume=resume)
    return trainer, model, result


def test_resume_after_interrupt_matches_uninterrupted(tmp_path):
    full = Run("t", {}, root=tmp_path / "a", quiet=True)
    _, model_full, _ = _fit(full, epochs=5)
    part = Run("t", {}, root=tmp_path / "b", quiet=True)
    with pytest.raises(KeyboardInterrupt):
        _fit(part, epochs=5, interrupt_after=2)
    # a fresh process would scramble the RNGs: the checkpoint must restore them
    torch.manual_seed(999)
    resumed = Run("t", {}, directory=part.dir, quiet=True)
    _, model_res, _ = _fit(resumed, epochs=5, resume=part.dir)
    for a, b in zip(model_full.state_dict().values(), model_res.state_dict().values()):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in full.metrics()]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in resumed.metrics()]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run = Run("t", {}, root=tmp_path, quiet=True)
    model = nn.Linear(3, 1)
    trainer = Trainer(run, {"m": model}, {"o": torch.optim.SGD(model.parameters(), lr=0.1)}, epochs=5, monitor=None)
    x = torch.randn(8, 3)

    def step(batch):
        scale = float("nan") if trainer.epoch >= 2 else 1.0  # the loss goes bad in the third epoch
        loss = (model(x) ** 2).mean() * scale
        trainer.backward_step(loss)
        return {"loss": loss}

    with pytest.raises(DL1Error, match="loss became nan at epoch 3") as err:
        trainer.fit(lambda e: [0, 1], step)
    assert str(run.dir) in str(err.value)
    state = load_checkpoint(run.checkpoints / "last.pt")
    assert state["epoch"] == 2 and all(torch.isfinite(t).all() for t in state["modules"]["m"].values())


def test_best_checkpoint_and_early_stopping(tmp_path):
    run = Run("t", {}, root=tmp_path, quiet=True)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    values = iter([3.0, 1.0, 2.0, 2.5, 0.5])
    trainer = Trainer(run, {"m": model}, {"o": opt}, epochs=5, monitor="val/loss", patience=2)
    result = trainer.fit(lambda e: [0], lambda b: {}, lambda e: {"val": {"loss": next(values)}})
    assert result["best_epoch"] == 2 and result["stopped_early"] and result["epochs_run"] == 4
    assert load_checkpoint(trainer.best_path)["epoch"] == 2


def test_checkpoint_atomic_and_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2), "step": 3})
    assert not list(tmp_path.glob("*.tmp")) and load_checkpoint(path)["step"] == 3

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(DL1Error, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(DL1Error, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_warmup_cosine_values():
    assert warmup_cosine_factor(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine_factor(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine_factor(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine_factor(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine_factor(110, 10, 110) == pytest.approx(0.0)
    assert warmup_cosine_factor(110, 10, 110, min_factor=0.1) == pytest.approx(0.1)


def test_run_folder_layout(tmp_path):
    run = Run("exp", {"lr": 0.1}, root=tmp_path, argv=["dl1", "run", "exp"], quiet=True)
    run.log(1, "train", {"loss": torch.tensor(0.5)}, epoch=1)
    summary = run.finish(test={"acc": 0.9})
    for name in ("config.json", "argv.txt", "env.json", "metrics.jsonl", "summary.json"):
        assert (run.dir / name).exists()
    assert (run.dir / "figures").is_dir() and (run.dir / "checkpoints").is_dir()
    assert summary["test"]["acc"] == 0.9 and run.metrics("train")[0]["loss"] == 0.5


def test_tensorboard_event_files(tmp_path):
    run = Run("exp", {}, root=tmp_path, quiet=True, tensorboard=True)
    run.log(1, "train", {"loss": 0.5})
    assert list((run.dir / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_into_a_different_model_is_one_clear_error(tmp_path):
    run = Run("t", {}, root=tmp_path, quiet=True)
    model = nn.Linear(3, 2)
    Trainer(run, {"m": model}, {"o": torch.optim.SGD(model.parameters(), lr=0.1)}, epochs=1, monitor=None).fit(
        lambda e: [], lambda b: {})
    other = nn.Linear(4, 2)
    trainer = Trainer(run, {"m": other}, {"o": torch.optim.SGD(other.parameters(), lr=0.1)}, epochs=2, monitor=None)
    with pytest.raises(DL1Error, match="cannot resume from .*does not fit"):
        trainer.resume(run.dir)


def test_precision_bf16_forward_under_autocast_backward_outside(tmp_path):
    """bf16: train_step and evaluate run under CPU autocast, backward outside it; weights stay float32; evaluate
    runs without gradients."""
    from dl1.errors import UsageError

    model = nn.Linear(4, 2)
    seen = {"step": [], "backward": [], "eval": []}
    model.weight.register_hook(lambda g: seen["backward"].append(torch.is_autocast_enabled("cpu")) or g)
    run = Run("prec", {}, root=tmp_path, quiet=True)
    trainer = Trainer(run, {"m": model}, {"sgd": torch.optim.SGD(model.parameters(), lr=0.1)}, epochs=1,
                      monitor=None, precision="bf16")

    def step(batch):
        out = model(batch)
        seen["step"].append((torch.is_autocast_enabled("cpu"), out.dtype))
        loss = out.float().pow(2).mean()
        trainer.backward_step(loss)
        return {"loss": loss}

    def evaluate(epoch):  # without gradients: a running sum of losses must not chain the batches' graphs
        out = model(torch.ones(1, 4))
        seen["eval"].append((out.dtype, torch.is_grad_enabled(), out.grad_fn is None))
        return {"val": {"x": 1.0}}

    trainer.fit(lambda e: [torch.ones(3, 4)] * 2, step, evaluate)
    assert seen["step"] == [(True, torch.bfloat16)] * 2
    assert seen["backward"] == [False, False]
    assert seen["eval"] == [(torch.bfloat16, False, True)]
    assert model.weight.dtype == torch.float32 and model.weight.grad.dtype == torch.float32
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        Trainer(run, {"m": model}, {"sgd": torch.optim.SGD(model.parameters(), lr=0.1)}, epochs=1, precision="fp16")
