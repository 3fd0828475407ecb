"""Visual prompts and deep prompts for frozen CLIP (A2 Q2.2-Q2.4): train, keep the best, evaluate clean and noisy.

``dl1 run clip-prompt --prompt_type visual_prompt --method padding --dataset cifar100`` learns a padding prompt with the
course's recipe (SGD lr 40, momentum 0.9, no weight decay, batch 128, 1000 warm-up steps then a per-step cosine decay)
on a seeded 40,000/10,000 split of the training set; only the prompt trains.  Every epoch writes ``last.pt``, an
improvement of the validation top-1 writes ``best.pt`` (both hold the prompt alone, a few hundred KB at most), and the
validation and test accuracies of the *best* prompt go to ``summary.json``.  ``--prompt_type deep_prompt`` learns
``--prompt_num`` tokens injected before block ``--injection_layer``.  ``--evaluate --resume CKPT [--test_noise]`` only
evaluates a saved prompt on the test set, clean and (with ``--test_noise``) with N(0, 0.1) noise after preprocessing.
Accuracies are top-1 in percent, weighted by samples.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dl1.config import arg, config_to_dict
from dl1.errors import DL1Error, UsageError
from dl1.report import save_figure
from dl1.runtime import Run, choose_device, read_jsonl, seed_everything

if TYPE_CHECKING:  # torch is imported inside the functions: a missing dataset is reported before it loads
    import torch

TINY_ARCH = "tiny-test"  # a tiny RANDOM CLIP (dl1.models.clip.tiny_clip): smoke runs and tests only
# the prompt's structure: taken from the checkpoint when evaluating a saved prompt
PROMPT_FIELDS = ("prompt_type", "method", "prompt_size", "image_size", "prompt_init_method", "prompt_num",
                 "injection_layer", "arch", "pretrained", "seed")


@dataclass(frozen=True)
class Config:
    prompt_type: str = arg("visual_prompt", "What is learnt: a pixel-space visual prompt or deep prompt tokens.",
                           choices=("visual_prompt", "deep_prompt"))
    method: str = arg("padding", "Visual prompt shape (visual_prompt only).",
                      choices=("padding", "fixed_patch", "random_patch"))
    prompt_size: int = arg(30, "Pad width (padding) or patch side (fixed_patch, random_patch) in pixels.", min=1)
    image_size: int = arg(224, "Input size of CLIP's image tower (224 for ViT-B/32; 64 for the tiny test model).",
                          min=1)
    prompt_init_method: str = arg("random", "Initial prompt values: random = N(0, 1), zeros = the identity prompt.",
                                  choices=("random", "zeros"))
    prompt_num: int = arg(4, "Number of deep prompt tokens (deep_prompt only).", min=1)
    injection_layer: int = arg(0, "Residual block before which the deep prompts are appended (0-based; deep_prompt "
                                  "only; must be below the number of blocks, 12 for ViT-B/32).", min=0)
    arch: str = arg("ViT-B/32", f"CLIP architecture (course or open_clip name); '{TINY_ARCH}' is a tiny RANDOM "
                                "model for smoke runs.")
    pretrained: str = arg("openai", "open_clip weights tag (ignored with --clip_weights).")
    clip_weights: str | None = arg(None, "Local CLIP weights file (OpenAI .pt archive or open_clip state dict).")
    dataset: str = arg("cifar100", "Dataset the prompt is learnt on.", choices=("cifar10", "cifar100"))
    data_dir: str | None = arg(None, "Folder holding cifar-10-batches-py/ or cifar-100-python/ "
                                     "(default: $DL1_DATA, else ./data).")
    synthetic_data: bool = arg(False, "Smoke runs only: write tiny random CIFAR files (real format) into the run "
                                      "folder and use them instead of --data_dir.")
    preprocess: str = arg("auto", "Where CLIP's resize/crop/normalise runs: pil = per image in DataLoader workers, "
                                  "batch = on the model's device from the raw uint8 images (same numbers), auto = "
                                  "batch on CUDA, else pil.", choices=("auto", "pil", "batch"))
    text_prompt_template: str = arg("This is a photo of a {}", "Text template of the class prompts.")
    val_size: int = arg(10_000, "Training images held out (seeded) for validation: 40,000/10,000 on CIFAR.", min=1)
    batch_size: int = arg(128, "Mini-batch size.", min=1)
    num_workers: int = arg(4, "DataLoader worker processes (resize to 224 px happens there).", min=0)
    epochs: int = arg(1000, "Maximum number of epochs (the reference runs used 40 with --patience 5).", min=1)
    patience: int = arg(1000, "Stop after this many epochs without a better validation top-1.", min=1)
    learning_rate: float = arg(40.0, "Peak SGD learning rate.", min=0.0, min_inclusive=False)
    momentum: float = arg(0.9, "SGD momentum.", min=0.0, max=1.0)
    weight_decay: float = arg(0.0, "SGD weight decay.", min=0.0)
    warmup: int = arg(1000, "Linear warm-up steps before the per-step cosine decay.", min=0)
    max_batches: int = arg(0, "Use at most this many batches per epoch and per evaluation (0 = all; for quick "
                              "checks: the accuracies then cover only those batches).", min=0)
    test_noise: bool = arg(False, "Also evaluate the test set with N(0, 0.1) noise added after preprocessing.")
    visualize_prompt: bool = arg(False, "Save the prompt before and after training as PNG figures.")
    evaluate: bool = arg(False, "Only evaluate the checkpoint given by --resume on the test set.")
    resume: str | None = arg(None, "Training: run folder or checkpoint to continue from. With --evaluate: the "
                                   "checkpoint file to evaluate (e.g. RUN/checkpoints/best.pt).")
    seed: int = arg(0, "Random seed (prompt init, validation split, shuffling, random patch locations).")
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps.")
    amp: bool = arg(True, "float16 mixed precision on CUDA (no effect elsewhere).")
    threads: int = arg(0, "torch CPU threads (0 = torch's default).", min=0)

    def check(self) -> None:
        if self.evaluate and not self.resume:
            raise UsageError("--evaluate needs --resume CKPT (a checkpoint file such as RUN/checkpoints/best.pt)")
        if self.evaluate and Path(self.resume).is_dir():
            raise UsageError(f"--evaluate --resume needs a checkpoint file, not a run folder: use "
                             f"{Path(self.resume) / 'checkpoints' / 'best.pt'}")


SMOKE = {"arch": TINY_ARCH, "image_size": 64, "synthetic_data": True, "dataset": "cifar10", "prompt_size": 8,
         "val_size": 16, "batch_size": 16, "num_workers": 0, "epochs": 2, "warmup": 2, "learning_rate": 1.0,
         "visualize_prompt": True, "test_noise": True}


# ---------------------------------------------------------------------------------------------------------------------
# CLIP, data and model
# ---------------------------------------------------------------------------------------------------------------------

def load_bundle(cfg: Config, device: torch.device):
    """The CLIP bundle named by ``--arch`` (``tiny-test``: a tiny random model, labelled so in the summary)."""
    from dl1.models.clip import load_clip, tiny_clip

    if cfg.arch == TINY_ARCH:
        return tiny_clip(image_size=cfg.image_size, device=device)
    return load_clip(cfg.arch, pretrained=cfg.pretrained, weights=cfg.clip_weights, device=device)


def data_folder(cfg: Config, run: Run) -> str | None:
    """``--data_dir``, or with ``--synthetic_data`` a folder of tiny fake CIFAR files written into the run folder."""
    if not cfg.synthetic_data:
        return cfg.data_dir
    from dl1.data.fake import write_cifar

    folder = run.path("synthetic_data")
    write_cifar(folder, cfg.dataset, n_train=48, n_test=24, seed=cfg.seed)
    return str(folder)


@dataclass
class RawSplit:
    """Raw uint8 images ``(N, H, W, 3)`` and labels, preprocessed per batch on the device by ``prepare``."""

    images: torch.Tensor
    targets: torch.Tensor
    prepare: Any  # dl1.models.clip.BatchPreprocess

    def __len__(self) -> int:
        return len(self.targets)


def batch_preprocess(cfg: Config, preprocess, device: torch.device):
    """``(clean, noisy)`` BatchPreprocess modules on ``device`` when ``--preprocess`` picks batch mode, else None."""
    from dl1.models.clip import BatchPreprocess

    if cfg.preprocess == "pil" or (cfg.preprocess == "auto" and device.type != "cuda"):
        return None
    clean = BatchPreprocess.from_preprocess(preprocess)
    if clean is None:
        if cfg.preprocess == "batch":
            raise DL1Error("--preprocess batch needs CLIP's standard resize/crop/normalise; use --preprocess pil")
        return None
    return clean.to(device), BatchPreprocess.from_preprocess(preprocess, noise_std=0.1).to(device)


def raw_split(dataset, indices, prepare) -> RawSplit:
    import torch
    images = torch.from_numpy(dataset.data)  # (N, 32, 32, 3) uint8
    targets = torch.as_tensor(dataset.targets, dtype=torch.long)
    if indices is not None:
        images, targets = images[torch.as_tensor(indices)], targets[torch.as_tensor(indices)]
    return RawSplit(images, targets, prepare)


def load_splits(cfg: Config, preprocess, run: Run, device: torch.device) -> dict[str, Any]:
    """``train``/``val`` (seeded split of the training set), ``test`` and, with ``--test_noise``, ``test_noisy``;
    torchvision datasets (PIL preprocessing) or :class:`RawSplit` (batch preprocessing on the device)."""
    from torch.utils.data import Subset

    from dl1.data.vision import split_indices
    from dl1.models.clip import load_clip_dataset

    folder = data_folder(cfg, run)
    batch = batch_preprocess(cfg, preprocess, device)
    out: dict[str, Any] = {"preprocess": "batch" if batch else "pil"}
    if not cfg.evaluate:
        train = load_clip_dataset(cfg.dataset, "train", preprocess, folder)
        if cfg.val_size >= len(train):
            raise UsageError(f"--val_size {cfg.val_size} must be below the {len(train)} training images")
        train_idx, val_idx = split_indices(len(train), cfg.val_size, seed=cfg.seed)
        if batch:
            out["train"], out["val"] = raw_split(train, train_idx, batch[0]), raw_split(train, val_idx, batch[0])
        else:
            out["train"], out["val"] = Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist())
        out["classes"] = list(train.classes)
    test = load_clip_dataset(cfg.dataset, "test", preprocess, folder)
    out["test"] = raw_split(test, None, batch[0]) if batch else test
    out.setdefault("classes", list(test.classes))
    if cfg.test_noise:
        out["test_noisy"] = raw_split(test, None, batch[1]) if batch else \
            load_clip_dataset(cfg.dataset, "test", preprocess, folder, test_noise=True)
    return out


def build_model(cfg: Config, bundle, classes: list[str], device: torch.device):
    """``VisualPromptCLIP`` or ``DeepPromptCLIP`` on the frozen CLIP, with the text classifier of ``classes``."""
    import torch

    from dl1.models.clip import text_features
    from dl1.models.prompt_clip import DeepPromptCLIP, VisualPromptCLIP
    from dl1.models.prompters import build_prompter

    if bundle.image_size != cfg.image_size:
        raise UsageError(f"--image_size {cfg.image_size} does not match CLIP {cfg.arch}'s input size "
                         f"{bundle.image_size}")
    text = text_features(bundle.model, bundle.tokenizer, classes, (cfg.text_prompt_template,), device)  # (C, D)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the prompt's initial values depend on --seed only
        try:
            if cfg.prompt_type == "deep_prompt":
                model = DeepPromptCLIP(bundle.model, text, cfg.prompt_num, cfg.injection_layer,
                                       cfg.prompt_init_method)
            else:
                prompter = build_prompter(cfg.method, cfg.prompt_size, cfg.image_size, cfg.prompt_init_method,
                                          seed=cfg.seed)
                model = VisualPromptCLIP(bundle.model, text, prompter)
        except ValueError as exc:  # bad --injection_layer / --prompt_size for this model
            raise UsageError(str(exc)) from None
    return model.to(device)


def make_optimizer(cfg: Config, model, steps_per_epoch: int):
    """SGD on the prompt only, with the per-step warm-up + cosine schedule over ``epochs * steps_per_epoch``."""
    import torch

    from dl1.train import warmup_cosine

    params = [p for _, p in model.trainable_parameters()]
    optimizer = torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return optimizer, warmup_cosine(optimizer, cfg.warmup, cfg.epochs * steps_per_epoch)


class PreparedBatches:
    """``(prepare(images), targets)`` for each raw batch of ``batches`` (batch preprocessing on the device)."""

    def __init__(self, batches, prepare):
        self.batches, self.prepare = batches, prepare

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for images, targets in self.batches:
            yield self.prepare(images), targets


class Limited:
    """The first ``limit`` batches of ``batches`` (all when ``limit`` is 0), with a length for progress bars;
    the seconds spent iterating (loading + training) are added to ``clock["train_s"]`` when a clock is given."""

    def __init__(self, batches, limit: int = 0, clock: dict[str, float] | None = None):
        self.batches, self.limit, self.clock = batches, limit, clock

    def __len__(self) -> int:
        return min(len(self.batches), self.limit) if self.limit else len(self.batches)

    def __iter__(self):
        t0 = time.perf_counter()
        try:
            yield from itertools.islice(iter(self.batches), len(self))
        finally:
            if self.clock is not None:
                self.clock["train_s"] += time.perf_counter() - t0


def loader(dataset, cfg: Config, device: torch.device, *, shuffle: bool = False, epoch: int = 0,
           clock: dict[str, float] | None = None) -> Limited:
    from dl1.data.loaders import TensorBatches, epoch_loader

    if isinstance(dataset, RawSplit):
        raw = TensorBatches(dataset.images, dataset.targets, batch_size=cfg.batch_size, shuffle=shuffle,
                            seed=cfg.seed, epoch=epoch, device=device)
        return Limited(PreparedBatches(raw, dataset.prepare), cfg.max_batches, clock)
    return Limited(epoch_loader(dataset, cfg.batch_size, shuffle=shuffle, seed=cfg.seed, epoch=epoch,
                                num_workers=cfg.num_workers, pin_memory=device.type == "cuda"), cfg.max_batches, clock)


def evaluate(model, batches, device: torch.device, amp: bool = True, label_offset: int = 0) -> dict[str, float]:
    """Sample-weighted cross-entropy and top-1 (percent) over ``batches``; targets shifted by ``label_offset``."""
    import torch
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    use_amp = amp and device.type == "cuda"
    with torch.no_grad():
        for images, targets in batches:
            images, targets = images.to(device, non_blocking=True), targets.to(device) + label_offset
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                logits = model(images)  # (B, C)
            loss_sum += float(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
            correct += int((logits.argmax(dim=-1) == targets).sum())
            n += targets.numel()
    if n == 0:
        raise DL1Error("evaluation saw no images (empty split?)")
    return {"loss": loss_sum / n, "top1": 100.0 * correct / n, "n": n}


# ---------------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------------

def run(cfg: Config, run: Run) -> dict[str, Any]:
    import torch
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = choose_device(cfg.device)
    if cfg.evaluate:
        return evaluate_checkpoint(cfg, run, device)
    if cfg.resume:
        check_resume(cfg, device)
    bundle = load_bundle(cfg, device)
    data = load_splits(cfg, bundle.preprocess, run, device)
    model = build_model(cfg, bundle, data["classes"], device)
    describe(model, cfg, data, device)
    save_initial_prompt(model, run)
    fit, clock = train(cfg, run, model, data, device)
    results = final_evaluation(cfg, run, model, data, device, fit["steps"])
    if cfg.visualize_prompt:
        make_figures(run.dir)
    return run.finish(results=results, best_epoch=fit["best_epoch"], epochs_run=fit["epochs_run"],
                      steps=fit["steps"], stopped_early=fit["stopped_early"], **model_info(model, bundle, cfg),
                      data=data_info(cfg, data), device=str(device), threads=torch.get_num_threads(),
                      train_time_s=round(clock["train_s"], 2), checkpoint=str(run.checkpoints / "best.pt"))


def describe(model, cfg: Config, data: dict[str, Any], device: torch.device) -> None:
    names = [f"{n} {tuple(p.shape)}" for n, p in model.trainable_parameters()]
    n = sum(p.numel() for _, p in model.trainable_parameters())
    print(f"[clip-prompt] {cfg.prompt_type}/{cfg.method if cfg.prompt_type == 'visual_prompt' else 'tokens'}: "
          f"trainable {', '.join(names)} = {n:,} parameters; {len(data['train']):,} train / {len(data['val']):,} val "
          f"/ {len(data['test']):,} test images, {len(data['classes'])} classes, device {device}", flush=True)


def save_initial_prompt(model, run: Run) -> None:
    """``checkpoints/init.pt``: the prompt before training (for the 'before' figure)."""
    from dl1.train import save_checkpoint

    path = run.checkpoints / "init.pt"
    if run.enabled and not path.exists():
        save_checkpoint(path, {"modules": {"prompt": model.prompt_learner.state_dict()}})


def train(cfg: Config, run: Run, model, data: dict[str, Any], device: torch.device):
    """The Trainer loop: shuffled training batches, validation top-1 monitored, per-step schedule, checkpoints."""
    import torch

    from dl1.train import Trainer

    steps_per_epoch = len(loader(data["train"], cfg, device))
    optimizer, scheduler = make_optimizer(cfg, model, steps_per_epoch)
    trainer = Trainer(run, {"prompt": model.prompt_learner}, {"prompt": optimizer}, epochs=cfg.epochs,
                      monitor="val/top1", mode="max", schedulers={"prompt": scheduler}, patience=cfg.patience,
                      device=device, amp=cfg.amp, extra_state=lambda: checkpoint_extra(cfg, data),
                      desc="clip-prompt")
    criterion = torch.nn.CrossEntropyLoss()
    clock = {"train_s": 0.0}

    def train_step(batch) -> dict[str, Any]:
        images, targets = (t.to(device, non_blocking=True) for t in batch)
        with trainer.autocast():
            logits = model(images)  # (B, C)
            loss = criterion(logits.float(), targets)
        trainer.backward_step(loss)
        return {"loss": loss.detach(), "top1": 100.0 * (logits.argmax(-1) == targets).float().mean()}

    def train_batches(epoch: int):
        model.train()  # the prompt only: the CLIP stays in eval mode
        return loader(data["train"], cfg, device, shuffle=True, epoch=epoch, clock=clock)

    def validate(epoch: int) -> dict[str, dict[str, Any]]:
        return {"val": evaluate(model, loader(data["val"], cfg, device), device, cfg.amp)}

    fit = trainer.fit(train_batches, train_step, validate, resume=cfg.resume)
    trainer.load_best()
    return fit, clock


def checkpoint_extra(cfg: Config, data: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint needs to rebuild its model without the command line: the config and the class names."""
    return {"config": config_to_dict(cfg), "classes": list(data["classes"])}


