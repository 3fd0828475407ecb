"""Mini-CLIP on Fashion-MNIST: train a small CLIP offline, then zero-shot and prompts on a domain-shifted copy (A2 Q2).

``dl1 run mini-clip`` trains dl1's mini-CLIP (open_clip's own ``CLIP`` class with a small model config: a ViT on
28 x 28 images in 7 px patches and a small text transformer, open_clip's BPE tokenizer) with CLIP's contrastive loss
on the Fashion-MNIST training images paired with captions (10 templates x the class names, one drawn per image and
epoch), keeping the weights with the best zero-shot top-1 on a held-out validation split.  It writes them as
``mini_clip.safetensors`` with the model config ``mini_clip.json`` beside them: ``--arch mini --clip_weights RUN``
then works in clip-zeroshot, clip-prompt and clip-cross-dataset like any CLIP.

Then it runs the course's pipeline on it with those experiments themselves (sub-runs in ``RUN/runs/``): zero-shot on
the original and on the shifted test set (``--shift``: colour-inverted by default), clean and with N(0, 0.1) noise;
and every prompt of ``--prompts`` (visual prompts: padding, fixed patch, random patch; deep prompts) learnt on the
shifted training split and scored on the shifted test split, clean and noisy.  ``report.md`` and the figures put the
numbers in one table and one figure with the robustness table.  These are Fashion-MNIST numbers of a model trained
here in minutes, not the course's CIFAR numbers with OpenAI's ViT-B/32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dl1.config import arg, config_to_dict, precision_arg
from dl1.data.fashion_clip import SHIFTS
from dl1.errors import UsageError
from dl1.runtime import Run, choose_device, seed_everything

PROMPT_METHODS = ("padding", "fixed_patch", "random_patch", "deep_prompt")
# the course's prompts scaled to 28 px (padding 30 of 224 px -> 4 of 28; the 1 px patches; the whole-image patch) and
# deep prompts of 4 tokens before each of the 4 blocks
DEFAULT_PROMPTS = ("padding:4", "fixed_patch:1", "random_patch:1", "fixed_patch:28", "deep_prompt:0",
                   "deep_prompt:1", "deep_prompt:2", "deep_prompt:3")
IMAGE_SIZE = 28  # Fashion-MNIST's images, fed at their own size
MODEL_FIELDS = ("patch_size", "width", "layers", "text_width", "text_layers", "embed_dim")
TRAINING_FIELDS = (*MODEL_FIELDS, "epochs", "batch_size", "learning_rate", "weight_decay", "warmup", "val_size",
                   "train_size", "max_batches", "seed", "synthetic_data", "data_dir", "precision")


@dataclass(frozen=True)
class Config:
    shift: str = arg("inverted", "Domain shift of the test (and prompt-training) images: inverted = 255 - pixel, "
                                 "rot90 = turned by 90 degrees.", choices=SHIFTS)
    data_dir: str | None = arg(None, "Folder with FashionMNIST/raw/ (default: $DL1_DATA, else ./data; Debian's "
                                     "/usr/share/datasets/fashion-mnist is found too).")
    synthetic_data: bool = arg(False, "Smoke runs only: tiny random Fashion-MNIST files (real format) in the run "
                                      "folder instead of the dataset.")
    val_size: int = arg(5000, "Training images held out (seeded) for validation; the prompts use the same split.",
                        min=1, max=59_999)
    train_size: int = arg(0, "Training images used (0 = all the others).", min=0, max=60_000)
    patch_size: int = arg(7, "Patch side of the image tower (28 / patch_size patches per side).", choices=(2, 4, 7, 14),
                          min=2, max=14)
    width: int = arg(64, "Width of the image transformer (a multiple of 32: heads of width 32; or below 32: one "
                         "head).", min=8, max=512)
    layers: int = arg(4, "Residual blocks of the image transformer.", min=1, max=12)
    text_width: int = arg(64, "Width of the text transformer (a multiple of 32, or below 32).", min=8, max=512)
    text_layers: int = arg(2, "Residual blocks of the text transformer.", min=1, max=12)
    embed_dim: int = arg(64, "Dimension of the joint image-text embedding.", min=8, max=512)
    epochs: int = arg(3, "Training epochs of the mini-CLIP.", min=1, max=1000)
    batch_size: int = arg(256, "Image-caption pairs per contrastive batch.", min=2, max=8192)
    learning_rate: float = arg(3e-3, "Peak AdamW learning rate.", min=0.0, min_inclusive=False, max=1.0)
    weight_decay: float = arg(0.1, "AdamW weight decay (matrices only).", min=0.0, max=1.0)
    warmup: int = arg(50, "Linear warm-up steps before the cosine decay.", min=0, max=10**7)
    max_batches: int = arg(0, "Training batches per epoch (0 = all).", min=0, max=10**9)
    prompts: tuple[str, ...] = arg(DEFAULT_PROMPTS, "Prompts learnt on the shifted data, each METHOD:SIZE (padding "
                                                    "width, patch side) or deep_prompt:LAYER (4 tokens before that "
                                                    "block); 'none' = no prompts.")
    prompt_epochs: int = arg(2, "Epochs of each prompt's training (clip-prompt --epochs).", min=1, max=1000)
    prompt_batches: int = arg(100, "Batches per prompt epoch and per evaluation (clip-prompt --max_batches; "
                                   "0 = all).", min=0, max=10**9)
    prompt_batch_size: int = arg(128, "Batch size of the prompts (the course's 128).", min=1, max=4096)
    prompt_learning_rate: float = arg(40.0, "Peak SGD learning rate of the prompts (the course's 40).", min=0.0,
                                      min_inclusive=False, max=10_000.0)
    prompt_warmup: int = arg(20, "Warm-up steps of the prompts' schedule.", min=0, max=10**7)
    test_noise: bool = arg(True, "Also score every model on the test set with N(0, 0.1) noise after preprocessing.")
    cache_dir: str | None = arg(None, "Keep the trained mini-CLIP in this folder, named after its training "
                                      "settings, and reuse it when the same settings come again.")
    seed: int = arg(0, "Random seed (weights, split, captions, shuffling, prompts).", min=0, max=2**32 - 1)
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, ...")
    precision: str = precision_arg()
    threads: int = arg(0, "torch CPU threads (0 = torch's default).", min=0, max=1024)

    def check(self) -> None:
        for width, flag in ((self.width, "--width"), (self.text_width, "--text_width")):
            if width > 32 and width % 32:
                raise UsageError(f"{flag} {width}: above 32 it must be a multiple of 32 (heads of width 32)")
        if self.train_size and self.train_size + self.val_size > 60_000:
            raise UsageError(f"--train_size {self.train_size} + --val_size {self.val_size} exceed the 60,000 "
                             f"training images")
        prompt_specs(self)


SMOKE = {"synthetic_data": True, "val_size": 8, "width": 16, "layers": 1, "text_width": 16, "text_layers": 1,
         "embed_dim": 16, "epochs": 1, "batch_size": 16, "warmup": 1, "prompts": ("padding:2", "deep_prompt:0"),
         "prompt_epochs": 1, "prompt_batches": 2, "prompt_batch_size": 8, "prompt_warmup": 1}
SYNTHETIC_SIZES = {"n_train": 64, "n_test": 24}


def prompt_specs(cfg: Config) -> list[tuple[str, int]]:
    """``--prompts`` as ``(method, size or layer)`` pairs, checked against the mini-CLIP's limits."""
    from dl1.hub.clip import MINI_ARCH, check_prompt_limits

    if cfg.prompts == ("none",):
        return []
    specs = []
    for spec in cfg.prompts:
        method, _, value = spec.partition(":")
        if method not in PROMPT_METHODS or not value.isdigit():
            raise UsageError(f"--prompts {spec!r}: give METHOD:SIZE with a method of {', '.join(PROMPT_METHODS)} "
                             f"(deep_prompt:LAYER), or 'none' alone")
        specs.append((method, int(value)))
        deep = method == "deep_prompt"
        try:
            check_prompt_limits(MINI_ARCH, IMAGE_SIZE, cfg.layers, "deep_prompt" if deep else "visual_prompt",
                                "padding" if deep else method, 1 if deep else int(value), int(value) if deep else 0)
        except UsageError as exc:
            raise UsageError(f"--prompts {spec}: {exc}") from None
    if len(set(specs)) != len(specs):
        raise UsageError("--prompts: each prompt once")
    return specs


