"""The runner of ``dl1 run mini-clip`` (flags and description: :mod:`dl1.experiments.mini_clip`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dl1.config import config_to_dict
from dl1.data.fake import write_idx
from dl1.data.fashion_clip import CLASSES, FashionBatches, caption_table, training_arrays
from dl1.errors import UsageError
from dl1.experiments import execute
from dl1.experiments.mini_clip import IMAGE_SIZE, SYNTHETIC_SIZES, TRAINING_FIELDS, Config, prompt_specs
from dl1.hub.clip import cached_mini_clip, save_mini_clip, store_mini_clip
from dl1.models import clip as mc
from dl1.models.clip_templates import COURSE_TEMPLATE, FASHION_TEMPLATES
from dl1.report.mini_clip import make_report, pipeline_numbers
from dl1.run.device import choose_device, seed_everything
from dl1.run.folder import Run
from dl1.train import Trainer, warmup_cosine


def run(cfg: Config, run: Run) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = run.device = choose_device(cfg.device)
    folder = cfg.data_dir
    if cfg.synthetic_data:
        folder = str(write_idx(run.path("synthetic_data"), "fashion-mnist", seed=cfg.seed, **SYNTHETIC_SIZES)
                     .parent.parent)
    settings = {k: getattr(cfg, k) for k in TRAINING_FIELDS}
    weights = cached_mini_clip(cfg.cache_dir, settings, run.dir) if cfg.cache_dir else None
    training: dict[str, Any] = {"cached": weights is not None}
    if weights is not None:
        say(run, f"reusing the mini-CLIP cached in {cfg.cache_dir} for these settings")
    else:
        weights, training = train(cfg, run, folder, device)
        if cfg.cache_dir:
            training["cache"] = str(store_mini_clip(cfg.cache_dir, settings, run.dir))
    pipeline(cfg, run, weights, device)
    numbers = pipeline_numbers(run.dir)
    summary = run.finish(weights=str(weights), shift=cfg.shift, training=training, **numbers,
                         device=str(device), threads=torch.get_num_threads())
    make_report(run.dir)
    return summary


def train(cfg: Config, run: Run, folder: str | None, device) -> tuple[Path, dict[str, Any]]:
    """Contrastive training with the Trainer; the best epoch (validation zero-shot top-1) is saved as the run's
    mini-CLIP (safetensors + model config)."""
    data = training_arrays(folder, cfg.val_size, cfg.seed, cfg.train_size)
    if cfg.batch_size > len(data["y_train"]):
        raise UsageError(f"--batch_size {cfg.batch_size} exceeds the {len(data['y_train'])} training images")
    model_cfg = mc.mini_clip_config(image_size=IMAGE_SIZE, patch_size=cfg.patch_size, width=cfg.width,
                                    layers=cfg.layers, text_width=cfg.text_width, text_layers=cfg.text_layers,
                                    embed_dim=cfg.embed_dim)
    bundle = mc.build_mini_clip(model_cfg, seed=cfg.seed)
    model = bundle.model.to(device)
    captions = bundle.tokenizer(caption_table(FASHION_TEMPLATES)).to(device)  # (templates x classes, L)
    optimizer = mc.contrastive_optimizer(model, cfg.learning_rate, cfg.weight_decay)

    def batches(split: str, epoch: int = 0, **kw):
        return FashionBatches(data[f"x_{split}"], data[f"y_{split}"], cfg.batch_size, mc.OPENAI_MEAN, mc.OPENAI_STD,
                              seed=cfg.seed, epoch=epoch, device=device, **kw)

    steps = min(len(batches("train", drop_last=True)), cfg.max_batches or 10**12)
    trainer = Trainer(run, {"clip": model}, {"clip": optimizer}, epochs=cfg.epochs, monitor="val/top1", mode="max",
                      schedulers={"clip": warmup_cosine(optimizer, cfg.warmup, cfg.epochs * steps)}, device=device,
                      desc="mini-clip", max_batches=cfg.max_batches, precision=cfg.precision,
                      extra_state=lambda: {"config": config_to_dict(cfg), "model": model_cfg})

    def train_step(batch) -> dict[str, Any]:
        images, _, which = batch
        loss = mc.caption_contrastive_loss(model, images, captions, which)
        trainer.backward_step(loss)
        return {"loss": loss.detach(), "temperature": mc.clamp_temperature(model)}

    def validate(epoch: int) -> dict[str, dict[str, Any]]:
        return {"val": mc.zeroshot_top1(model, bundle.tokenizer, batches("val"), CLASSES, (COURSE_TEMPLATE,), device)}

    fit = trainer.fit(lambda epoch: batches("train", epoch, shuffle=True, drop_last=True,
                                            n_templates=len(FASHION_TEMPLATES)), train_step, validate)
    trainer.load_best()
    config = {"model": model_cfg, "preprocess": {"mean": list(mc.OPENAI_MEAN), "std": list(mc.OPENAI_STD)},
              "classes": list(CLASSES), "templates": list(FASHION_TEMPLATES),
              "trained_on": {"dataset": "fashion-mnist", "synthetic": cfg.synthetic_data,
                             "images": len(data["y_train"]), "val_top1": fit["best_value"],
                             "settings": {k: getattr(cfg, k) for k in TRAINING_FIELDS}}}
    weights = save_mini_clip(model, config, run.dir)
    params = {"image": sum(p.numel() for p in model.visual.parameters()),
              "total": sum(p.numel() for p in model.parameters())}
    return weights, {"cached": False, "best_epoch": fit["best_epoch"], "val_zeroshot_top1": fit["best_value"],
                     "epochs_run": fit["epochs_run"], "steps": fit["steps"], "train_time_s": fit["train_time_s"],
                     "train_cpu_s": fit["train_cpu_s"], "images": len(data["y_train"]), "params": params}


def pipeline(cfg: Config, run: Run, weights: Path, device) -> None:
    """The CLIP experiments on the mini-CLIP, each a sub-run in ``RUN/runs/``: zero-shot on the original and the
    shifted test set (clean, and noisy with ``--test_noise``), then every prompt of ``--prompts`` on the shifted
    data."""
    # batch preprocessing: the raw uint8 images normalised per batch, the same numbers as per-image PIL (28 px in,
    # 28 px out: no resampling) without 70,000 PIL calls per sub-run
    common = ["--arch", "mini", "--clip_weights", str(weights), "--device", cfg.device, "--preprocess", "batch"]
    prompt_common = [*common, "--precision", cfg.precision]
    common += ["--synthetic_data"] if cfg.synthetic_data else (["--data_dir", cfg.data_dir] if cfg.data_dir else [])
    shifted = f"fashion-mnist-{cfg.shift}"
    noise = (False, True) if cfg.test_noise else (False,)
    for name, dataset in (("original", "fashion-mnist"), ("shifted", shifted)):
        for noisy in noise:
            label = f"zeroshot-{name}" + ("-noisy" if noisy else "")
            say(run, f"{label}: clip-zeroshot on {dataset}")
            execute("clip-zeroshot", [*common, "--dataset", dataset, "--split", "test", "--batch_size", "500",
                                      "--num_workers", "0", *(["--test_noise"] if noisy else
                                                              ["--visualize_predictions"])],
                    run_dir=run.path(f"runs/{label}"), quiet=True)
    for method, value in prompt_specs(cfg):
        shape = ["--prompt_type", "deep_prompt", "--injection_layer", str(value)] if method == "deep_prompt" else \
            ["--method", method, "--prompt_size", str(value)]
        say(run, f"prompt-{method}-{value}: clip-prompt on {shifted}")
        execute("clip-prompt", [*prompt_common, "--dataset", shifted, *shape, "--epochs", str(cfg.prompt_epochs),
                                "--max_batches", str(cfg.prompt_batches), "--batch_size", str(cfg.prompt_batch_size),
                                "--learning_rate", str(cfg.prompt_learning_rate), "--warmup", str(cfg.prompt_warmup),
                                "--val_size", str(cfg.val_size), "--num_workers", "0", "--seed", str(cfg.seed),
                                *(["--test_noise"] if cfg.test_noise else [])],
                run_dir=run.path(f"runs/prompt-{method}-{value}"), quiet=True)


def say(run: Run, text: str) -> None:
    """One progress line (not for a quiet run)."""
    if not run.quiet:
        print(f"[mini-clip] {text}", flush=True)
