"""The runner of ``dl1 run clip-prompt`` (see :mod:`dl1.experiments.clip_prompt` for the flags): learn a visual or
deep prompt for a frozen CLIP, evaluate it clean and noisy, or ``--evaluate`` a saved one; and its export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dl1.config import config_to_dict
from dl1.data.clip import batches, cifar_folder, eval_shard, prompt_splits
from dl1.errors import UsageError
from dl1.experiments.clip_prompt import Config
from dl1.experiments.clip_prompt_checkpoint import check_resume, checkpoint_config, read_prompt_checkpoint
from dl1.export_format import Exported
from dl1.hub.clip import get_clip
from dl1.models import prompt_clip
from dl1.models.clip import text_features
from dl1.report.clip_prompt import data_info, describe, make_figures, model_info, save_initial_prompt
from dl1.run.device import choose_device, seed_everything
from dl1.run.folder import Run
from dl1.run.reader import checkpoint_file
from dl1.train import Trainer, distributed, warmup_cosine
from dl1.train.precision import autocast, frozen_dtype


def run(cfg: Config, run: Run) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = run.device = choose_device(cfg.device)
    if cfg.evaluate:
        return evaluate_checkpoint(cfg, run, device)
    if cfg.resume:
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
    return get_clip(cfg.arch, pretrained=cfg.pretrained, weights=cfg.clip_weights, image_size=cfg.image_size,
                    device=device)


def load_data(cfg: Config, bundle, run: Run, device) -> dict[str, Any]:
    """The splits (train/val unless ``--evaluate``; test; test_noisy with ``--test_noise``) and the class names."""
    synthetic = run.synthetic_dir() if cfg.synthetic_data else None
    folder = cifar_folder(cfg.data_dir, synthetic, [cfg.dataset], n_train=48, n_test=24, seed=cfg.seed)
    return prompt_splits(cfg.dataset, folder, bundle.preprocess, device, cfg.preprocess, val_size=cfg.val_size,
                         seed=cfg.seed, train=not cfg.evaluate, test_noise=cfg.test_noise)


def build_model(cfg: Config, bundle, classes: list[str], device):
    """``VisualPromptCLIP`` or ``DeepPromptCLIP`` on the frozen CLIP, with the text classifier of ``classes``
    (computed in float32); the CLIP is then kept in the dtype fastest for ``--precision`` on ``device``."""
    text = text_features(bundle.model, bundle.tokenizer, classes, (cfg.text_prompt_template,), device)  # (C, D)
    try:
        model = prompt_clip.build_prompted_clip(bundle.model, text, config_to_dict(cfg)).to(device)
    except ValueError as exc:  # a prompt this model cannot take (checked before, from the architecture's name)
        raise UsageError(str(exc)) from None
    return model.keep_frozen_in(frozen_dtype(cfg.precision, device))


def make_optimizer(cfg: Config, model, steps_per_epoch: int):
    """SGD on the prompt only, with the per-step warm-up + cosine schedule over ``epochs * steps_per_epoch``."""
    params = [p for _, p in model.trainable_parameters()]
    optimizer = torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return optimizer, warmup_cosine(optimizer, cfg.warmup, cfg.epochs * steps_per_epoch)


def train(cfg: Config, run: Run, model, data: dict[str, Any], device):
    """The Trainer loop: shuffled training batches (this rank's share of each global batch under torchrun),
    validation top-1 monitored, per-step schedule, checkpoints.  Returns the trainer (best prompt loaded) and the
    fit's result."""
    info, per_rank = distributed.current(), distributed.local_batch(cfg.batch_size)
    n_batches = -(-len(data["train"]) // cfg.batch_size)  # one process's steps per epoch with the global batch
    optimizer, scheduler = make_optimizer(cfg, model, min(n_batches, cfg.max_batches or n_batches))
    trainer = Trainer(run, {"prompt": model.prompt_learner}, {"prompt": optimizer}, epochs=cfg.epochs,
                      monitor="val/top1", mode="max", schedulers={"prompt": scheduler}, patience=cfg.patience,
                      device=device, precision=cfg.precision,
                      compile=cfg.compile, desc="clip-prompt", max_batches=cfg.max_batches,
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
    info = distributed.current() if shard else distributed.DistInfo()
    part, size = eval_shard(split, info.rank, info.world_size), cfg.batch_size // info.world_size
    split_batches = batches(part, size, device, num_workers=cfg.num_workers, limit=cfg.max_batches)
    result = prompt_clip.evaluate(model, split_batches, device, allow_empty=info.enabled)
    mine, rank0 = (min(-(-n // size), cfg.max_batches or n) for n in (len(part), -(-len(split) // info.world_size)))
    model.skip_draws(rank0 - mine)  # a random patch is drawn per batch: every rank's draws stay rank 0's
    return result


def measure(cfg: Config, run: Run, model, data: dict[str, Any], device, splits: tuple[str, ...], step: int,
            prefix: str = "") -> dict[str, Any]:
    """:func:`score` on each of ``splits`` that ``data`` has, logged as ``prefix + split``; the noise of
    ``test_noisy`` is seeded by ``--seed`` (the same noise every time)."""
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


def export(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    """The learnt prompt of a run (the CLIP it was trained with is the weights file it was given, unchanged)."""
    path = checkpoint_file(run_dir, prefer=prefer)
    prompt, saved = read_prompt_checkpoint(path)
    clip = {k: saved.get(k) for k in ("arch", "pretrained", "clip_weights", "dataset", "text_prompt_template")}
    if saved["prompt_type"] == "deep_prompt":
        width = int(prompt["deep_prompt"].shape[-1])
        kwargs = {"prompt_num": saved["prompt_num"], "width": width}
        return Exported(prompt, "dl1.models.prompt_clip.DeepPrompt", kwargs,
                        {"injection_layer": saved["injection_layer"], "clip": clip}, {"file": str(path)})
    kwargs = {k: saved[k] for k in ("method", "prompt_size", "image_size", "seed")}
    return Exported(prompt, "dl1.models.prompters.build_prompter", kwargs, {"clip": clip}, {"file": str(path)})
