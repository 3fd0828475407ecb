"""CLIP zero-shot classification (Q2.1): top-1/top-5 on CIFAR-10/100 and the 8-image top-5 prediction figure.

The class text features are computed once (one prompt per class, or a named prompt ensemble averaged over templates);
the logits are ``logit_scale.exp()`` x cosine(image, class text).  Top-1 and top-5 are counted over the whole split
(sample-weighted).  ``--visualize_predictions`` draws 8 random images with their top-5 class probabilities
(softmax over the top 5 logits, as the course).  With ``--class_names`` (new labels the dataset does not have) the run
only draws that figure.  ``--test_noise`` adds N(0, 0.1) noise after CLIP preprocessing.  ``--arch tiny-test`` is a
tiny CLIP with RANDOM weights for smoke tests only; it never stands in for missing weights.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dl1.config import arg
from dl1.errors import UsageError
from dl1.runtime import Run, choose_device, seed_everything

TINY_ARCH = "tiny-test"
ENSEMBLES = ("imagenet80", "imagenet7", "cifar18", "course")
N_SHOWN = 8  # images in the prediction figure (the course's choice)


@dataclass(frozen=True)
class Config:
    arch: str = arg("ViT-B/32", "CLIP architecture: course names (ViT-B/32, ViT-B/16, RN50, ...) or open_clip names "
                                "(ViT-B-32, ...); 'tiny-test' = a tiny CLIP with RANDOM weights, for smoke tests only.")
    dataset: str = arg("cifar10", "Dataset to classify.", choices=("cifar10", "cifar100"))
    split: str = arg("train", "Dataset split to evaluate (the course's default is train).", choices=("train", "test"))
    prompt_template: str = arg("This is a photo of a {}", "Text prompt; '{}' is replaced by each class name "
                                                          "('_' becomes a space).")
    ensemble: str | None = arg(None, "Named prompt ensemble used instead of --prompt_template: imagenet80 (the CLIP "
                                     "paper's 80 ImageNet templates), imagenet7, cifar18 (the paper's CIFAR "
                                     "templates), course.", choices=ENSEMBLES)
    class_names: tuple[str, ...] | None = arg(None, "Class names to use instead of the dataset's (e.g. red green "
                                                    "blue); the dataset has no labels for them, so only the "
                                                    "prediction figure is made.")
    visualize_predictions: bool = arg(False, "Save the figure of 8 random images with their top-5 predictions.")
    test_noise: bool = arg(False, "Add N(0, 0.1) Gaussian noise to the images after CLIP preprocessing.")
    batch_size: int = arg(32, "Images per batch.", min=1)
    num_workers: int | None = arg(None, "DataLoader worker processes (default: min(16, CPU count)).", min=0)
    seed: int = arg(42, "Random seed (which images are shown; noise).")
    data_dir: str | None = arg(None, "Folder with the CIFAR files (default: $DL1_DATA, else ./data).")
    clip_weights: str | None = arg(None, "Local CLIP weights: an OpenAI .pt archive (TorchScript or state dict) or "
                                         "an open_clip state dict/.safetensors (default: open_clip's cache or "
                                         "download of the OpenAI weights).")
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ...")
    preprocess: str = arg("auto", "Where CLIP preprocessing runs: pil (per image in DataLoader workers, as the "
                                  "course), batch (whole uint8 batches on the model's device; the same numbers, "
                                  "Pillow's bicubic reproduced exactly), auto (batch on CUDA, else pil).",
                          choices=("auto", "pil", "batch"))
    max_batches: int = arg(0, "Stop after this many batches (0 = the whole split; anything else is marked "
                              "partial).", min=0)
    synthetic_data: bool = arg(False, "Smoke tests only: write tiny random CIFAR files (real format) into the run "
                                      "folder and use them instead of --data_dir.")

    def check(self) -> None:
        if self.prompt_template.count("{}") != 1:
            raise UsageError(f"--prompt_template must contain '{{}}' exactly once, got {self.prompt_template!r}")
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            raise UsageError("--class_names: the names must be distinct")
        if self.arch == TINY_ARCH and self.clip_weights:
            raise UsageError(f"--arch {TINY_ARCH} is a random test model; it takes no --clip_weights")


SMOKE = {"arch": TINY_ARCH, "synthetic_data": True, "batch_size": 8, "num_workers": 0, "max_batches": 0,
         "visualize_predictions": True}


# -- steps -------------------------------------------------------------------------------------------------------------
def _clip(cfg: Config, device):
    """The CLIP bundle: pretrained weights, or the tiny random test model when asked for by name."""
    from dl1.models.clip import load_clip, tiny_clip

    if cfg.arch == TINY_ARCH:
        return tiny_clip(device=device)
    return load_clip(cfg.arch, weights=cfg.clip_weights, device=device)


def _data_dir(cfg: Config, run: Run) -> str | None:
    if not cfg.synthetic_data:
        return cfg.data_dir
    from dl1.data.fake import write_cifar

    root = run.dir / "synthetic_data"
    write_cifar(root, cfg.dataset, n_train=40, n_test=24, seed=cfg.seed)
    return str(root)


def _templates(cfg: Config) -> tuple[str, ...]:
    from dl1.models.clip_templates import get_templates

    return get_templates(cfg.ensemble) if cfg.ensemble else (cfg.prompt_template,)


def make_loader(dataset, batch_size: int, num_workers: int | None, device):
    """A sequential DataLoader (no shuffle); pinned memory and prefetching when the model runs on CUDA."""
    import torch

    workers = min(16, os.cpu_count() or 1) if num_workers is None else num_workers
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       pin_memory=device.type == "cuda",
                                       prefetch_factor=4 if workers > 0 else None,
                                       persistent_workers=False), workers


class SliceBatches:
    """Consecutive batches as views of tensors already on the device (no copies, no host-device sync)."""

    def __init__(self, images, targets, batch_size: int):
        self.images, self.targets, self.batch_size = images, targets, batch_size

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.images), self.batch_size):
            yield self.images[start:start + self.batch_size], self.targets[start:start + self.batch_size]


def make_batches(cfg: Config, dataset, clip, device) -> tuple[Any, Any, dict[str, Any]]:
    """``(batches, prepare, info)``: PIL preprocessing in DataLoader workers, or raw uint8 batches that ``prepare``
    (a :class:`~dl1.models.clip.BatchPreprocess`) turns into model input on the device."""
    from dl1.errors import DL1Error
    from dl1.models.clip import BatchPreprocess

    prep = None if cfg.preprocess == "pil" else \
        BatchPreprocess.from_preprocess(clip.preprocess, 0.1 if cfg.test_noise else None)
    raw = getattr(dataset, "data", None)
    eligible = prep is not None and isinstance(raw, np.ndarray) and raw.ndim == 4 and raw.shape[-1] == 3
    if cfg.preprocess == "batch" and not eligible:
        raise DL1Error("--preprocess batch needs CLIP's standard resize/crop/normalise preprocessing and an "
                       "in-memory RGB dataset; use --preprocess pil")
    if cfg.preprocess == "batch" or (cfg.preprocess == "auto" and eligible and device.type == "cuda"):
        import torch

        # the whole uint8 split goes to the device once (CIFAR train: 150 MB); batches are slices there
        images = torch.from_numpy(raw).to(device)
        targets = torch.as_tensor(dataset.targets, dtype=torch.long).to(device)
        batches = SliceBatches(images, targets, cfg.batch_size)
        return batches, prep.to(device), {"preprocess": "batch", "num_workers": 0}
    loader, workers = make_loader(dataset, cfg.batch_size, cfg.num_workers, device)
    return loader, None, {"preprocess": "pil", "num_workers": workers}


def evaluate(model, loader, device, num_classes: int, max_batches: int = 0, desc: str = "zero-shot",
             prepare=None) -> dict:
    """Top-1/top-5 (percent, sample-weighted) and per-class top-1 over ``loader``; images/s of the whole pass.
    ``prepare`` (optional) turns each batch into model input on the device (batch preprocessing)."""
    import torch
    from tqdm import tqdm

    from dl1.train.engine import show_progress

    k = min(5, num_classes)
    # counts stay on the device (index_add_, no boolean indexing): no host-device sync inside the loop
    correct1 = torch.zeros(num_classes, dtype=torch.long, device=device)
    total = torch.zeros(num_classes, dtype=torch.long, device=device)
    correct5 = torch.zeros((), dtype=torch.long, device=device)
    total_batches = min(len(loader), max_batches) if max_batches else len(loader)
    start = time.perf_counter()
    with torch.inference_mode():
        for i, (images, targets) in enumerate(tqdm(loader, total=total_batches, desc=desc,
                                                   disable=not show_progress())):
            if max_batches and i >= max_batches:
                break
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if prepare is not None:
                images = prepare(images)  # uint8 (B, H, W, 3) -> (B, 3, S, S)
            logits = model.model_inference(images)  # (B, C)
            top = logits.topk(k, dim=1).indices  # (B, k)
            correct1.index_add_(0, targets, (top[:, 0] == targets).long())
            correct5 += (top == targets[:, None]).any(dim=1).sum()
            total.index_add_(0, targets, torch.ones_like(targets))
    correct1, total, correct5 = correct1.cpu(), total.cpu(), correct5.cpu()  # waits for the device
    seconds = time.perf_counter() - start
    n = int(total.sum())
    per_class = (100.0 * correct1 / total.clamp(min=1)).tolist()
    return {"top1": 100.0 * float(correct1.sum()) / max(n, 1), f"top{k}": 100.0 * float(correct5) / max(n, 1),
            "n": n, "images_per_s": n / seconds if seconds > 0 else float("nan"),
            "per_class_top1": [round(v, 3) if c else None for v, c in zip(per_class, total.tolist(), strict=True)]}


def _visualize(cfg: Config, run: Run, model, dataset, classnames: list[str], device) -> str:
    """Predict 8 random images (``np.random.choice`` after seeding, as the course), save them and draw the figure."""
    import torch

    chosen = np.random.choice(len(dataset), min(N_SHOWN, len(dataset)), replace=False)
    images, labels = zip(*(dataset[int(i)] for i in chosen), strict=True)
    batch = torch.stack(images)  # (8, 3, S, S), CLIP-normalised
    with torch.inference_mode():
        logits = model.model_inference(batch.to(device)).cpu().numpy()  # (8, C)
    from dl1.report.clip import unnormalize

    known = cfg.class_names is None  # the dataset's labels only mean something for its own class names
    if not run.enabled:
        return ""
    np.savez_compressed(run.path("predictions.npz"), images=unnormalize(batch.numpy()), logits=logits,
                        labels=np.asarray(labels if known else [-1] * len(labels)), indices=chosen,
                        classnames=np.asarray(classnames))
    return str(make_figures(run.dir)[0])


def run(cfg: Config, run: Run) -> dict[str, Any]:
    from dl1.models.clip import ZeroshotCLIP, load_clip_dataset

    seed_everything(cfg.seed)
    device = choose_device(cfg.device)
    clip = _clip(cfg, device)
    dataset = load_clip_dataset(cfg.dataset, cfg.split, clip.preprocess, _data_dir(cfg, run), cfg.test_noise)
    classnames = list(cfg.class_names or dataset.classes)
    model = ZeroshotCLIP(clip, classnames, _templates(cfg), device)
    sections: dict[str, Any] = {
        "model": {"arch": cfg.arch, "pretrained": clip.pretrained, "weights": clip.weights,
                  "random_weights": clip.random_init, **clip.info},
        "data": {"dataset": cfg.dataset, "split": cfg.split, "size": len(dataset), "test_noise": cfg.test_noise,
                 "synthetic": cfg.synthetic_data},
        "prompts": {"templates": len(model.templates), "ensemble": cfg.ensemble, "first_prompt": model.prompts[0],
                    "classes": len(classnames)},
    }
    if cfg.visualize_predictions or cfg.class_names:
        sections["figure"] = _visualize(cfg, run, model, dataset, classnames, device)
    if cfg.class_names:
        return run.finish(**sections, note="custom --class_names have no labels: prediction figure only")
    batches, prepare, how = make_batches(cfg, dataset, clip, device)
    metrics = evaluate(model, batches, device, len(classnames), cfg.max_batches, desc=f"{cfg.dataset}-{cfg.split}",
                       prepare=prepare)
    per_class = metrics.pop("per_class_top1")
    metrics.update(full_split=metrics["n"] == len(dataset), batch_size=cfg.batch_size, **how)
    run.log(0, cfg.split, metrics)
    run.save_json("per_class.json", dict(zip(classnames, per_class, strict=True)))
    return run.finish(**sections, **{cfg.split: metrics})


def make_figures(run_dir: str | Path) -> list[Path]:
    """Redraw the prediction figure from ``predictions.npz`` and ``config.json`` of a run folder."""
    import json

    from dl1.report.clip import plot_predictions, safe_name

    run_dir = Path(run_dir)
    saved = run_dir / "predictions.npz"
    if not saved.exists():
        return []
    cfg = json.loads((run_dir / "config.json").read_text())
    with np.load(saved) as data:
        images, logits, labels = data["images"], data["logits"], data["labels"]
        classnames = [str(c) for c in data["classnames"]]
    custom = ",".join(cfg.get("class_names") or []) or "default"
    prompt = cfg.get("ensemble") or cfg.get("prompt_template", "")
    name = f"{cfg['dataset']}-{cfg['split']}_{safe_name(custom)}_{safe_name(prompt, 40)}.png"
    title = f"CLIP {cfg['arch']} zero-shot, {cfg['dataset']} {cfg['split']}, prompt: {prompt!r}"
    if cfg.get("arch") == TINY_ARCH:
        title += " (RANDOM test weights)"
    return [plot_predictions(images, logits, classnames, run_dir / "figures" / name,
                             labels=None if (labels < 0).all() else labels, title=title)]
