"""CLIP zero-shot classification (Q2.1): top-1/top-5 on CIFAR-10/100 and the 8-image top-5 prediction figure.

The class text features are computed once (one prompt per class, or a named prompt ensemble averaged over templates);
the logits are ``logit_scale.exp()`` x cosine(image, class text).  Top-1 and top-5 are counted over the whole split
(sample-weighted).  ``--visualize_predictions`` draws 8 random images with their top-5 class probabilities
(softmax over the top 5 logits, as the course).  With ``--class_names`` (new labels the dataset does not have) the run
only draws that figure.  ``--test_noise`` adds N(0, 0.1) noise after CLIP preprocessing.  ``--arch tiny-test`` is a
tiny CLIP with RANDOM weights for smoke tests only; it never stands in for missing weights.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dl1.config import arg
from dl1.data.fashion_clip import DATASETS as FASHION_DATASETS
from dl1.errors import UsageError
from dl1.hub.clip import MINI_ARCH, TINY_ARCH, WEIGHTS_HELP, clip_choice
from dl1.runtime import Run, choose_device, seed_everything

ENSEMBLES = ("imagenet80", "imagenet7", "cifar18", "course")
N_SHOWN = 8  # images in the prediction figure (the course's choice)


@dataclass(frozen=True)
class Config:
    arch: str = arg("ViT-B/32", "CLIP architecture: course names (ViT-B/32, ViT-B/16, RN50, ...) or open_clip names "
                                f"(ViT-B-32, ...); '{MINI_ARCH}' = dl1's mini-CLIP (dl1 run mini-clip; --clip_weights "
                                "RUN, default the newest run); 'tiny-test' = a tiny CLIP with RANDOM weights, for "
                                "smoke tests only.")
    dataset: str = arg("cifar10", "Dataset to classify (Fashion-MNIST and its shifted copies: for the mini-CLIP).",
                       choices=("cifar10", "cifar100", *FASHION_DATASETS))
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
    batch_size: int = arg(32, "Images per batch.", min=1, max=4096)
    num_workers: int | None = arg(None, "DataLoader worker processes (default: min(16, CPU count)).", min=0, max=64)
    seed: int = arg(42, "Random seed (which images are shown; noise).", min=0, max=2**32 - 1)
    data_dir: str | None = arg(None, "Folder with the CIFAR files (default: $DL1_DATA, else ./data).")
    clip_weights: str | None = arg(None, "Default: open_clip's cache, else a download of the OpenAI weights. "
                                         + WEIGHTS_HELP)
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ...")
    preprocess: str = arg("auto", "Where CLIP preprocessing runs: pil (per image in DataLoader workers, as the "
                                  "course), batch (whole uint8 batches on the model's device; the same numbers, "
                                  "Pillow's bicubic reproduced exactly), auto (batch on CUDA, else pil).",
                          choices=("auto", "pil", "batch"))
    max_batches: int = arg(0, "Stop after this many batches (0 = the whole split; anything else is marked "
                              "partial).", min=0, max=10**9)
    synthetic_data: bool = arg(False, "Smoke tests only: write tiny random CIFAR files (real format) into the run "
                                      "folder and use them instead of --data_dir.")

    def __post_init__(self) -> None:
        arch, weights = clip_choice(self.arch, self.clip_weights)  # a mini-clip run folder -> its weights file
        object.__setattr__(self, "arch", arch)
        object.__setattr__(self, "clip_weights", weights)

    def check(self) -> None:
        if self.prompt_template.count("{}") != 1:
            raise UsageError(f"--prompt_template must contain '{{}}' exactly once, got {self.prompt_template!r}")
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            raise UsageError("--class_names: the names must be distinct")
        if self.arch == TINY_ARCH and self.clip_weights:
            raise UsageError(f"--arch {TINY_ARCH} is a random test model; it takes no --clip_weights")


SMOKE = {"arch": TINY_ARCH, "synthetic_data": True, "batch_size": 8, "num_workers": 0, "max_batches": 0,
         "visualize_predictions": True}


def preflight(cfg: Config) -> None:
    """A shifted Fashion-MNIST needs the Fashion-MNIST files (the plain name is checked by every experiment)."""
    if cfg.dataset in FASHION_DATASETS and not cfg.synthetic_data:
        from dl1.data import vision

        vision.prepare("fashion-mnist", cfg.data_dir)


# -- steps -------------------------------------------------------------------------------------------------------------
def _templates(cfg: Config) -> tuple[str, ...]:
    from dl1.models.clip_templates import get_templates

    return get_templates(cfg.ensemble) if cfg.ensemble else (cfg.prompt_template,)


def make_batches(cfg: Config, dataset, clip, device) -> tuple[Any, Any, dict[str, Any]]:
    """``(batches, prepare, info)`` as ``--preprocess`` asks: PIL preprocessing in DataLoader workers, or raw uint8
    batches that ``prepare`` (a :class:`~dl1.data.clip.BatchPreprocess`) turns into model input on the device."""
    from dl1.data.clip import zeroshot_batches

    return zeroshot_batches(dataset, clip.preprocess, device, mode=cfg.preprocess, batch_size=cfg.batch_size,
                            num_workers=cfg.num_workers, noise_std=0.1 if cfg.test_noise else None)


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
        batches = itertools.islice(loader, max_batches) if max_batches else loader
        for images, targets in tqdm(batches, total=total_batches, desc=desc, disable=not show_progress()):
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
    from dl1.data.clip import cifar_folder, load_clip_dataset
    from dl1.hub.clip import get_clip
    from dl1.models.clip import ZeroshotCLIP

    seed_everything(cfg.seed)
    device = choose_device(cfg.device)
    clip = get_clip(cfg.arch, weights=cfg.clip_weights, device=device)
    synthetic = run.dir / "synthetic_data" if cfg.synthetic_data else None
    folder = cifar_folder(cfg.data_dir, synthetic, [cfg.dataset], n_train=40, n_test=24, seed=cfg.seed)
    dataset = load_clip_dataset(cfg.dataset, cfg.split, clip.preprocess, folder, cfg.test_noise)
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
    from dl1.report.clip import zeroshot_figures

    return zeroshot_figures(run_dir)
