"""The runner of ``dl1 run mlp-numpy`` (flags and description: :mod:`dl1.experiments.mlp_numpy`)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dl1.data.files import read_npz, save_npz
from dl1.data.vision import load_flat
from dl1.errors import DL1Error
from dl1.experiments.mlp_numpy import EVAL_CHUNK, Config
from dl1.export_format import Exported, linear_sizes
from dl1.metrics import test_report
from dl1.numpy_nn import MLP, SGD, CrossEntropyModule
from dl1.report.classification import make_classification_figures
from dl1.run.device import seed_everything
from dl1.run.folder import Run
from dl1.train.engine import show_progress


def evaluate(model: MLP, x: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Loss and accuracy of a whole split (in chunks) and its probabilities (S, C)."""
    probs = model.predict(x, EVAL_CHUNK)                                                         # (S, C)
    loss = float(CrossEntropyModule().forward(probs, y)) if len(y) else float("nan")
    return {"loss": loss, "acc": float((probs.argmax(1) == y).mean()) if len(y) else float("nan")}, probs


def train_epoch(model: MLP, optimizer: SGD, x: np.ndarray, y: np.ndarray, batch_size: int,
                rng: np.random.Generator, desc: str = "", progress: bool = False) -> dict[str, float]:
    """One pass of SGD over shuffled full batches; returns the mean batch loss and accuracy."""
    loss_fn = CrossEntropyModule()
    order = rng.permutation(len(x))
    n_batches = len(x) // batch_size
    xb = np.empty((batch_size, x.shape[1]), dtype=model.dtype)                                  # reused batch buffer
    total_loss = total_correct = 0.0
    with model.training_buffers(loss_fn):  # every step's work in place, in arrays kept from step to step
        for i in tqdm(range(n_batches), desc=desc, disable=not progress, leave=False):
            idx = order[i * batch_size:(i + 1) * batch_size]
            if x.dtype == xb.dtype:
                np.take(x, idx, axis=0, out=xb, mode="clip")  # (B, M); a permutation's indices: no check
            else:  # data and model differ in dtype (e.g. float32 images, a float64 model): cast batch by batch
                xb[...] = x[idx]
            yb = y[idx]                                                                          # (B,)
            probs = model.forward(xb)                                                            # (B, C)
            total_loss += float(loss_fn.forward(probs, yb))
            total_correct += int(np.count_nonzero(probs.argmax(1) == yb))
            model.backward(loss_fn.backward(probs, yb))
            optimizer.step()
    model.clear_cache()
    return {"loss": total_loss / n_batches, "acc": total_correct / (n_batches * batch_size)}


def fit(model: MLP, data, cfg: Config, run: Run) -> tuple[MLP, int, list[float]]:
    """Train for ``cfg.epochs``; log train/val every epoch; return (best-val model, its epoch, val accuracies)."""
    optimizer = SGD(model.parameters(), cfg.lr)
    best, best_epoch, best_acc, val_accs = copy.deepcopy(model), 0, -1.0, []
    steps_per_epoch = len(data.x_train) // cfg.batch_size
    for epoch in range(1, cfg.epochs + 1):
        rng = np.random.default_rng([cfg.seed, epoch])
        t0 = time.perf_counter()
        train = train_epoch(model, optimizer, data.x_train, data.y_train, cfg.batch_size, rng,
                            f"{run.experiment} epoch {epoch}/{cfg.epochs}", show_progress())
        train["epoch_time_s"] = time.perf_counter() - t0
        run.log(epoch * steps_per_epoch, "train", {**train, "lr": cfg.lr}, epoch=epoch)
        val, _ = evaluate(model, data.x_val, data.y_val)
        run.log(epoch * steps_per_epoch, "val", val, epoch=epoch)
        val_accs.append(val["acc"])
        if val["acc"] > best_acc:
            model.clear_cache()
            best, best_epoch, best_acc = copy.deepcopy(model), epoch, val["acc"]
            if run.enabled:
                save_npz(run.checkpoints / "best.npz", epoch=epoch, **best.state_dict())
    return best, best_epoch, val_accs


def run(cfg: Config, run: Run) -> dict[str, Any]:
    seed_everything(cfg.seed)
    data = load_flat(cfg.dataset, cfg.data_dir, cfg.seed, cfg.batch_size)
    model = MLP(data.n_inputs, list(cfg.hidden_dims), data.n_classes, dtype=np.float32,  # training runs in float32
                rng=np.random.default_rng(cfg.seed))
    best, best_epoch, val_accs = fit(model, data, cfg, run)
    test, probs = evaluate(best, data.x_test, data.y_test)
    run.log(best_epoch * (len(data.x_train) // cfg.batch_size), "test", test, epoch=best_epoch)
    summary = run.finish(test_accuracy=test["acc"], best_epoch=best_epoch, val_accuracies=val_accs,
                         dataset=data.name, synthetic=data.name == "synthetic",
                         test=test_report(probs, data.y_test, test["loss"], data.classes))
    make_classification_figures(run.dir)
    return summary


def export(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    """The NumPy MLP's ``best.npz`` as the torch MLP's state dict (its Linear i is ``layers.{2i}``: ELUs between)."""
    path = run_dir / "checkpoints" / "best.npz"
    if not path.is_file():
        raise DL1Error(f"no checkpoint in {run_dir} (looked for checkpoints/best.npz)")
    arrays = read_npz(path, "checkpoint")  # headers checked first: a cut or hostile file is one line
    state = {}
    for key, value in arrays.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit():
            state[f"layers.{2 * int(parts[1])}.{parts[2]}"] = np.ascontiguousarray(value)
    if not state:
        raise DL1Error(f"{path} holds no MLP layers")
    order = sorted(state, key=lambda k: (int(k.split(".")[1]), k))
    state = {k: state[k] for k in order}
    n_inputs, n_classes = linear_sizes(state)
    epoch = int(arrays["epoch"]) if "epoch" in arrays else None
    return Exported(state, "dl1.models.mlp.MLP", {"n_inputs": n_inputs, "n_hidden": list(config["hidden_dims"]),
                                                  "n_classes": n_classes, "use_batch_norm": False},
                    {"note": "the NumPy MLP's weights; softmax(model(x)) is the NumPy MLP's output"},
                    {"file": str(path), "epoch": epoch})
