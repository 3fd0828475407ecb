"""The runner of ``dl1 run resnet-transfer`` (flags and description: :mod:`dl1.experiments.resnet_transfer`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dl1.data.loaders import epoch_order, ordered_loader, shard
from dl1.data.transfer import probe_data
from dl1.experiments.resnet_transfer import Config
from dl1.export_format import Exported, module_state, trainer_modules
from dl1.hub.torchvision import check_weights, resnet18_state_dict
from dl1.models.resnet_probe import (
    cached_batches,
    correct_count,
    extract_features,
    feature_accuracy,
    get_model,
    set_backbone_mode,
)
from dl1.run.device import choose_device, seed_everything
from dl1.run.folder import Run
from dl1.run.reader import checkpoint_file
from dl1.train import Trainer, distributed
from dl1.train.distributed import gather_parts, part_of, sum_counts
from dl1.train.engine import show_progress
from dl1.train.precision import autocast


def build_data(cfg: Config, run: Run):
    """The train/val/test (and noisy test) datasets of ``cfg`` (fake CIFAR files in ``run.synthetic_dir()`` if
    synthetic)."""
    return probe_data(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, augmentation=cfg.augmentation_name,
                      test_noise=cfg.test_noise, noise_std=cfg.noise_std, val_size=cfg.val_size, seed=cfg.seed,
                      synthetic_dir=run.synthetic_dir() if cfg.dataset == "synthetic" else None)


def _loader(dataset, cfg: Config, order: list[int] | None = None, batch_size: int | None = None):
    return ordered_loader(dataset, batch_size or cfg.batch_size, cfg.num_workers, order)


def _features(model, dataset, cfg: Config, device, desc: str):
    """Backbone features (float32) of a whole split in dataset order (with a progress bar), in the autocast of
    ``--precision``.  Under torchrun each rank extracts its part and every rank gets all of them (one all-gather)."""
    batches = tqdm(_loader(part_of(dataset), cfg), desc=desc, disable=not show_progress(), leave=False)
    with autocast(cfg.precision, device):
        feats, labels = extract_features(model, batches, device)
    return gather_parts(feats.float(), len(dataset)), gather_parts(labels, len(dataset))


def accuracy(model, dataset, cfg: Config, device) -> float:
    """Accuracy of the full model on a whole split; under torchrun each rank scores its part and the counts are
    summed (every rank returns the single-process number)."""
    correct, total = sum_counts(*correct_count(model, _loader(part_of(dataset), cfg), device), device=device)
    return correct / max(total, 1)


def train_model(model, data, cfg: Config, run: Run, device) -> dict[str, Any]:
    """Adam on fc, best-validation checkpoint, reload the best; cached features when ``cfg.use_cache()``."""


    info, batch_size = distributed.current(), distributed.local_batch(cfg.batch_size)  # this rank's share
    t0 = time.perf_counter()
    cache = {s: _features(model, getattr(data, s), cfg, device, f"features {s}") for s in ("train", "val")} \
        if cfg.use_cache() else None
    cache_s = time.perf_counter() - t0 if cache else 0.0
    set_backbone_mode(model, cfg.bn_mode)
    modules = {"fc": model.fc} if cfg.bn_mode == "eval" else {"model": model}  # eval: the backbone never changes
    trainer = Trainer(run, modules, {"adam": torch.optim.Adam(model.fc.parameters(), lr=cfg.lr)}, epochs=cfg.epochs,
                      monitor="val/acc", mode="max", device=device, desc="resnet-transfer", precision=cfg.precision,
                      compile=cfg.compile)

    net = trainer.wrap(model.fc if cache is not None else model)  # only fc trains: DDP averages its gradients

    def train_batches(epoch: int):  # the ranks' i-th batches together: the i-th global batch of one process
        order = shard(epoch_order(len(data.train), cfg.seed, epoch), info.rank, info.world_size)
        return _loader(data.train, cfg, order, batch_size) if cache is None else \
            cached_batches(*cache["train"], order, batch_size)

    def train_step(batch) -> dict[str, Any]:
        x, y = (t.to(device) for t in batch)
        logits = net(x)  # (b, classes)
        loss = F.cross_entropy(logits, y)
        trainer.backward_step(loss)
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}

    def evaluate(epoch: int) -> dict[str, dict[str, float]]:
        acc = accuracy(model, data.val, cfg, device) if cache is None else \
            feature_accuracy(model.fc, *cache["val"], cfg.batch_size)  # every rank holds all features
        set_backbone_mode(model, cfg.bn_mode)
        return {"val": {"acc": acc}}

    epoch_s: list[float] = []
    last = [time.perf_counter()]

    def on_epoch_end(epoch: int, results: dict) -> None:  # an epoch = training + validation + checkpoint write
        epoch_s.append(time.perf_counter() - last[0])
        last[0] = time.perf_counter()

    trainer.on_epoch_end = on_epoch_end
    fit = trainer.fit(train_batches, train_step, evaluate, resume=cfg.resume)
    trainer.load_best()
    return {**fit, "feature_cache_s": cache_s, "epoch_s": epoch_s, "cached_features": cache is not None}


def run(cfg: Config, run: Run) -> dict[str, Any]:
    check_weights(cfg.weights)  # before touching the data: a missing weight file fails within a second
    device = run.device = choose_device(cfg.device)
    state = resnet18_state_dict(cfg.weights)  # read and checked before the data: a bad file is one line at once
    data = build_data(cfg, run)
    seed_everything(cfg.seed)
    model = get_model(data.num_classes, state).to(device)
    fit = train_model(model, data, cfg, run, device)
    sections: dict[str, Any] = {}
    with autocast(cfg.precision, device):  # the precision it trained and validated in
        for split, dataset in (("test", data.test), ("test_noise", data.test_noisy)):
            if dataset is not None:
                sections[split] = {"acc": accuracy(model, dataset, cfg, device)}
                run.log(fit["steps"], split, sections[split])
    weights = cfg.weights if cfg.weights in ("imagenet", "random") else f"file {cfg.weights}"
    return run.finish(**sections, best_epoch=fit["best_epoch"], best_val_acc=fit["best_value"], fit=fit,
                      weights=weights, bn_mode=cfg.bn_mode, device=str(device), data=data.notes,
                      num_classes=data.num_classes)


def export(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    """The classifier ``fc`` (``--bn_mode eval``: the backbone is the ImageNet ResNet-18, unchanged), or the whole
    ResNet-18 (``--bn_mode train``, whose batch-norm statistics changed)."""
    path = checkpoint_file(run_dir, prefer=prefer)
    modules, where = trainer_modules(path)
    if "fc" in modules:  # --bn_mode eval: the backbone is the ImageNet ResNet-18, unchanged
        fc = module_state(modules, "fc", path)
        out_features, in_features = (int(n) for n in fc["weight"].shape)
        return Exported(fc, "torch.nn.Linear", {"in_features": in_features, "out_features": out_features},
                        {"backbone": f"ResNet-18, weights {config.get('weights')} (unchanged: fc replaces its fc)"},
                        where)
    state = module_state(modules, "model", path)
    return Exported(state, "torchvision.models.resnet18", {"num_classes": int(state["fc.weight"].shape[0])},
                    checkpoint=where)
