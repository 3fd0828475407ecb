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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dl1.config import arg
from dl1.errors import UsageError
from dl1.report import save_figure
from dl1.runtime import Run

SPLIT_SEED = 42  # the course's train/validation split seed (independent of --seed)
SYNTHETIC_SIZES = {"n_train": 64, "n_test": 32}  # fake CIFAR-10 files for --dataset synthetic (smoke runs only)


@dataclass(frozen=True)
class Config:
    lr: float = arg(0.001, "Adam learning rate of fc.", min=0.0, min_inclusive=False)
    batch_size: int = arg(128, "Mini-batch size (training and evaluation).", min=1)
    epochs: int = arg(30, "Training epochs.", min=1)
    seed: int = arg(123, "Seed of fc's initialisation and of the batch order.")
    dataset: str = arg("cifar100", "Dataset; synthetic = tiny fake CIFAR-10 files written into the run folder "
                                   "(smoke runs only, never a result).", choices=("cifar100", "cifar10", "synthetic"))
    data_dir: str | None = arg(None, "Folder holding the CIFAR files (default: $DL1_DATA, else ./data).")
    augmentation_name: str | None = arg(None, "Training augmentation(s), comma-separated: random_hflip, random_crop, "
                                              "auto_augment, rand_augment, trivial_augment, color_jitter, "
                                              "random_erasing (default: none).")
    test_noise: bool = arg(False, "Also evaluate on test images with Gaussian noise added after normalisation.")
    noise_std: float = arg(0.1, "Standard deviation of the test noise (normalised units).", min=0.0)
    weights: str = arg("imagenet", "Backbone weights: imagenet (torchvision IMAGENET1K_V1, from the torch hub cache "
                                   "or downloaded), a local state-dict PATH, or random (tests only, never a result).")
    bn_mode: str = arg("eval", "Batch-norm mode of the frozen backbone while training: eval (pure linear probe) or "
                               "train (running statistics drift, as in the reference solution).",
                       choices=("eval", "train"))
    cache_features: str = arg("auto", "Train fc on cached 512-d features: auto (when there is no augmentation and "
                                      "bn_mode is eval), on, or off.", choices=("auto", "on", "off"))
    val_size: int = arg(5000, "Validation images split off the train set (seed 42).", min=1)
    image_size: int = arg(224, "Side the 32x32 images are resized to.", min=16, max=1024)
    num_workers: int = arg(2, "DataLoader worker processes for the image pipeline.", min=0)
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, ...")
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


SMOKE = {"dataset": "synthetic", "weights": "random", "epochs": 2, "batch_size": 16, "val_size": 16,
         "image_size": 32, "num_workers": 0}


# ---------------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class ProbeData:
    train: Any  # torch Dataset of (image, label)
    val: Any
    test: Any
    test_noisy: Any | None
    num_classes: int
    notes: dict[str, Any]


def build_data(cfg: Config, run: Run) -> ProbeData:
    """Train/val (two copies of the train set, only train augmented), test, and the noisy test set if asked."""
    from torch.utils.data import Subset

    from dl1.data.augment import build_transform
    from dl1.data.vision import DATASETS, get_dataset, split_indices

    name, data_dir, notes = cfg.dataset, cfg.data_dir, {}
    if name == "synthetic":
        from dl1.data.fake import write_cifar

        data_dir = run.dir / "synthetic_data"
        write_cifar(data_dir, "cifar10", seed=cfg.seed, **SYNTHETIC_SIZES)
        name, notes = "cifar10", {"synthetic": True, "warning": "fake CIFAR files: a smoke check, not a result"}
    stats = DATASETS["cifar100"]  # the template normalises CIFAR-10 with the CIFAR-100 statistics too
    tf = {k: build_transform(cfg.image_size, stats.mean, stats.std, augmentation=aug, test_noise=noise,
                             noise_std=cfg.noise_std)
          for k, aug, noise in (("train", cfg.augmentation_name, False), ("plain", None, False), ("noisy", None, True))}
    train_full = get_dataset(name, "train", data_dir, transform=tf["train"])
    val_full = get_dataset(name, "train", data_dir, transform=tf["plain"])
    if cfg.val_size >= len(train_full):
        raise UsageError(f"--val_size: {cfg.val_size} must be smaller than the train set ({len(train_full)} images)")
    tr_idx, va_idx = split_indices(len(train_full), cfg.val_size, SPLIT_SEED)
    test = get_dataset(name, "test", data_dir, transform=tf["plain"])
    noisy = get_dataset(name, "test", data_dir, transform=tf["noisy"]) if cfg.test_noise else None
    return ProbeData(Subset(train_full, tr_idx.tolist()), Subset(val_full, va_idx.tolist()), test, noisy,
                     len(train_full.classes), notes)