def final_evaluation(cfg: Config, run: Run, model, data: dict[str, Any], device: torch.device,
                     step: int) -> dict[str, Any]:
    """Validation and test (clean, and noisy with ``--test_noise``) accuracy of the loaded (best) prompt."""
    import torch
    results = {}
    for split in ("val", "test", "test_noisy"):
        if split in data:
            if split == "test_noisy":
                torch.manual_seed(cfg.seed)  # the same noise every time
            results[split] = evaluate(model, loader(data[split], cfg, device), device, cfg.amp)
            run.log(step, f"best_{split}", results[split])
    return results


def model_info(model, bundle, cfg: Config) -> dict[str, Any]:
    from dl1.models.prompt_clip import count_parameters

    return {"params": count_parameters(model),
            "clip": {"arch": bundle.arch, "pretrained": bundle.pretrained, "weights": bundle.weights,
                     "random_weights": bool(bundle.random_init)}}


def data_info(cfg: Config, data: dict[str, Any]) -> dict[str, Any]:
    sizes = {k: len(v) for k, v in data.items() if k not in ("classes", "preprocess")}
    return {"dataset": cfg.dataset, "synthetic": cfg.synthetic_data, "sizes": sizes,
            "classes": len(data["classes"]), "max_batches": cfg.max_batches, "preprocess": data["preprocess"]}


