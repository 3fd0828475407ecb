"""Cross-dataset evaluation of a learnt CLIP prompt (A2 Q2.5): CIFAR-10 + CIFAR-100 test sets as one 110-way problem.

``dl1 run clip-cross-dataset --resume RUN/checkpoints/best.pt`` loads a prompt trained by ``dl1 run clip-prompt`` (on
either dataset; its type, shape and CLIP architecture come from the checkpoint), builds the text classifier of the 110
class names (CIFAR-10's, then CIFAR-100's: the two sets are disjoint), shifts the CIFAR-100 labels by +10 and reports
the top-1 on each test set and the sample-weighted total ``(acc10 * N10 + acc100 * N100) / (N10 + N100)``.
``--precision bf16|fp16`` evaluates under that autocast with the frozen CLIP kept in that dtype on a GPU.  One process
(an evaluation: refused under torchrun).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dl1.config import arg, config_to_dict, precision_arg
from dl1.errors import UsageError
from dl1.hub.clip import DATA_FIELDS, DEFAULT_ARCH, GPU_PRECISION_NOTE, PROMPT_FIELDS, WEIGHTS_HELP, clip_choice
from dl1.runtime import Run, choose_device, seed_everything


@dataclass(frozen=True)
class Config:
    resume: str | None = arg(None, "Checkpoint of a learnt prompt (RUN/checkpoints/best.pt of dl1 run clip-prompt); "
                                   "with --synthetic_data and no --resume, a smoke prompt is trained first.")
    text_prompt_template: str | None = arg(None, "Text template of the 110 class prompts (default: the one the "
                                                 "prompt was trained with; the course script's default has the typo "
                                                 "'This a photo of a {}').")
    data_dir: str | None = arg(None, "Folder holding cifar-10-batches-py/ and cifar-100-python/ "
                                     "(default: $DL1_DATA, else ./data).")
    synthetic_data: bool | None = arg(None, "Write tiny fake CIFAR-10/100 test files into the run folder and use "
                                            "them (smoke runs only: the numbers mean nothing; default: as the prompt "
                                            "was trained).")
    clip_weights: str | None = arg(None, "Default: the file the prompt was trained with. " + WEIGHTS_HELP)
    test_noise: bool = arg(False, "Add N(0, 0.1) noise after preprocessing.")
    preprocess: str = arg("auto", "Where CLIP's preprocessing runs: pil (DataLoader workers), batch (on the device, "
                                  "same numbers), auto = batch on CUDA.", choices=("auto", "pil", "batch"))
    batch_size: int = arg(128, "Mini-batch size.", min=1, max=4096)
    num_workers: int = arg(4, "DataLoader worker processes.", min=0, max=64)
    max_batches: int = arg(0, "Evaluate at most this many batches per dataset (0 = all).", min=0, max=10**9)
    seed: int = arg(0, "Random seed (the noise).", min=0, max=2**32 - 1)
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps.")
    precision: str = precision_arg(note=GPU_PRECISION_NOTE)

    def __post_init__(self) -> None:  # a mini-clip run folder -> its weights file
        object.__setattr__(self, "clip_weights", clip_choice(DEFAULT_ARCH, self.clip_weights)[1])

    def check(self) -> None:
        if not self.resume and not self.synthetic_data:
            raise UsageError("--resume CKPT is required: the prompt to evaluate (RUN/checkpoints/best.pt)")
        if self.resume and Path(self.resume).is_dir():
            raise UsageError(f"--resume needs a checkpoint file, not a run folder: use "
                             f"{Path(self.resume) / 'checkpoints' / 'best.pt'}")


SMOKE = {"synthetic_data": True, "batch_size": 16, "num_workers": 0}


def weighted_total(parts: dict[str, dict[str, float]]) -> dict[str, float]:
    """Sample-weighted top-1 and loss over the parts."""
    n = sum(p["n"] for p in parts.values())
    return {"top1": sum(p["top1"] * p["n"] for p in parts.values()) / n,
            "loss": sum(p["loss"] * p["n"] for p in parts.values()) / n, "n": n}


def load_parts(cfg: Config, preprocess, run: Run, batch=None) -> tuple[dict[str, Any], list[str]]:
    """``({"cifar10": test set, "cifar100": test set with labels + 10}, 110 class names)``; with ``batch`` (the
    clean and noisy BatchPreprocess of ``--preprocess batch``) raw splits preprocessed on the device."""
    from dl1.data.clip import cifar110, cifar_folder

    synthetic = run.path("synthetic_data") if cfg.synthetic_data else None
    folder = cifar_folder(cfg.data_dir, synthetic, ("cifar10", "cifar100"), n_train=5, n_test=24, seed=cfg.seed)
    prepare = None if batch is None else batch[1] if cfg.test_noise else batch[0]
    return cifar110(folder, preprocess, cfg.test_noise, prepare)


def run(cfg: Config, run: Run) -> dict[str, Any]:
    import torch

    from dl1.data.clip import batches, device_preprocess
    from dl1.hub.clip import get_clip, read_prompt_checkpoint
    from dl1.models.clip import text_features
    from dl1.models.prompt_clip import build_prompted_clip, count_parameters, evaluate
    from dl1.train.precision import autocast, frozen_dtype

    seed_everything(cfg.seed)
    device = choose_device(cfg.device)
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
    from dl1.experiments import execute

    print("[clip-cross-dataset] no --resume: training a smoke prompt on synthetic data first", flush=True)
    summary = execute("clip-prompt", [], smoke=True,
                      overrides={"visualize_prompt": False, "test_noise": False}, out_dir=run.path("smoke_prompt"),
                      quiet=True)
    return summary["checkpoint"]
