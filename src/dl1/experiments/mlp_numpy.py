"""NumPy MLP from scratch (assignment 1, Q3/Q6): train with SGD, keep the best-validation model, test it.

The course's ``train_mlp_numpy.py``: ``[Linear → ELU] × hidden → Linear → SoftMax`` in pure NumPy (``dl1.numpy_nn``),
cross-entropy on the probabilities, plain SGD, flattened images, a seeded 5,000-image validation split evaluated in
full every epoch; the best-validation model (``clear_cache`` + ``deepcopy``) is evaluated on the test split.  The model
is float32 (asked for explicitly: the modules default to the course's float64, which trains slower).  Writes
``metrics.jsonl``, ``summary.json`` (test accuracy, confusion matrix, per-class precision/recall/F-β),
``checkpoints/best.npz`` and ``figures/{curves,confusion_matrix,f_beta}.png``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dl1.config import arg
from dl1.data.vision import CHOICES
from dl1.numpy_nn import MLP, SGD, CrossEntropyModule
from dl1.runtime import Run, seed_everything

EVAL_CHUNK = 4096
MAX_WIDTH, MAX_BATCH, MAX_EPOCHS, MAX_SEED = 16_384, 65_536, 10_000, 2**32 - 1


@dataclass(frozen=True)
class Config:
    hidden_dims: tuple[int, ...] = arg((128,), "Sizes of the hidden layers (one ELU layer per number).", min=1,
                                       max=MAX_WIDTH)
    lr: float = arg(0.1, "Learning rate of plain SGD.", min=0.0, max=100.0, min_inclusive=False)
    batch_size: int = arg(128, "Mini-batch size (the last incomplete training batch is dropped).", min=1,
                          max=MAX_BATCH)
    epochs: int = arg(10, "Number of passes over the training split.", min=1, max=MAX_EPOCHS)
    seed: int = arg(42, "Seed of the weights, the validation split and the shuffling.", min=0, max=MAX_SEED)
    data_dir: str | None = arg(None, "Folder holding the dataset (none: $DL1_DATA, else ./data).")
    dataset: str = arg("cifar10", "Dataset (synthetic = random clusters for smoke runs only).", choices=CHOICES)


SMOKE = {"dataset": "synthetic", "epochs": 2, "hidden_dims": (32,), "batch_size": 64}


# ---------------------------------------------------------------------------------------------------------------------
# evaluation and training
# ---------------------------------------------------------------------------------------------------------------------

def evaluate(model: MLP, x: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Loss and accuracy of a whole split (in chunks) and its probabilities (S, C)."""
    probs = model.predict(x, EVAL_CHUNK)                                                         # (S, C)
    loss = float(CrossEntropyModule().forward(probs, y)) if len(y) else float("nan")
    return {"loss": loss, "acc": float((probs.argmax(1) == y).mean()) if len(y) else float("nan")}, probs


def train_epoch(model: MLP, optimizer: SGD, x: np.ndarray, y: np.ndarray, batch_size: int,
                rng: np.random.Generator, desc: str = "", progress: bool = False) -> dict[str, float]:
    """One pass of SGD over shuffled full batches; returns the mean batch loss and accuracy."""
    from tqdm.auto import tqdm

    loss_fn = CrossEntropyModule()
    order = rng.permutation(len(x))
    n_batches = len(x) // batch_size
    xb = np.empty((batch_size, x.shape[1]), dtype=model.dtype)                                  # reused batch buffer
    total_loss = total_correct = 0.0
    for i in tqdm(range(n_batches), desc=desc, disable=not progress, leave=False):
        idx = order[i * batch_size:(i + 1) * batch_size]
        if x.dtype == xb.dtype:
            np.take(x, idx, axis=0, out=xb)                                                      # (B, M)
        else:  # data and model differ in dtype (e.g. float32 images, a float64 model): cast batch by batch
            xb[...] = x[idx]
        yb = y[idx]                                                                              # (B,)
        probs = model.forward(xb)                                                                # (B, C)
        total_loss += float(loss_fn.forward(probs, yb))
        total_correct += int((probs.argmax(1) == yb).sum())
        model.backward(loss_fn.backward(probs, yb))
        optimizer.step()
    model.clear_cache()
    return {"loss": total_loss / n_batches, "acc": total_correct / (n_batches * batch_size)}


def fit(model: MLP, data, cfg: Config, run: Run) -> tuple[MLP, int, list[float]]:
    """Train for ``cfg.epochs``; log train/val every epoch; return (best-val model, its epoch, val accuracies)."""
    from dl1.data.files import save_npz
    from dl1.train.engine import show_progress

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
    from dl1.data.vision import load_flat
    from dl1.metrics import test_report

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
    make_figures(run.dir)
    return summary


def make_figures(run_dir: Path) -> list[Path]:
    """Loss/accuracy curves, test confusion matrix and per-class F-β bars from the run folder."""
    from dl1.report.classification import make_classification_figures

    return make_classification_figures(run_dir)
