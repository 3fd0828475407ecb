"""The runner of ``dl1 run clip-cross-dataset`` (flags and description: :mod:`dl1.experiments.clip_cross_dataset`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from dl1.config import config_to_dict
from dl1.data.clip import batches, cifar110, cifar_folder, device_preprocess
from dl1.experiments import execute
from dl1.experiments.clip_cross_dataset import Config, weighted_total
from dl1.experiments.clip_prompt_checkpoint import DATA_FIELDS, PROMPT_FIELDS, read_prompt_checkpoint
from dl1.hub.clip import get_clip
from dl1.models.clip import text_features
from dl1.models.prompt_clip import build_prompted_clip, count_parameters, evaluate
from dl1.run.device import choose_device, seed_everything
from dl1.run.folder import Run
from dl1.train.precision import autocast, frozen_dtype


def load_parts(cfg: Config, preprocess, run: Run, batch=None) -> tuple[dict[str, Any], list[str]]:
    """``({"cifar10": test set, "cifar100": test set with labels + 10}, 110 class names)``; with ``batch`` (the
    clean and noisy BatchPreprocess of ``--preprocess batch``) raw splits preprocessed on the device."""
    synthetic = run.path("synthetic_data") if cfg.synthetic_data else None
    folder = cifar_folder(cfg.data_dir, synthetic, ("cifar10", "cifar100"), n_train=5, n_test=24, seed=cfg.seed)
    prepare = None if batch is None else batch[1] if cfg.test_noise else batch[0]
    return cifar110(folder, preprocess, cfg.test_noise, prepare)


def run(cfg: Config, run: Run) -> dict[str, Any]:
    seed_everything(cfg.seed)
    device = run.device = choose_device(cfg.device)
    if cfg.resume is None:  # --synthetic_data smoke run: learn a throw-away prompt on fake data first
        cfg = dataclasses.replace(cfg, resume=smoke_prompt(run))
    prompt, saved = read_prompt_checkpoint(cfg.resume, device)
    unset = [k for k in ("text_prompt_template", "synthetic_data") if getattr(cfg, k) is None]
    cfg = dataclasses.replace(cfg, **{k: saved.get(k, DATA_FIELDS[k]) for k in unset})  # as the prompt was trained
    run.save_json("config.json", {"experiment": run.experiment, **config_to_dict(cfg)})  # what was used
    bundle = get_clip(saved["arch"], pretrained=saved["pretrained"], image_size=saved["image_size"], device=device,
                      weights=cfg.clip_weights or saved.get("clip_weights"))
    batch = device_preprocess(cfg.preprocess, bundle.preprocess, device)
    if batch is not None:
        batch = (batch, device_preprocess(cfg.preprocess, bundle.preprocess, device, noise_std=0.1))
    parts, classes = load_parts(cfg, bundle.preprocess, run, batch)
    text = text_features(bundle.model, bundle.tokenizer, classes, (cfg.text_prompt_template,), device)  # (110, D)
    model = build_prompted_clip(bundle.model, text, saved).to(device)
    model.keep_frozen_in(frozen_dtype(cfg.precision, device))
    model.load_prompt(prompt, cfg.resume)
    results = {}
    for name, dataset in parts.items():
        torch.manual_seed(cfg.seed)
        limited = batches(dataset, cfg.batch_size, device, num_workers=cfg.num_workers, limit=cfg.max_batches)
        with autocast(cfg.precision, device):
            results[name] = evaluate(model, limited, device)
        run.log(0, name, results[name])
    results["total"] = weighted_total({k: results[k] for k in parts})
    run.log(0, "total", results["total"])
    return run.finish(results=results, num_classes=len(classes), trained_on=saved.get("dataset"),
                      prompt={k: saved.get(k) for k in PROMPT_FIELDS}, checkpoint=str(cfg.resume),
                      synthetic=cfg.synthetic_data, preprocess="pil" if batch is None else "batch",
                      params=count_parameters(model), clip=bundle.summary(), device=str(device))


def smoke_prompt(run: Run) -> str:
    """Train the clip-prompt smoke configuration (tiny random CLIP, fake CIFAR-10) inside this run folder."""
    print("[clip-cross-dataset] no --resume: training a smoke prompt on synthetic data first", flush=True)
    summary = execute("clip-prompt", [], smoke=True,
                      overrides={"visualize_prompt": False, "test_noise": False}, out_dir=run.path("smoke_prompt"),
                      quiet=True)
    return summary["checkpoint"]