def _loader(dataset, batch_size: int, num_workers: int, order: list[int] | None = None):
    import torch

    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order, shuffle=False,
                                       num_workers=num_workers, pin_memory=torch.cuda.is_available())


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of epoch ``epoch``; depends only on ``(seed, epoch)``, identical with and without caching."""
    import torch

    from dl1.data.loaders import epoch_generator

    return torch.randperm(n, generator=epoch_generator(seed, epoch)).tolist()


# ---------------------------------------------------------------------------------------------------------------------
# features and evaluation
# ---------------------------------------------------------------------------------------------------------------------

def extract_features(model, dataset, cfg: Config, device, desc: str):
    """Backbone features of a whole split, in dataset order: ((N, 512) on ``device``, (N,) labels)."""
    import torch
    from tqdm.auto import tqdm

    from dl1.models.resnet_probe import features
    from dl1.train.engine import show_progress

    model.eval()
    feats, labels = [], []
    with torch.no_grad():
        for x, y in tqdm(_loader(dataset, cfg.batch_size, cfg.num_workers), desc=desc, disable=not show_progress(),
                         leave=False):
            feats.append(features(model, x.to(device)))  # (B, 512)
            labels.append(y.to(device))
    return torch.cat(feats), torch.cat(labels)


def evaluate_model(model, data_loader, device) -> float:
    """The course's ``evaluate_model``: accuracy in [0, 1] with the model in eval mode and no gradients."""
    import torch

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in data_loader:
            pred = model(x.to(device)).argmax(dim=1)
            correct += int((pred == y.to(device)).sum())
            total += len(y)
    return correct / max(total, 1)


