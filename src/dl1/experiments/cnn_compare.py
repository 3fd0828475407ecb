"""CNN/ViT comparison (Q1.1): parameters, time per image with/without no_grad, memory, ImageNet top-1.

For VGG11, VGG11-BN, ResNet-18, DenseNet-121, MobileNet-v3-Small, ViT-B/32 (torchvision) and ViT-S/8 (timm, optional):
trainable parameters; forward time at ``--batch_size`` 8 with and without ``torch.no_grad()`` (eval mode both, warm-up,
``--repeats`` interleaved repeats, median and quartiles, CUDA events on GPU); memory of a ``--memory_batch`` 64 forward
with the output kept alive (CUDA allocator on GPU; bytes saved for backward on CPU); ImageNet top-1 from torchvision's
weight metadata.  Models use random weights (timing does not depend on them).  Writes one ``model`` record per model
to metrics.jsonl, the table to summary.json, table.md and report.md, and four figures (``dl1 report`` rebuilds them).
"""

from __future__ import annotations

from dataclasses import dataclass

from dl1.config import arg, shared
from dl1.errors import UsageError
from dl1.experiments.registry import Experiment
from dl1.lazy import Ref

_ALL = ("vgg11", "vgg11_bn", "resnet18", "densenet121", "mobilenet_v3_small", "vit_b_32", "vit_s_8")


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = arg(_ALL, "Models to compare (vit_s_8 needs timm; skipped with a note without it).",
                                  choices=_ALL)
    device: str = shared("device")
    image_size: int = arg(224, "Side of the random input images (ViTs are built for this size; multiple of 32).",
                          min=32, max=1024)
    batch_size: int = arg(8, "Batch size of the timing runs (time per image = batch time / batch size).", min=1,
                          max=1024)
    memory_batch: int = arg(64, "Batch size of the memory measurement.", min=1, max=1024)
    repeats: int = arg(50, "Timed forward passes per model and grad mode (after the warm-up).", min=2, max=10_000)
    warmup: int = arg(5, "Untimed warm-up passes per model and grad mode.", min=0, max=1000)
    threads: int = shared("threads")
    seed: int = shared("seed", 0, "Seed of the random weights and inputs.")

    def check(self) -> None:
        if self.image_size % 32:
            raise UsageError(f"--image_size: {self.image_size} is not a multiple of 32 (the ViT patch sizes)")


SMOKE = {"models": ("resnet18", "mobilenet_v3_small"), "image_size": 64, "batch_size": 2, "memory_batch": 4,
         "repeats": 3, "warmup": 1}

EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, figures=Ref("dl1.report.cnn:make_report"),
    no_export="times torchvision models with random weights and trains none")
