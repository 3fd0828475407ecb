"""The runner of ``dl1 run clip-zeroshot`` (flags and description: :mod:`dl1.experiments.clip_zeroshot`)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dl1.data.clip import cifar_folder, load_clip_dataset, zeroshot_batches
from dl1.experiments.clip_zeroshot import N_SHOWN, Config
from dl1.hub.clip import get_clip
from dl1.models.clip import ZeroshotCLIP
from dl1.models.clip_templates import get_templates
from dl1.report.clip import unnormalize, zeroshot_figures
from dl1.run.device import choose_device, seed_everything
from dl1.run.folder import Run
from dl1.train.engine import show_progress


# -- steps -------------------------------------------------------------------------------------------------------------
def _templates(cfg: Config) -> tuple[str, ...]:
    return get_templates(cfg.ensemble) if cfg.ensemble else (cfg.prompt_template,)


def make_batches(cfg: Config, dataset, clip, device) -> tuple[Any, Any, dict[str, Any]]:
    """``(batches, prepare, info)`` as ``--preprocess`` asks: PIL preprocessing in DataLoader workers, or raw uint8
    batches that ``prepare`` (a :class:`~dl1.data.clip.BatchPreprocess`) turns into model input on the device."""
    return zeroshot_batches(dataset, clip.preprocess, device, mode=cfg.preprocess, batch_size=cfg.batch_size,
                            num_workers=cfg.num_workers, noise_std=0.1 if cfg.test_noise else None)


def evaluate(model, loader, device, num_classes: int, max_batches: int = 0, desc: str = "zero-shot",
             prepare=None) -> dict:
    """Top-1/top-5 (percent, sample-weighted) and per-class top-1 over ``loader``; images/s of the whole pass.
    ``prepare`` (optional) turns each batch into model input on the device (batch preprocessing)."""

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
    chosen = np.random.choice(len(dataset), min(N_SHOWN, len(dataset)), replace=False)
    images, labels = zip(*(dataset[int(i)] for i in chosen), strict=True)
    batch = torch.stack(images)  # (8, 3, S, S), CLIP-normalised
    with torch.inference_mode():
        logits = model.model_inference(batch.to(device)).cpu().numpy()  # (8, C)
    known = cfg.class_names is None  # the dataset's labels only mean something for its own class names
    if not run.enabled:
        return ""
    np.savez_compressed(run.path("predictions.npz"), images=unnormalize(batch.numpy()), logits=logits,
                        labels=np.asarray(labels if known else [-1] * len(labels)), indices=chosen,
                        classnames=np.asarray(classnames))
    return str(zeroshot_figures(run.dir)[0])


def run(cfg: Config, run: Run) -> dict[str, Any]:
    seed_everything(cfg.seed)
    device = run.device = choose_device(cfg.device)
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