# ---------------------------------------------------------------------------------------------------------------------
# evaluating a saved prompt (robustness)
# ---------------------------------------------------------------------------------------------------------------------

def load_prompt_checkpoint(path: str | Path, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(prompt state dict, training config)`` of a clip-prompt checkpoint; anything else -> DL1Error."""
    from dl1.train import load_checkpoint

    state = load_checkpoint(path, map_location=device)
    prompt = state.get("modules", {}).get("prompt") if isinstance(state, dict) else None
    saved = state.get("extra", {}).get("config") if isinstance(state, dict) else None
    if prompt is None or saved is None:
        raise DL1Error(f"{path} is not a clip-prompt checkpoint (no prompt weights or config in it)")
    return prompt, saved


def check_resume(cfg: Config, device: torch.device) -> None:
    """Resuming training needs the same prompt, CLIP and dataset as the checkpoint: name any difference."""
    path = Path(cfg.resume)
    path = path / "checkpoints" / "last.pt" if path.is_dir() else path
    _, saved = load_prompt_checkpoint(path, device)
    differ = [f"--{k} {saved[k]} (now {getattr(cfg, k)})" for k in (*PROMPT_FIELDS, "dataset", "synthetic_data")
              if k in saved and saved[k] != getattr(cfg, k)]
    if differ:
        raise DL1Error(f"cannot resume from {path}: it was trained with {', '.join(differ)}")


def checkpoint_config(cfg: Config, saved: dict[str, Any]) -> Config:
    """``cfg`` with the prompt's structure (type, shape, CLIP architecture) taken from the checkpoint."""
    import dataclasses

    changes = {k: saved[k] for k in PROMPT_FIELDS if k in saved}
    if cfg.clip_weights is None and saved.get("clip_weights"):
        changes["clip_weights"] = saved["clip_weights"]
    differ = [f"--{k} {saved[k]}" for k in changes if getattr(cfg, k) != changes[k] and k in PROMPT_FIELDS]
    if differ:
        print(f"[clip-prompt] from the checkpoint: {' '.join(differ)}", flush=True)
    return dataclasses.replace(cfg, **changes)


def restore_prompt(model, prompt: dict[str, Any], path: str | Path) -> None:
    """Load a saved prompt into ``model.prompt_learner``; a shape mismatch is a one-line DL1Error."""
    try:
        model.prompt_learner.load_state_dict(prompt)
    except RuntimeError as exc:
        raise DL1Error(f"the prompt in {path} does not fit this model: {str(exc).splitlines()[0][:200]}") from None


def evaluate_checkpoint(cfg: Config, run: Run, device: torch.device) -> dict[str, Any]:
    """``--evaluate``: test top-1 of a saved prompt, clean and (with ``--test_noise``) noisy."""
    import torch
    prompt, saved = load_prompt_checkpoint(cfg.resume, device)
    cfg = checkpoint_config(cfg, saved)
    bundle = load_bundle(cfg, device)
    data = load_splits(cfg, bundle.preprocess, run, device)
    model = build_model(cfg, bundle, data["classes"], device)
    restore_prompt(model, prompt, cfg.resume)
    results = {}
    for split in ("test", "test_noisy"):
        if split in data:
            torch.manual_seed(cfg.seed)  # the same noise every time
            results[split] = evaluate(model, loader(data[split], cfg, device), device, cfg.amp)
            run.log(0, split, results[split])
    if "test_noisy" in results:
        results["noise_drop"] = results["test"]["top1"] - results["test_noisy"]["top1"]
    return run.finish(results=results, checkpoint=str(cfg.resume), **model_info(model, bundle, cfg),
                      data=data_info(cfg, data), device=str(device))


# ---------------------------------------------------------------------------------------------------------------------
# figures (from the run folder alone)
# ---------------------------------------------------------------------------------------------------------------------

def make_figures(run_dir: Path) -> list[Path]:
    """``prompt_before.png`` / ``prompt_after.png`` (from ``init.pt`` and ``best.pt``) and ``prompt_curves.png``."""
    import json

    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.exists():
        return []
    saved = json.loads(config_file.read_text())
    if saved.get("evaluate"):
        return []
    paths = []
    for name, ckpt in (("prompt_before.png", "init.pt"), ("prompt_after.png", "best.pt")):
        path = run_dir / "checkpoints" / ckpt
        if path.exists():
            paths.append(plot_prompt(saved, path, run_dir / "figures" / name,
                                     "before training" if ckpt == "init.pt" else "after training (best epoch)"))
    curves = plot_curves(run_dir, saved)
    return paths + ([curves] if curves else [])


def prompt_images(saved: dict[str, Any], state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """Visual prompt -> two (3, H, W) images: the course's clamp(1 + v) and the pixel-space change on mid-grey."""
    import torch

    from dl1.models.clip import OPENAI_STD
    from dl1.models.prompters import RandomPatchPrompter, build_prompter

    prompter = build_prompter(saved["method"], saved["prompt_size"], saved["image_size"], "zeros")
    prompter.load_state_dict(state)
    with torch.no_grad():
        v = prompter.prompt(location=(0, 0)) if isinstance(prompter, RandomPatchPrompter) else prompter.prompt()
        v = v[0]  # (3, H, W), normalised units
        std = torch.tensor(OPENAI_STD).view(3, 1, 1)
    return [("course view: clamp(1 + v, 0, 1)", (1 + v).clamp(0, 1)),
            ("pixel change: clamp(0.5 + v·std, 0, 1)", (0.5 + v * std).clamp(0, 1))]


def plot_prompt(saved: dict[str, Any], ckpt: Path, out: Path, when: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dl1.train import load_checkpoint

    state = load_checkpoint(ckpt)["modules"]["prompt"]
    out.parent.mkdir(parents=True, exist_ok=True)
    if saved["prompt_type"] == "deep_prompt":
        tokens = state["deep_prompt"][:, 0].float()  # (P, width)
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.35 * tokens.shape[0]))
        im = ax.imshow(tokens.numpy(), aspect="auto", cmap="coolwarm")
        fig.colorbar(im, ax=ax)
        ax.set_xlabel("feature")
        ax.set_ylabel("token")
        ax.set_title(f"deep prompt ({tokens.shape[0]} tokens before block {saved['injection_layer']}), {when}")
    else:
        shape = f"{saved['method']} {saved['prompt_size']} px"
        if saved["method"] == "random_patch":
            when += "\n(drawn at the top-left; placed at random at every forward pass)"
        fig, axes = plt.subplots(1, 2, figsize=(7, 3.9))
        for ax, (title, img) in zip(axes, prompt_images(saved, state), strict=True):
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"visual prompt: {shape}, {when}", fontsize=10)
    if saved.get("arch") == TINY_ARCH or saved.get("synthetic_data"):
        fig.text(0.01, 0.01, "smoke run: tiny random CLIP, synthetic data", fontsize=7, color="gray")
    fig.tight_layout()
    save_figure(fig, out, dpi=90)
    return out


def plot_curves(run_dir: Path, saved: dict[str, Any]) -> Path | None:
    """Training loss and validation top-1 per epoch, from ``metrics.jsonl``."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [(r["epoch"], r["loss"]) for r in records if r["split"] == "train" and "loss" in r]
    val = [(r["epoch"], r["top1"]) for r in records if r["split"] == "val" and "top1" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(*zip(*train, strict=True), marker=".", color="C0", label="train loss")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cross-entropy", color="C0")
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), marker="o", color="C1", label="val top-1")
        ax2.set_ylabel("validation top-1 (%)", color="C1")
        ax2.ticklabel_format(axis="y", useOffset=False)
    what = saved["method"] if saved["prompt_type"] == "visual_prompt" else f"deep prompt @ {saved['injection_layer']}"
    smoke = " (smoke run)" if saved.get("arch") == TINY_ARCH or saved.get("synthetic_data") else ""
    ax.set_title(f"{what}, {saved['dataset']}{smoke}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = run_dir / "figures" / "prompt_curves.png"
    save_figure(fig, path, dpi=100)
    return path

