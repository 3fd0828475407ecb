"""The runner of ``dl1 run mlp-pytorch`` (flags and description: :mod:`dl1.experiments.mlp_pytorch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dl1.data.loaders import TensorBatches
from dl1.data.vision import load_flat
from dl1.experiments.mlp_pytorch import EVAL_CHUNK, Config
from dl1.export_format import Exported, linear_sizes, module_state, trainer_modules
from dl1.metrics import test_report
from dl1.models.mlp import MLP
from dl1.report.classification import make_classification_figures
from dl1.run.device import choose_device, seed_everything
from dl1.run.folder import Run
from dl1.run.reader import checkpoint_file
from dl1.train import Trainer, distributed


def evaluate(model, x, y) -> tuple[dict[str, float], np.ndarray]:
    """Loss and accuracy of a whole split in eval mode (in chunks) and its softmax probabilities (S, C) as NumPy."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)]).float()  # (S, C)
        loss = F.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
    return {"loss": loss, "acc": acc}, logits.softmax(1).cpu().numpy()


def fit(cfg: Config, run: Run, model, data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Plain SGD through the shared Trainer, best checkpoint on val/acc; returns (trainer, fit result)."""
    info = distributed.current()  # under torchrun: each rank trains on its share of every global batch
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    trainer = Trainer(run, {"model": model}, {"sgd": optimizer}, epochs=cfg.epochs, monitor="val/acc", mode="max",
                      device=model.device, desc="mlp-pytorch", precision=cfg.precision, compile=cfg.compile)
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
    seed_everything(cfg.seed)
    device = run.device = choose_device(cfg.device)
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
        make_classification_figures(run.dir)
    return summary


def export(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    """The trained MLP (the best checkpoint unless ``prefer`` says last)."""
    path = checkpoint_file(run_dir, prefer=prefer)
    modules, where = trainer_modules(path)
    state = module_state(modules, "model", path)
    n_inputs, n_classes = linear_sizes(state)
    return Exported(state, "dl1.models.mlp.MLP", {"n_inputs": n_inputs, "n_hidden": list(config["hidden_dims"]),
                                                  "n_classes": n_classes,
                                                  "use_batch_norm": bool(config["use_batch_norm"])}, checkpoint=where)