def feature_accuracy(fc, feats, labels, batch_size: int) -> float:
    """Accuracy of ``fc`` on cached features."""
    import torch

    fc.eval()
    with torch.no_grad():
        correct = sum(int((fc(feats[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
                      for i in range(0, len(labels), batch_size))
    return correct / max(len(labels), 1)


# ---------------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------------

def train_model(model, data: ProbeData, cfg: Config, run: Run, device) -> dict[str, Any]:
    """Adam on fc, best-validation checkpoint, reload the best; cached features when ``cfg.use_cache()``."""
    import torch
    import torch.nn.functional as F

    from dl1.models.resnet_probe import set_backbone_mode
    from dl1.train import Trainer

    timings: dict[str, Any] = {"feature_cache_s": 0.0, "epoch_s": []}
    cache = None
    if cfg.use_cache():
        t0 = time.perf_counter()
        cache = {s: extract_features(model, getattr(data, s), cfg, device, f"features {s}") for s in ("train", "val")}
        timings["feature_cache_s"] = time.perf_counter() - t0
    set_backbone_mode(model, cfg.bn_mode)
    modules = {"fc": model.fc} if cfg.bn_mode == "eval" else {"model": model}  # eval: the backbone never changes
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=cfg.lr)
    trainer = Trainer(run, modules, {"adam": optimizer}, epochs=cfg.epochs, monitor="val/acc", mode="max",
                      device=device, desc="resnet-transfer")
    n_train = len(data.train)

    def train_batches(epoch: int):
        order = epoch_order(n_train, cfg.seed, epoch)
        if cache is None:
            return _loader(data.train, cfg.batch_size, cfg.num_workers, order)
        feats, labels = cache["train"]
        idx = torch.tensor(order, device=feats.device)
        return [(feats[idx[i:i + cfg.batch_size]], labels[idx[i:i + cfg.batch_size]])
                for i in range(0, n_train, cfg.batch_size)]

    def train_step(batch) -> dict[str, Any]:
        x, y = (t.to(device) for t in batch)
        logits = model.fc(x) if cache is not None else model(x)  # (B, classes)
        loss = F.cross_entropy(logits, y)
        trainer.backward_step(loss)
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}

    def evaluate(epoch: int) -> dict[str, dict[str, float]]:
        if cache is None:
            acc = evaluate_model(model, _loader(data.val, cfg.batch_size, cfg.num_workers), device)
        else:
            acc = feature_accuracy(model.fc, *cache["val"], cfg.batch_size)
        set_backbone_mode(model, cfg.bn_mode)
        return {"val": {"acc": acc}}

    last = [time.perf_counter()]

    def on_epoch_end(epoch: int, results: dict) -> None:
        now = time.perf_counter()
        timings["epoch_s"].append(now - last[0])
        last[0] = now

    trainer.on_epoch_end = on_epoch_end
    fit = trainer.fit(train_batches, train_step, evaluate, resume=cfg.resume)
    trainer.load_best()
    return {**fit, **timings, "cached_features": cache is not None}


def run(cfg: Config, run: Run) -> dict[str, Any]:
    from dl1.models.resnet_probe import check_weights, get_model
    from dl1.runtime import choose_device, seed_everything

    check_weights(cfg.weights)  # before touching the data: a missing weight file fails within a second
    try:
        device = choose_device(cfg.device)
    except RuntimeError as exc:
        raise UsageError(f"--device: {exc}") from None
    data = build_data(cfg, run)
    seed_everything(cfg.seed)
    model = get_model(data.num_classes, cfg.weights).to(device)
    fit = train_model(model, data, cfg, run, device)
    test = {"acc": evaluate_model(model, _loader(data.test, cfg.batch_size, cfg.num_workers), device)}
    run.log(fit["steps"], "test", test)
    sections: dict[str, Any] = {"test": test}
    if data.test_noisy is not None:
        noisy = {"acc": evaluate_model(model, _loader(data.test_noisy, cfg.batch_size, cfg.num_workers), device)}
        run.log(fit["steps"], "test_noise", noisy)
        sections["test_noise"] = noisy
    weights = cfg.weights if cfg.weights in ("imagenet", "random") else f"file {cfg.weights}"
    return run.finish(**sections, best_epoch=fit["best_epoch"], best_val_acc=fit["best_value"], fit=fit,
                      weights=weights, bn_mode=cfg.bn_mode, device=str(device), data=data.notes,
                      num_classes=data.num_classes)


def make_figures(run_dir: Path) -> list[Path]:
    """Training curves (train loss/accuracy, validation accuracy per epoch) from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dl1.runtime import read_jsonl

    records = read_jsonl(Path(run_dir) / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    if not train:
        return []
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot([r["epoch"] for r in train], [r["loss"] for r in train], marker="o")
    a.set(xlabel="epoch", ylabel="train loss", title="fc training loss")
    b.plot([r["epoch"] for r in train], [r["acc"] for r in train], marker="o", label="train")
    b.plot([r["epoch"] for r in val], [r["acc"] for r in val], marker="o", label="validation")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    b.legend()
    fig.tight_layout()
    path = Path(run_dir) / "figures" / "resnet_transfer_curves.png"
    save_figure(fig, path)
    return [path]
