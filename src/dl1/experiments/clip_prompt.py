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

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from dl1.config import arg, shared
from dl1.data.catalog import FASHION_DATASETS
from dl1.errors import UsageError
from dl1.experiments.checks import Precision, VisionData, WeightsFile
from dl1.experiments.clip_prompt_checkpoint import DATA_FIELDS, PROMPT_FIELDS
from dl1.experiments.registry import Experiment, runner
from dl1.hub.clip import (
    GPU_PRECISION_NOTE,
    MAX_IMAGE_SIZE,
    MAX_PROMPT_TOKENS,
    MINI_ARCH,
    TINY_ARCH,
    TINY_PATCH,
    WEIGHTS_HELP,
    check_prompt,
    clip_choice,
    input_size,
)
from dl1.lazy import Ref
from dl1.report import summary as keys
from dl1.run.torchrun import world_size

DEFAULT_IMAGE_SIZE = 224  # ViT-B/32's input size, the course's


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
    data_dir: str | None = shared("data_dir", help=(
        "Folder holding cifar-10-batches-py/, cifar-100-python/ or FashionMNIST/raw/ (default: $DL1_DATA, else "
        "./data)."))
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
    resume: str | None = shared("resume", help=(
        "Training: run folder or checkpoint to continue from. With --evaluate: the checkpoint file to evaluate (e.g. "
        "RUN/checkpoints/best.pt)."))
    dist_timeout: float = shared("dist_timeout")
    transfer: bool = arg(False, "With --evaluate: score the prompt on purpose with another --dataset or "
                                "--text_prompt_template than it was trained with (reported as a transfer).")
    seed: int = shared("seed", 0, "Random seed (prompt init, validation split, shuffling, random patch locations).")
    device: str = shared("device")
    precision: str = shared("precision", note=GPU_PRECISION_NOTE)
    compile: bool = shared("compile")
    threads: int = shared("threads")

    def __post_init__(self) -> None:  # training: the data defaults; --evaluate takes them from the checkpoint
        if self.image_size is None and self.arch != MINI_ARCH and self.clip_weights is None:  # no file can change it
            object.__setattr__(self, "image_size", DEFAULT_IMAGE_SIZE)  # else resolve() reads the model's own size
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


def resolve(cfg: Config) -> Config:
    """``--arch``, ``--clip_weights`` and ``--image_size`` as the run uses them (file reads, so a registry step): a
    mini-clip run folder -> its weights file, ``--arch mini`` alone -> the newest mini-clip run, a mini-CLIP file ->
    ``--arch mini``; the default image size of a mini-CLIP is read from its config file."""
    arch, weights = clip_choice(cfg.arch, cfg.clip_weights)
    size = cfg.image_size
    if size is None:
        size = input_size(arch, weights) if arch == MINI_ARCH else DEFAULT_IMAGE_SIZE
    return dataclasses.replace(cfg, arch=arch, clip_weights=weights, image_size=size)


SMOKE = {"arch": TINY_ARCH, "image_size": 64, "synthetic_data": True, "prompt_size": 8,
         "val_size": 16, "batch_size": 16, "num_workers": 0, "epochs": 2, "warmup": 2, "learning_rate": 1.0,
         "visualize_prompt": True, "test_noise": True}


def check_prompt_fits(cfg: Config) -> None:
    """The prompt's limits for ``--arch`` (from its name and config file; no model is built, open_clip not imported).
    With ``--evaluate`` the prompt comes from the checkpoint, which is checked when it is read (one process only)."""
    if cfg.evaluate and world_size() > 1:
        raise UsageError("--evaluate scores a checkpoint in one process: start it without torchrun")
    if not cfg.evaluate:
        check_prompt(cfg.arch, cfg.image_size, cfg.prompt_type, cfg.method, cfg.prompt_size, cfg.injection_layer,
                     cfg.clip_weights)


EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, global_batch=("batch_size",), evaluate_flag="evaluate",
    resolve=resolve,
    preflight=(WeightsFile("clip_weights"), VisionData(synthetic="synthetic_data", when=("cifar10", "cifar100")),
               VisionData(synthetic="synthetic_data", named="fashion-mnist", when=FASHION_DATASETS), Precision(),
               check_prompt_fits),
    figures=Ref("dl1.report.clip_prompt:make_figures"), export=runner("clip_prompt", "export"),
    summary_keys=(keys.RESULTS_TEST_TOP1,))
