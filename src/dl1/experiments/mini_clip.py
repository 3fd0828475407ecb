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

from dl1.config import arg, shared
from dl1.data.catalog import SHIFTS
from dl1.errors import UsageError
from dl1.experiments.checks import Precision, VisionData
from dl1.experiments.registry import Experiment
from dl1.hub.clip import MINI_ARCH, check_prompt_limits
from dl1.lazy import Ref

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
    data_dir: str | None = shared("data_dir", help=(
        "Folder with FashionMNIST/raw/ (default: $DL1_DATA, else ./data; Debian's /usr/share/datasets/fashion-mnist "
        "is found too)."))
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
    seed: int = shared("seed", 0, "Random seed (weights, split, captions, shuffling, prompts).")
    device: str = shared("device")
    precision: str = shared("precision")
    threads: int = shared("threads")

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



EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE,
    no_export="writes its model as RUN/mini_clip.safetensors + mini_clip.json already (give RUN to --clip_weights)",
    preflight=(VisionData(dataset=None, synthetic="synthetic_data", named="fashion-mnist"), Precision()),
    figures=Ref("dl1.report.mini_clip:make_report"))
