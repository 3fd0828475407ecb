"""PyTorch MLP (assignment 1, Q4/Q6): the NumPy MLP's twin with autograd, optional batch norm, plain SGD.

The course's ``train_mlp_pytorch.py``: ``[Linear → (BatchNorm1d) → ELU] × hidden → Linear`` on flattened images,
``nn.CrossEntropyLoss`` on the logits, ``optim.SGD(lr)``, the same seeded 5,000-image validation split evaluated in full
every epoch.  Trained by the shared engine (best checkpoint on ``val/acc``, resumable); the best-validation weights are
evaluated on the test split.  Writes ``metrics.jsonl``, ``summary.json`` (test accuracy, confusion matrix, per-class
precision/recall/F-β), ``checkpoints/{best,last}.pt`` and ``figures/{curves,confusion_matrix,f_beta}.png``.
Under ``torchrun --nproc_per_node N -m dl1 run mlp-pytorch ...`` it trains data parallel (gloo on CPUs, NCCL on GPUs):
each rank takes ``--batch_size / N`` images of every global batch; rank 0 writes the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dl1.config import arg, precision_arg
from dl1.data.vision import CHOICES
from dl1.runtime import Run, choose_device, seed_everything

EVAL_CHUNK = 4096  # images per forward pass when evaluating a whole split
MAX_WIDTH, MAX_BATCH, MAX_EPOCHS, MAX_SEED = 16_384, 65_536, 10_000, 2**32 - 1


@dataclass(frozen=True)
class Config:
    hidden_dims: tuple[int, ...] = arg((128,), "Sizes of the hidden layers (one ELU layer per number).", min=1,
                                       max=MAX_WIDTH)
    lr: float = arg(0.1, "Learning rate of plain SGD.", min=0.0, max=100.0, min_inclusive=False)
    use_batch_norm: bool = arg(False, "Insert BatchNorm1d between every hidden Linear and its ELU.")
    batch_size: int = arg(128, "Mini-batch size, the global batch under torchrun (each of N ranks takes 1/N of it; "
                               "the last incomplete training batch is dropped).", min=1, max=MAX_BATCH)
    epochs: int = arg(10, "Number of passes over the training split.", min=1, max=MAX_EPOCHS)
    seed: int = arg(42, "Seed of the weights, the validation split and the shuffling.", min=0, max=MAX_SEED)
    data_dir: str | None = arg(None, "Folder holding the dataset (none: $DL1_DATA, else ./data).")
    dataset: str = arg("cifar10", "Dataset (synthetic = random clusters for smoke runs only).", choices=CHOICES)
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps.")
    precision: str = precision_arg()
    resume: str | None = arg(None, "Run folder (or checkpoint file) to continue from; --epochs may be raised.")


GLOBAL_BATCH = ("batch_size",)  # data parallel under torchrun
SMOKE = {"dataset": "synthetic", "epochs": 2, "hidden_dims": (32,), "batch_size": 64}


def evaluate(model, x, y) -> tuple[dict[str, float], np.ndarray]:
    """Loss and accuracy of a whole split in eval mode (in chunks) and its softmax probabilities (S, C) as NumPy."""
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)]).float()  # (S, C)
        loss = F.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
    return {"loss": loss, "acc": acc}, logits.softmax(1).cpu().numpy()


def fit(cfg: Config, run: Run, model, data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Plain SGD through the shared Trainer, best checkpoint on val/acc; returns (trainer, fit result)."""
    import torch
    import torch.nn.functional as F

    from dl1.data.loaders import TensorBatches
    from dl1.train import Trainer, distributed

    info = distributed.current()  # under torchrun: each rank trains on its share of every global batch
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    trainer = Trainer(run, {"model": model}, {"sgd": optimizer}, epochs=cfg.epochs, monitor="val/acc", mode="max",
                      device=model.device, desc="mlp-pytorch", precision=cfg.precision)
    net = trainer.wrap(model)  # under torchrun: DistributedDataParallel averages the gradients

    def batches(epoch: int) -> TensorBatches:
        return TensorBatches(data["x_train"], data["y_train"], batch_size=distributed.local_batch(cfg.batch_size),
                             shuffle=True, seed=cfg.seed, epoch=epoch, drop_last=True, rank=info.rank,
                             world_size=info.world_size)

    def train_step(batch) -> dict[str, Any]:
        x, y = batch                                                                               # (b, M), (b,)
        logits = net(x)                                                                            # (b, C)
        loss = F.cross_entropy(logits, y)
        trainer.backward_step(loss)
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}

    def evaluate_val(epoch: int) -> dict[str, dict[str, float]]:
        return {"val": evaluate(model, data["x_val"], data["y_val"])[0]}

    return trainer, trainer.fit(batches, train_step, evaluate_val, resume=cfg.resume)


def run(cfg: Config, run: Run) -> dict[str, Any]:
    import torch

    from dl1.data.vision import load_flat
    from dl1.metrics import test_report
    from dl1.models.mlp import MLP

    seed_everything(cfg.seed)
    device = choose_device(cfg.device)
    arrays = load_flat(cfg.dataset, cfg.data_dir, cfg.seed, cfg.batch_size)
    data = {f"{k}_{s}": torch.from_numpy(getattr(arrays, f"{k}_{s}")).to(device)
            for k in ("x", "y") for s in ("train", "val", "test")}
    model = MLP(arrays.n_inputs, list(cfg.hidden_dims), arrays.n_classes, cfg.use_batch_norm).to(device)
    trainer, result = fit(cfg, run, model, data)
    trainer.load_best()
    with trainer.autocast():  # the precision it trained and validated in
        test, probs = evaluate(model, data["x_test"], data["y_test"])
    run.log(trainer.step, "test", test, epoch=result["best_epoch"])
    val_accs = [r["acc"] for r in run.metrics("val")]
    summary = run.finish(test_accuracy=test["acc"], best_epoch=result["best_epoch"], val_accuracies=val_accs,
                         steps=result["steps"], train_time_s=result["train_time_s"],
                         dataset=arrays.name, synthetic=arrays.name == "synthetic", device=str(device),
                         test=test_report(probs, arrays.y_test, test["loss"], arrays.classes))
    if run.enabled:
        make_figures(run.dir)
    return summary


def make_figures(run_dir: Path) -> list[Path]:
    """Loss/accuracy curves, test confusion matrix and per-class F-β bars from the run folder."""
    from dl1.report.classification import make_classification_figures

    return make_classification_figures(run_dir)