def preflight(cfg: Config) -> None:
    """The dataset is there (before torch is imported); the prompts fit (checked with the flags)."""
    if not cfg.synthetic_data:
        from dl1.data import vision

        vision.prepare("fashion-mnist", cfg.data_dir)


def run(cfg: Config, run: Run) -> dict[str, Any]:
    import torch

    from dl1.hub.clip import cached_mini_clip, store_mini_clip

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = choose_device(cfg.device)
    folder = cfg.data_dir
    if cfg.synthetic_data:
        from dl1.data.fake import write_idx

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
    from dl1.report.mini_clip import make_report, pipeline_numbers

    numbers = pipeline_numbers(run.dir)
    summary = run.finish(weights=str(weights), shift=cfg.shift, training=training, **numbers,
                         device=str(device), threads=torch.get_num_threads())
    make_report(run.dir)
    return summary


def train(cfg: Config, run: Run, folder: str | None, device) -> tuple[Path, dict[str, Any]]:
    """Contrastive training with the Trainer; the best epoch (validation zero-shot top-1) is saved as the run's
    mini-CLIP (safetensors + model config)."""
    from dl1.data.fashion_clip import CLASSES, FashionBatches, caption_table, training_arrays
    from dl1.hub.clip import save_mini_clip
    from dl1.models import clip as mc
    from dl1.models.clip_templates import COURSE_TEMPLATE, FASHION_TEMPLATES
    from dl1.train import Trainer, warmup_cosine

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
    from dl1.experiments import execute

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


def make_figures(run_dir: Path) -> list[Path]:
    """The report (tables), the prompt figure and the training curve, from the run folder alone."""
    from dl1.report.mini_clip import make_report

    return make_report(run_dir)
