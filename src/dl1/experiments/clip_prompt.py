"""Visual prompts and deep prompts for frozen CLIP (A2 Q2.2-Q2.4): train, keep the best, evaluate clean and noisy.

The course's recipe (SGD lr 40, momentum 0.9, batch 128, 1000 warm-up steps then a per-step cosine) on a seeded
40,000/10,000 split; only the prompt trains.  ``last.pt`` every epoch, ``best.pt`` on a better validation top-1 (the
prompt alone); validation and test top-1 (%, sample-weighted) of the *best* prompt go to ``summary.json``.
``--evaluate --resume CKPT [--test_noise]`` scores a saved prompt on the test set, clean and with N(0, 0.1) noise after
preprocessing, with the prompt, CLIP and data (dataset, real or synthetic files, text template) of the checkpoint; a
flag contradicting them is refused unless ``--transfer`` asks for another dataset or template on purpose.  The
prompt's limits come from the architecture's name and are checked before anything is loaded.

``--precision bf16|fp16`` runs the forward passes under autocast and keeps the frozen CLIP in that dtype on a GPU (the
prompt, its gradient, the logits and the loss stay float32).  Under ``torchrun --nproc_per_node N -m dl1 run
clip-prompt ...`` it trains data parallel: each rank takes ``--batch_size / N`` images of every global batch (only the
prompt's gradient is averaged; the frozen CLIP is never sent) and scores its part of the validation split; the
evaluations after training (best prompt on val, test, noisy test) run whole on every rank; rank 0 writes the run
folder.  ``--evaluate`` is one process (refused under torchrun).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dl1.config import arg, config_to_dict, precision_arg
from dl1.data.fashion_clip import DATASETS as FASHION_DATASETS
from dl1.errors import UsageError
from dl1.hub.clip import (
    DATA_FIELDS,
    GPU_PRECISION_NOTE,
    MAX_IMAGE_SIZE,
    MAX_PROMPT_TOKENS,
    MINI_ARCH,
    PROMPT_FIELDS,
    TINY_ARCH,
    TINY_PATCH,
    WEIGHTS_HELP,
    clip_choice,
    input_size,
)
from dl1.runtime import Run, checkpoint_file, choose_device, seed_everything, world_size


@dataclass(frozen=True)
class Config:
    prompt_type: str = arg("visual_prompt", "What is learnt: a pixel-space visual prompt or deep prompt tokens.",
                           choices=PROMPT_FIELDS["prompt_type"])
    method: str = arg("padding", "Visual prompt shape (visual_prompt only).", choices=PROMPT_FIELDS["method"])
    prompt_size: int = arg(30, "Pad width (padding, at most half the image) or patch side (fixed_patch, random_patch) "
                               "in pixels.", min=1, max=MAX_IMAGE_SIZE)
    image_size: int | None = arg(None, "Input size of CLIP's image tower (default: 224, ViT-B/32's; with --arch "
                                       "mini the mini-CLIP's own, 28; the tiny test model takes any).",
                                 min=TINY_PATCH, max=MAX_IMAGE_SIZE)
    prompt_init_method: str = arg("random", "Initial prompt values: random = N(0, 1), zeros = the identity prompt.",
                                  choices=PROMPT_FIELDS["prompt_init_method"])
    prompt_num: int = arg(4, "Number of deep prompt tokens (deep_prompt only).", min=1, max=MAX_PROMPT_TOKENS)
    injection_layer: int = arg(0, "Residual block before which the deep prompts are appended (0-based; deep_prompt "
                                  "only; must be below the number of blocks, 12 for ViT-B/32).", min=0, max=127)
    arch: str = arg("ViT-B/32", f"CLIP architecture (course or open_clip name); '{MINI_ARCH}' = dl1's mini-CLIP "
                                f"(dl1 run mini-clip; --clip_weights RUN, default the newest run); '{TINY_ARCH}' is a "
                                "tiny RANDOM model for smoke runs.")
    pretrained: str = arg("openai", "open_clip weights tag (ignored with --clip_weights).")
    clip_weights: str | None = arg(None, WEIGHTS_HELP)
    dataset: str | None = arg(None, "Dataset the prompt is learnt on (default: cifar100; cifar10 with "
                                    "--synthetic_data, the smoke size). With --evaluate: the checkpoint's.",
                              choices=("cifar10", "cifar100", *FASHION_DATASETS))
    data_dir: str | None = arg(None, "Folder holding cifar-10-batches-py/, cifar-100-python/ or FashionMNIST/raw/ "
                                     "(default: $DL1_DATA, else ./data).")
    synthetic_data: bool | None = arg(None, "Smoke runs only: write tiny random CIFAR files (real format) into the "
                                            "run folder and use them instead of --data_dir (default: no; with "
                                            "--evaluate: as the checkpoint was trained).")
    preprocess: str = arg("auto", "Where CLIP's resize/crop/normalise runs: pil = per image in DataLoader workers, "
                                  "batch = on the model's device from the raw uint8 images (same numbers), auto = "
                                  "batch on CUDA, else pil.", choices=("auto", "pil", "batch"))
    text_prompt_template: str | None = arg(None, f"Text template of the class prompts (default: "
                                                 f"{DATA_FIELDS['text_prompt_template']!r}; with --evaluate: the "
                                                 f"checkpoint's).")
    val_size: int = arg(10_000, "Training images held out (seeded) for validation: 40,000/10,000 on CIFAR.", min=1,
                        max=1_000_000)
    batch_size: int = arg(128, "Mini-batch size (training and evaluation), the global batch under torchrun (each "
                               "of N ranks takes 1/N of it).", min=1, max=4096)
    num_workers: int = arg(4, "DataLoader worker processes (resize to 224 px happens there).", min=0, max=64)
    epochs: int = arg(1000, "Maximum number of epochs (the reference runs used 40 with --patience 5).", min=1,
                      max=100_000)
    patience: int = arg(1000, "Stop after this many epochs without a better validation top-1.", min=1, max=100_000)
    learning_rate: float = arg(40.0, "Peak SGD learning rate.", min=0.0, min_inclusive=False, max=10_000.0)
    momentum: float = arg(0.9, "SGD momentum.", min=0.0, max=1.0)
    weight_decay: float = arg(0.0, "SGD weight decay.", min=0.0, max=1.0)
    warmup: int = arg(1000, "Linear warm-up steps before the per-step cosine decay.", min=0, max=10_000_000)
    max_batches: int = arg(0, "Use at most this many batches per epoch and per evaluation (0 = all; for quick "
                              "checks: the accuracies then cover only those batches).", min=0, max=10**9)
    test_noise: bool = arg(False, "Also evaluate the test set with N(0, 0.1) noise added after preprocessing.")
    visualize_prompt: bool = arg(False, "Save the prompt before and after training as PNG figures.")
    evaluate: bool = arg(False, "Only evaluate the checkpoint given by --resume on the test set.")
    resume: str | None = arg(None, "Training: run folder or checkpoint to continue from. With --evaluate: the "
                                   "checkpoint file to evaluate (e.g. RUN/checkpoints/best.pt).")
    transfer: bool = arg(False, "With --evaluate: score the prompt on purpose with another --dataset or "
                                "--text_prompt_template than it was trained with (reported as a transfer).")
    seed: int = arg(0, "Random seed (prompt init, validation split, shuffling, random patch locations).", min=0,
                    max=2**32 - 1)
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps.")
    precision: str = precision_arg(note=GPU_PRECISION_NOTE)
    threads: int = arg(0, "torch CPU threads (0 = torch's default).", min=0, max=1024)

    def __post_init__(self) -> None:  # training: the data defaults; --evaluate takes them from the checkpoint
        arch, weights = clip_choice(self.arch, self.clip_weights)  # a mini-clip run folder -> its weights file
        object.__setattr__(self, "arch", arch)
        object.__setattr__(self, "clip_weights", weights)
        if self.image_size is None:
            object.__setattr__(self, "image_size", input_size(arch, weights) if arch == MINI_ARCH else 224)
        if not self.evaluate:
            defaults = {**DATA_FIELDS, "dataset": "cifar10" if self.synthetic_data else DATA_FIELDS["dataset"]}
            for key, value in defaults.items():
                if getattr(self, key) is None:
                    object.__setattr__(self, key, value)

    def check(self) -> None:
        if self.transfer and not self.evaluate:
            raise UsageError("--transfer only applies to --evaluate (scoring a saved prompt on other data)")
        if self.text_prompt_template is not None and self.text_prompt_template.count("{}") != 1:
            raise UsageError(f"--text_prompt_template must contain '{{}}' exactly once, got "
                             f"{self.text_prompt_template!r}")
        if self.evaluate and not self.resume:
            raise UsageError("--evaluate needs --resume CKPT (a checkpoint file such as RUN/checkpoints/best.pt)")
        if self.evaluate and Path(self.resume).is_dir():
            raise UsageError(f"--evaluate --resume needs a checkpoint file, not a run folder: use "
                             f"{Path(self.resume) / 'checkpoints' / 'best.pt'}")
        if self.arch == TINY_ARCH and self.clip_weights:
            raise UsageError(f"--arch {TINY_ARCH} is a random test model; it takes no --clip_weights")


GLOBAL_BATCH = ("batch_size",)  # data parallel under torchrun
SMOKE = {"arch": TINY_ARCH, "image_size": 64, "synthetic_data": True, "prompt_size": 8,
         "val_size": 16, "batch_size": 16, "num_workers": 0, "epochs": 2, "warmup": 2, "learning_rate": 1.0,
         "visualize_prompt": True, "test_noise": True}


def preflight(cfg: Config) -> None:
    """The prompt's limits for ``--arch`` (from its name and config file; no model is built, open_clip not imported),
    then a ``--precision`` the device cannot run (torch is imported for that only when it is not fp32).  With
    ``--evaluate`` the prompt comes from the checkpoint, which is checked when it is read."""
    from dl1.hub.clip import check_prompt

    if cfg.evaluate and world_size() > 1:
        raise UsageError("--evaluate scores a checkpoint in one process: start it without torchrun")
    if cfg.dataset in FASHION_DATASETS and not cfg.synthetic_data:  # the plain name is checked by every experiment
        from dl1.data import vision

        vision.prepare("fashion-mnist", cfg.data_dir)
    if not cfg.evaluate:
        check_prompt(cfg.arch, cfg.image_size, cfg.prompt_type, cfg.method, cfg.prompt_size, cfg.injection_layer,
                     cfg.clip_weights)


def run(cfg: Config, run: Run) -> dict[str, Any]:
    import torch

    from dl1.report.clip_prompt import data_info, describe, model_info, save_initial_prompt

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = choose_device(cfg.device)
    if cfg.evaluate:
        return evaluate_checkpoint(cfg, run, device)
    if cfg.resume:
        from dl1.hub.clip import check_resume

        check_resume(cfg, checkpoint_file(cfg.resume, prefer="last"), device)
    bundle = load_bundle(cfg, device)
    data = load_data(cfg, bundle, run, device)
    model = build_model(cfg, bundle, data["classes"], device)
    print(describe(model, cfg, data, device), flush=True)
    save_initial_prompt(model, run)
    trainer, fit = train(cfg, run, model, data, device)
    with trainer.autocast():  # the best prompt, in the precision it trained and validated in
        results = measure(cfg, run, model, data, device, ("val", "test", "test_noisy"), fit["steps"], prefix="best_")
    if cfg.visualize_prompt and run.enabled:
        make_figures(run.dir)
    return run.finish(results=results, best_epoch=fit["best_epoch"], epochs_run=fit["epochs_run"],
                      steps=fit["steps"], stopped_early=fit["stopped_early"], **model_info(model, bundle),
                      data=data_info(cfg, data), device=str(device), threads=torch.get_num_threads(),
                      train_time_s=round(fit["train_time_s"], 2), checkpoint=str(run.checkpoints / "best.pt"))


def load_bundle(cfg: Config, device):
    """The CLIP named by ``--arch`` (``tiny-test``: a tiny random model, labelled so in the summary)."""
    from dl1.hub.clip import get_clip

    return get_clip(cfg.arch, pretrained=cfg.pretrained, weights=cfg.clip_weights, image_size=cfg.image_size,
                    device=device)


def load_data(cfg: Config, bundle, run: Run, device) -> dict[str, Any]:
    """The splits (train/val unless ``--evaluate``; test; test_noisy with ``--test_noise``) and the class names."""
    from dl1.data.clip import cifar_folder, prompt_splits

    synthetic = run.synthetic_dir() if cfg.synthetic_data else None
    folder = cifar_folder(cfg.data_dir, synthetic, [cfg.dataset], n_train=48, n_test=24, seed=cfg.seed)
    return prompt_splits(cfg.dataset, folder, bundle.preprocess, device, cfg.preprocess, val_size=cfg.val_size,
                         seed=cfg.seed, train=not cfg.evaluate, test_noise=cfg.test_noise)


def build_model(cfg: Config, bundle, classes: list[str], device):
    """``VisualPromptCLIP`` or ``DeepPromptCLIP`` on the frozen CLIP, with the text classifier of ``classes``
    (computed in float32); the CLIP is then kept in the dtype fastest for ``--precision`` on ``device``."""
    from dl1.models.clip import text_features
    from dl1.models.prompt_clip import build_prompted_clip
    from dl1.train.precision import frozen_dtype

    text = text_features(bundle.model, bundle.tokenizer, classes, (cfg.text_prompt_template,), device)  # (C, D)
    try:
        model = build_prompted_clip(bundle.model, text, config_to_dict(cfg)).to(device)
    except ValueError as exc:  # a prompt this model cannot take (checked before, from the architecture's name)
        raise UsageError(str(exc)) from None
    return model.keep_frozen_in(frozen_dtype(cfg.precision, device))


def make_optimizer(cfg: Config, model, steps_per_epoch: int):
    """SGD on the prompt only, with the per-step warm-up + cosine schedule over ``epochs * steps_per_epoch``."""
    import torch

    from dl1.train import warmup_cosine

    params = [p for _, p in model.trainable_parameters()]
    optimizer = torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return optimizer, warmup_cosine(optimizer, cfg.warmup, cfg.epochs * steps_per_epoch)


def train(cfg: Config, run: Run, model, data: dict[str, Any], device):
    """The Trainer loop: shuffled training batches (this rank's share of each global batch under torchrun),
    validation top-1 monitored, per-step schedule, checkpoints.  Returns the trainer (best prompt loaded) and the
    fit's result."""
    import torch

    from dl1.data.clip import batches
    from dl1.train import Trainer, distributed

    info, per_rank = distributed.current(), distributed.local_batch(cfg.batch_size)
    n_batches = -(-len(data["train"]) // cfg.batch_size)  # one process's steps per epoch with the global batch
    optimizer, scheduler = make_optimizer(cfg, model, min(n_batches, cfg.max_batches or n_batches))
    trainer = Trainer(run, {"prompt": model.prompt_learner}, {"prompt": optimizer}, epochs=cfg.epochs,
                      monitor="val/top1", mode="max", schedulers={"prompt": scheduler}, patience=cfg.patience,
                      device=device, precision=cfg.precision, desc="clip-prompt", max_batches=cfg.max_batches,
                      extra_state=lambda: {"config": config_to_dict(cfg), "classes": list(data["classes"])})
    criterion = torch.nn.CrossEntropyLoss()
    net = trainer.wrap(model)  # data parallel: DDP averages the prompt's gradients; the frozen CLIP is not synced

    def train_step(batch) -> dict[str, Any]:  # under the engine's autocast
        images, targets = (t.to(device, non_blocking=True) for t in batch)
        logits = net(images)  # (b, C) float32
        loss = criterion(logits, targets)
        trainer.backward_step(loss)
        return {"loss": loss.detach(), "top1": 100.0 * (logits.argmax(-1) == targets).float().mean()}

    def train_batches(epoch: int):
        model.train()  # the prompt only: the CLIP stays in eval mode
        return batches(data["train"], per_rank, device, shuffle=True, seed=cfg.seed, epoch=epoch,
                       num_workers=cfg.num_workers, rank=info.rank, world_size=info.world_size)

    def validate(epoch: int) -> dict[str, dict[str, Any]]:  # this rank's part; the engine weights the parts by n
        return {"val": score(cfg, model, data["val"], device, shard=True)}

    fit = trainer.fit(train_batches, train_step, validate, resume=cfg.resume)
    trainer.load_best()
    return trainer, fit


def score(cfg: Config, model, split, device, shard: bool = False) -> dict[str, float]:
    """Loss, top-1 and ``n`` of ``model`` on one split (its first ``--max_batches`` batches when that is set), in the
    caller's precision.  With ``shard`` under torchrun, this rank's part (every N-th image, batches of
    ``--batch_size / N``: the ranks' parts of a batch are one process's batch)."""
    from dl1.data.clip import batches, eval_shard
    from dl1.models.prompt_clip import evaluate
    from dl1.train import distributed

    info = distributed.current() if shard else distributed.DistInfo()
    part, size = eval_shard(split, info.rank, info.world_size), cfg.batch_size // info.world_size
    split_batches = batches(part, size, device, num_workers=cfg.num_workers, limit=cfg.max_batches)
    result = evaluate(model, split_batches, device, allow_empty=info.enabled)
    mine, rank0 = (min(-(-n // size), cfg.max_batches or n) for n in (len(part), -(-len(split) // info.world_size)))
    model.skip_draws(rank0 - mine)  # a random patch is drawn per batch: every rank's draws stay rank 0's
    return result


def measure(cfg: Config, run: Run, model, data: dict[str, Any], device, splits: tuple[str, ...], step: int,
            prefix: str = "") -> dict[str, Any]:
    """:func:`score` on each of ``splits`` that ``data`` has, logged as ``prefix + split``; the noise of
    ``test_noisy`` is seeded by ``--seed`` (the same noise every time)."""
    import torch

    results = {}
    for split in (s for s in splits if s in data):
        torch.manual_seed(cfg.seed)
        results[split] = score(cfg, model, data[split], device)
        run.log(step, prefix + split, results[split])
    return results


# Flags an evaluation never uses: left out of its config.json, which records what the evaluation used.
TRAINING_ONLY = ("val_size", "epochs", "patience", "learning_rate", "momentum", "weight_decay", "warmup",
                 "visualize_prompt")


def evaluate_checkpoint(cfg: Config, run: Run, device) -> dict[str, Any]:
    """``--evaluate``: test top-1 of a saved prompt, clean and (with ``--test_noise``) noisy, on the data the
    checkpoint was trained on (or, with ``--transfer``, on the data asked for)."""
    from dl1.hub.clip import checkpoint_config, read_prompt_checkpoint
    from dl1.report.clip_prompt import data_info, model_info
    from dl1.train.precision import autocast

    prompt, saved = read_prompt_checkpoint(cfg.resume, device)
    cfg, transfer = checkpoint_config(cfg, saved, cfg.resume)
    used = {k: v for k, v in config_to_dict(cfg).items() if k not in TRAINING_ONLY}
    run.save_json("config.json", {"experiment": run.experiment, **used})
    bundle = load_bundle(cfg, device)
    data = load_data(cfg, bundle, run, device)
    model = build_model(cfg, bundle, data["classes"], device)
    model.load_prompt(prompt, cfg.resume)
    with autocast(cfg.precision, device):  # this evaluation's --precision (not the training run's)
        results = measure(cfg, run, model, data, device, ("test", "test_noisy"), 0)
    if "test_noisy" in results:
        results["noise_drop"] = results["test"]["top1"] - results["test_noisy"]["top1"]
    return run.finish(results=results, checkpoint=str(cfg.resume), trained_on=saved.get("dataset"),
                      **({"transfer": transfer} if transfer else {}), **model_info(model, bundle),
                      data=data_info(cfg, data), device=str(device))


def make_figures(run_dir: Path) -> list[Path]:
    """The prompt before/after training and the training curves, from the run folder alone."""
    from dl1.report.clip_prompt import make_figures as build_figures

    return build_figures(run_dir)
