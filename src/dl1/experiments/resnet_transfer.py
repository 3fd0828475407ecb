"""ResNet-18 transfer (Q1.2): frozen ImageNet backbone, fresh fc trained with Adam on CIFAR-100/10, cached features.

ImageNet ResNet-18 (torchvision ``IMAGENET1K_V1``, or ``--weights PATH``), every parameter frozen, ``fc`` replaced by a
``Linear(512, classes)`` with weight N(0, 0.01^2) and bias 0; Adam on ``fc`` only, cross-entropy, validation accuracy
after every epoch, the best checkpoint kept and reloaded for the test accuracy.  Data: CIFAR resized to 224x224,
normalised with the CIFAR-100 statistics (the template uses them for CIFAR-10 too); train/validation = 45 000/5 000
with split seed 42, built from two copies of the train set so that only the train part is augmented.
Batch norm of the frozen backbone stays in eval mode by default (``--bn_mode eval``: a pure linear probe on fixed
ImageNet features); ``--bn_mode train`` reproduces the reference solution, whose ``model.train()`` lets the BN running
statistics drift to CIFAR.  Without augmentation (and with ``--bn_mode eval``) the backbone's 512-d features never
change, so they are computed once per split and ``fc`` trains on them (``--cache_features auto``): the same model and
result as full forwards, many times faster.  ``--test_noise`` also reports the accuracy on test images with N(0, 0.1)
noise added after normalisation.

Under ``torchrun --nproc_per_node N -m dl1 run resnet-transfer ...`` it trains data parallel: each rank takes
``--batch_size / N`` images (or cached features) of every global batch; the feature cache, the validation and the
test accuracy are shared by the ranks (each computes its part, the parts are gathered or the counts summed), so the
numbers are those of one process; rank 0 writes the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dl1.config import arg, precision_arg
from dl1.errors import UsageError
from dl1.runtime import Run

MAX_BATCH, MAX_EPOCHS, MAX_SEED = 4096, 10_000, 2**32 - 1


@dataclass(frozen=True)
class Config:
    lr: float = arg(0.001, "Adam learning rate of fc.", min=0.0, max=10.0, min_inclusive=False)
    batch_size: int = arg(128, "Mini-batch size (training and evaluation), the global batch under torchrun (each of "
                               "N ranks takes 1/N of it).", min=1, max=MAX_BATCH)
    epochs: int = arg(30, "Training epochs.", min=1, max=MAX_EPOCHS)
    seed: int = arg(123, "Seed of fc's initialisation and of the batch order.", min=0, max=MAX_SEED)
    dataset: str = arg("cifar100", "Dataset; synthetic = tiny fake CIFAR-10 files written into the run folder "
                                   "(smoke runs only, never a result).", choices=("cifar100", "cifar10", "synthetic"))
    data_dir: str | None = arg(None, "Folder holding the CIFAR files (default: $DL1_DATA, else ./data).")
    augmentation_name: str | None = arg(None, "Training augmentation(s), comma-separated: random_hflip, random_crop, "
                                              "auto_augment, rand_augment, trivial_augment, color_jitter, "
                                              "random_erasing (default: none).")
    test_noise: bool = arg(False, "Also evaluate on test images with Gaussian noise added after normalisation.")
    noise_std: float = arg(0.1, "Standard deviation of the test noise (normalised units).", min=0.0, max=100.0)
    weights: str = arg("imagenet", "Backbone weights: imagenet (torchvision IMAGENET1K_V1, from the torch hub cache "
                                   "or downloaded), a local state-dict PATH, or random (tests only, never a result). "
                                   "Files are read with torch.load(weights_only=True): tensors only, a file holding "
                                   "anything else is refused.")
    bn_mode: str = arg("eval", "Batch-norm mode of the frozen backbone while training: eval (pure linear probe) or "
                               "train (running statistics drift, as in the reference solution).",
                       choices=("eval", "train"))
    cache_features: str = arg("auto", "Train fc on cached 512-d features: auto (when there is no augmentation and "
                                      "bn_mode is eval), on, or off.", choices=("auto", "on", "off"))
    val_size: int = arg(5000, "Validation images split off the train set (seed 42).", min=1, max=1_000_000)
    image_size: int = arg(224, "Side the 32x32 images are resized to.", min=16, max=1024)
    num_workers: int = arg(2, "DataLoader worker processes for the image pipeline.", min=0, max=64)
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, ...")
    precision: str = precision_arg()
    resume: str | None = arg(None, "Run folder (or checkpoint) of an interrupted run to continue.")

    def check(self) -> None:
        from dl1.data.augment import parse_names

        augmented = bool(parse_names(self.augmentation_name))
        if self.cache_features == "on" and (augmented or self.bn_mode == "train"):
            why = "augmentation changes the images every epoch" if augmented else "bn_mode train changes the backbone"
            raise UsageError(f"--cache_features on: features cannot be cached because {why}; use auto or off")

    def use_cache(self) -> bool:
        from dl1.data.augment import parse_names

        if self.cache_features == "auto":
            return not parse_names(self.augmentation_name) and self.bn_mode == "eval"
        return self.cache_features == "on"


GLOBAL_BATCH = ("batch_size",)  # data parallel under torchrun
SMOKE = {"dataset": "synthetic", "weights": "random", "epochs": 2, "batch_size": 16, "val_size": 16,
         "image_size": 32, "num_workers": 0}


# ---------------------------------------------------------------------------------------------------------------------
# wiring: data -> model -> Trainer -> test
# ---------------------------------------------------------------------------------------------------------------------

def build_data(cfg: Config, run: Run):
    """The train/val/test (and noisy test) datasets of ``cfg`` (fake CIFAR files in ``run.synthetic_dir()`` if
    synthetic)."""
    from dl1.data.transfer import probe_data

    return probe_data(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, augmentation=cfg.augmentation_name,
                      test_noise=cfg.test_noise, noise_std=cfg.noise_std, val_size=cfg.val_size, seed=cfg.seed,
                      synthetic_dir=run.synthetic_dir() if cfg.dataset == "synthetic" else None)


def _loader(dataset, cfg: Config, order: list[int] | None = None, batch_size: int | None = None):
    from dl1.data.loaders import ordered_loader

    return ordered_loader(dataset, batch_size or cfg.batch_size, cfg.num_workers, order)


def _features(model, dataset, cfg: Config, device, desc: str):
    """Backbone features (float32) of a whole split in dataset order (with a progress bar), in the autocast of
    ``--precision``.  Under torchrun each rank extracts its part and every rank gets all of them (one all-gather)."""
    from tqdm.auto import tqdm

    from dl1.models.resnet_probe import extract_features
    from dl1.train.distributed import gather_parts, part_of
    from dl1.train.engine import show_progress
    from dl1.train.precision import autocast

    batches = tqdm(_loader(part_of(dataset), cfg), desc=desc, disable=not show_progress(), leave=False)
    with autocast(cfg.precision, device):
        feats, labels = extract_features(model, batches, device)
    return gather_parts(feats.float(), len(dataset)), gather_parts(labels, len(dataset))


def accuracy(model, dataset, cfg: Config, device) -> float:
    """Accuracy of the full model on a whole split; under torchrun each rank scores its part and the counts are
    summed (every rank returns the single-process number)."""
    from dl1.models.resnet_probe import correct_count
    from dl1.train.distributed import part_of, sum_counts

    correct, total = sum_counts(*correct_count(model, _loader(part_of(dataset), cfg), device), device=device)
    return correct / max(total, 1)


def train_model(model, data, cfg: Config, run: Run, device) -> dict[str, Any]:
    """Adam on fc, best-validation checkpoint, reload the best; cached features when ``cfg.use_cache()``."""
    import time

    import torch
    import torch.nn.functional as F

    from dl1.data.loaders import epoch_order, shard
    from dl1.models.resnet_probe import cached_batches, feature_accuracy, set_backbone_mode
    from dl1.train import Trainer, distributed

    info, batch_size = distributed.current(), distributed.local_batch(cfg.batch_size)  # this rank's share
    t0 = time.perf_counter()
    cache = {s: _features(model, getattr(data, s), cfg, device, f"features {s}") for s in ("train", "val")} \
        if cfg.use_cache() else None
    cache_s = time.perf_counter() - t0 if cache else 0.0
    set_backbone_mode(model, cfg.bn_mode)
    modules = {"fc": model.fc} if cfg.bn_mode == "eval" else {"model": model}  # eval: the backbone never changes
    trainer = Trainer(run, modules, {"adam": torch.optim.Adam(model.fc.parameters(), lr=cfg.lr)}, epochs=cfg.epochs,
                      monitor="val/acc", mode="max", device=device, desc="resnet-transfer", precision=cfg.precision)

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
    from dl1.hub.torchvision import check_weights, resnet18_state_dict
    from dl1.models.resnet_probe import get_model
    from dl1.runtime import choose_device, seed_everything
    from dl1.train.precision import autocast

    check_weights(cfg.weights)  # before touching the data: a missing weight file fails within a second
    device = choose_device(cfg.device)
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


def make_figures(run_dir: Path) -> list[Path]:
    """Training curves (train loss/accuracy, validation accuracy per epoch) from metrics.jsonl."""
    from dl1.report.transfer import make_figures as curves

    return curves(run_dir)
