"""The course's model comparison (Q1.1): builders, ImageNet top-1 from weight metadata, and the three measurements.

Models: VGG11, VGG11-BN, ResNet-18, DenseNet-121, MobileNet-v3-Small, ViT-B/32 (torchvision) and ViT-S/8
(``timm.create_model('vit_small_patch8_224')``, an optional extra: without timm it is skipped with a note).
Networks are built with **random weights**: speed and memory do not depend on the weight values, and the ImageNet
top-1 comes from torchvision's weight metadata, which is available offline.

Measurements (model in ``eval()`` in every case, so batch norm and dropout behave the same with and without grad):

* :func:`count_params`: parameters with ``requires_grad`` (all of them for a freshly built model);
* :func:`measure_forward_ms`: warm-up passes, then ``repeats`` timed forwards with and without ``torch.no_grad()``
  interleaved (so drift hits both alike); CUDA events + ``synchronize`` on GPU, ``perf_counter`` on CPU; median,
  quartiles and the IQR-filtered mean (the reference solution's statistic);
* :func:`measure_memory`: a forward of a batch with the output kept alive.  On CUDA: ``memory_allocated()`` after the
  forward minus before it (and the peak, after ``reset_peak_memory_stats``).  Everywhere (the CPU's honest
  equivalent): the bytes of the distinct non-parameter storages that autograd saves for backward, found with
  ``torch.autograd.graph.saved_tensors_hooks``, plus the output.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from contextlib import nullcontext
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from dl1.errors import DL1Error

TORCHVISION_MODELS = ("vgg11", "vgg11_bn", "resnet18", "densenet121", "mobilenet_v3_small", "vit_b_32")
TIMM_MODELS = {"vit_s_8": "vit_small_patch8_224"}
MODELS = (*TORCHVISION_MODELS, *TIMM_MODELS)
LABELS = {"vgg11": "VGG11", "vgg11_bn": "VGG11-BN", "resnet18": "ResNet-18", "densenet121": "DenseNet-121",
          "mobilenet_v3_small": "MobileNet-v3-S", "vit_b_32": "ViT-B/32", "vit_s_8": "ViT-S/8"}
# ViT-S/8 is not in torchvision: the course's starter notebook approximates its top-1 by DINO's (linear eval 79.7).
TIMM_TOP1 = {"vit_s_8": (80.0, "approximate: course starter notebook (DINO ViT-S/8)")}


def timm_available() -> bool:
    """Is timm (an optional extra) installed?  Looked up without importing it: ``import timm`` takes seconds."""
    return importlib.util.find_spec("timm") is not None


def build(name: str, image_size: int = 224) -> nn.Module:
    """A randomly initialised model of the comparison; ViTs are built for ``image_size`` (a multiple of the patch)."""
    if name in TIMM_MODELS:
        if not timm_available():
            raise DL1Error(f"{name} needs timm: pip install timm (or pip install 'dl1[timm]')")
        import timm  # an optional extra that takes seconds to import: only when a timm model is built

        return timm.create_model(TIMM_MODELS[name], pretrained=False, img_size=image_size)
    if name not in TORCHVISION_MODELS:
        raise DL1Error(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    kwargs = {"image_size": image_size} if name.startswith("vit_") else {}
    return tvm.get_model(name, weights=None, **kwargs)


def imagenet_top1(name: str) -> tuple[float | None, str]:
    """ImageNet-1K top-1 (%) of the default weights from torchvision's metadata (offline), and its source."""
    if name in TIMM_TOP1:
        return TIMM_TOP1[name]
    weights = tvm.get_model_weights(name).DEFAULT
    return float(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]), f"torchvision {weights}"


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (those with ``requires_grad`` unless ``trainable_only=False``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _grad_context(no_grad: bool):
    return torch.no_grad() if no_grad else nullcontext()


def _timed_forward(model: nn.Module, images: torch.Tensor, no_grad: bool) -> float:
    """Milliseconds of one forward pass; CUDA events and a synchronize on GPU."""
    if images.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(images.device)
        with _grad_context(no_grad):
            start.record()
            out = model(images)
            end.record()
        torch.cuda.synchronize(images.device)
        del out
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    with _grad_context(no_grad):
        out = model(images)
    elapsed = (time.perf_counter() - t0) * 1e3
    del out
    return elapsed


def summarize_times(times_ms: list[float], batch: int) -> dict[str, float]:
    """Median, quartiles, min and the IQR-filtered mean of batch times, also per image."""
    q1, med, q3 = statistics.quantiles(times_ms, n=4, method="inclusive") if len(times_ms) > 1 else [times_ms[0]] * 3
    iqr = q3 - q1
    kept = [t for t in times_ms if q1 - 1.5 * iqr <= t <= q3 + 1.5 * iqr] or times_ms
    filtered = statistics.fmean(kept)
    return {"median_ms": med, "q1_ms": q1, "q3_ms": q3, "min_ms": min(times_ms), "iqr_mean_ms": filtered,
            "repeats": len(times_ms), "median_ms_per_image": med / batch, "q1_ms_per_image": q1 / batch,
            "q3_ms_per_image": q3 / batch}


def measure_forward_ms(model: nn.Module, images: torch.Tensor, repeats: int = 50,
                       warmup: int = 5) -> dict[str, dict[str, float]]:
    """Batch forward times with and without ``no_grad`` (interleaved, eval mode): {"no_grad": ..., "grad": ...}."""
    model.eval()
    for _ in range(warmup):
        _timed_forward(model, images, True)
        _timed_forward(model, images, False)
    times: dict[str, list[float]] = {"no_grad": [], "grad": []}
    for _ in range(repeats):
        times["no_grad"].append(_timed_forward(model, images, True))
        times["grad"].append(_timed_forward(model, images, False))
    return {k: summarize_times(v, images.shape[0]) for k, v in times.items()}


class SavedTensorBytes:
    """Counts the distinct storages autograd saves for backward (parameters and the given inputs excluded)."""

    def __init__(self, exclude: list[torch.Tensor]):
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.storages: dict[int, int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in self.exclude:
            self.storages[s.data_ptr()] = s.nbytes()
        return t

    def add(self, t: torch.Tensor) -> None:
        self._pack(t)

    def context(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    @property
    def nbytes(self) -> int:
        return sum(self.storages.values())


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, list | tuple):
        return [t for o in out for t in _tensors(o)]
    return []


def measure_memory(model: nn.Module, images: torch.Tensor, no_grad: bool) -> dict[str, Any]:
    """Memory held after one forward with the output kept alive (see the module docstring for the two methods)."""
    model.eval()
    counter = SavedTensorBytes([*model.parameters(), *model.buffers(), images])
    cuda = images.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(images.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(images.device)
        before = torch.cuda.memory_allocated(images.device)
    with _grad_context(no_grad), counter.context():
        out = model(images)  # kept alive until the numbers are read
    for t in _tensors(out):
        counter.add(t)
    result: dict[str, Any] = {"saved_plus_output_mb": counter.nbytes / 2**20,
                              "output_mb": sum(t.untyped_storage().nbytes() for t in _tensors(out)) / 2**20}
    if cuda:
        torch.cuda.synchronize(images.device)
        result["allocated_mb"] = (torch.cuda.memory_allocated(images.device) - before) / 2**20
        result["peak_mb"] = (torch.cuda.max_memory_allocated(images.device) - before) / 2**20
        result["method"] = "cuda memory_allocated after forward - before (output alive)"
        result["mb"] = result["allocated_mb"]
    else:
        result["method"] = "bytes of tensors saved for backward + output (saved_tensors_hooks)"
        result["mb"] = result["saved_plus_output_mb"]
    del out
    return result


measure_vram = measure_memory  # the course's name
