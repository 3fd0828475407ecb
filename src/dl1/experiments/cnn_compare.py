"""CNN/ViT comparison (Q1.1): parameters, time per image with/without no_grad, memory, ImageNet top-1.

For VGG11, VGG11-BN, ResNet-18, DenseNet-121, MobileNet-v3-Small, ViT-B/32 (torchvision) and ViT-S/8 (timm, optional):
trainable parameters; forward time at ``--batch_size`` 8 with and without ``torch.no_grad()`` (eval mode both, warm-up,
``--repeats`` interleaved repeats, median and quartiles, CUDA events on GPU); memory of a ``--memory_batch`` 64 forward
with the output kept alive (CUDA allocator on GPU; bytes saved for backward on CPU); ImageNet top-1 from torchvision's
weight metadata.  Models use random weights (timing does not depend on them).  Writes one ``model`` record per model
to metrics.jsonl, the table to summary.json, table.md and report.md, and four figures (``dl1 report`` rebuilds them).
"""

from __future__ import annotations

import gc
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dl1.config import arg
from dl1.errors import UsageError
from dl1.runtime import Run

_ALL = ("vgg11", "vgg11_bn", "resnet18", "densenet121", "mobilenet_v3_small", "vit_b_32", "vit_s_8")


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = arg(_ALL, "Models to compare (vit_s_8 needs timm; skipped with a note without it).",
                                  choices=_ALL)
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ...")
    image_size: int = arg(224, "Side of the random input images (ViTs are built for this size; multiple of 32).",
                          min=32, max=1024)
    batch_size: int = arg(8, "Batch size of the timing runs (time per image = batch time / batch size).", min=1,
                          max=1024)
    memory_batch: int = arg(64, "Batch size of the memory measurement.", min=1, max=1024)
    repeats: int = arg(50, "Timed forward passes per model and grad mode (after the warm-up).", min=2, max=10_000)
    warmup: int = arg(5, "Untimed warm-up passes per model and grad mode.", min=0, max=1000)
    threads: int = arg(0, "torch CPU threads (0 = leave torch's default); recorded in the summary.", min=0, max=1024)
    seed: int = arg(0, "Seed of the random weights and inputs.", min=0, max=2**32 - 1)

    def check(self) -> None:
        if self.image_size % 32:
            raise UsageError(f"--image_size: {self.image_size} is not a multiple of 32 (the ViT patch sizes)")


SMOKE = {"models": ("resnet18", "mobilenet_v3_small"), "image_size": 64, "batch_size": 2, "memory_batch": 4,
         "repeats": 3, "warmup": 1}


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} torch threads)"


def profile_model(name: str, cfg: Config, device) -> dict[str, Any]:
    """Parameters, timing and memory of one randomly initialised model."""
    import torch

    from dl1.models import zoo

    torch.manual_seed(cfg.seed)
    model = zoo.build(name, cfg.image_size).to(device).eval()
    top1, source = zoo.imagenet_top1(name)
    gen = torch.Generator().manual_seed(cfg.seed)
    small = torch.rand(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=gen).to(device)
    times = zoo.measure_forward_ms(model, small, repeats=cfg.repeats, warmup=cfg.warmup)
    del small
    big = torch.rand(cfg.memory_batch, 3, cfg.image_size, cfg.image_size, generator=gen).to(device)
    mem = {mode: zoo.measure_memory(model, big, no_grad=mode == "no_grad") for mode in ("no_grad", "grad")}
    row = {"label": zoo.LABELS[name], "params": zoo.count_params(model), "top1": top1, "top1_source": source,
           "memory_method": mem["grad"]["method"], "timing": times, "memory": mem}
    for mode in ("no_grad", "grad"):
        row[f"ms_per_image_{mode}"] = times[mode]["median_ms_per_image"]
        row[f"q1_ms_per_image_{mode}"] = times[mode]["q1_ms_per_image"]
        row[f"q3_ms_per_image_{mode}"] = times[mode]["q3_ms_per_image"]
        row[f"memory_mb_{mode}"] = mem[mode]["mb"]
        if "peak_mb" in mem[mode]:  # CUDA: allocator peak and the saved-tensor count as a cross-check
            row[f"peak_mb_{mode}"] = mem[mode]["peak_mb"]
            row[f"saved_plus_output_mb_{mode}"] = mem[mode]["saved_plus_output_mb"]
    del model, big
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def run(cfg: Config, run: Run) -> dict[str, Any]:
    import torch

    from dl1.models import zoo
    from dl1.report.cnn import TABLE_KEYS, make_report
    from dl1.runtime import choose_device

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = choose_device(cfg.device)
    skipped = {}
    rows = {}
    for i, name in enumerate(dict.fromkeys(cfg.models)):
        if name in zoo.TIMM_MODELS and not zoo.timm_available():
            skipped[name] = "timm is not installed (pip install timm): ViT-S/8 skipped"
            print(f"[{run.experiment}] note: {skipped[name]}", flush=True)
            continue
        row = profile_model(name, cfg, device)
        rows[name] = row
        run.log(i, "model", {k: v for k, v in row.items() if k not in ("timing", "memory")}, model=name)
    summary = {"device": str(device), "device_name": _device_name(device), "torch": torch.__version__,
               "torch_threads": torch.get_num_threads(), "image_size": cfg.image_size, "batch_size": cfg.batch_size,
               "memory_batch": cfg.memory_batch, "repeats": cfg.repeats,
               "weights": "random (timing and memory only); top-1 from torchvision weight metadata",
               "skipped": skipped, "table": {n: {k: r[k] for k in TABLE_KEYS} for n, r in rows.items()},
               "details": {n: {"timing": r["timing"], "memory": r["memory"]} for n, r in rows.items()}}
    result = run.finish(**summary)
    if run.enabled:
        make_report(run.dir)
        (run.dir / "report.md").write_text((run.dir / "table.md").read_text())
    return result


def make_figures(run_dir: Path) -> list[Path]:
    """Rebuild the four figures and table.md from the run folder."""
    from dl1.report.cnn import make_report

    return make_report(Path(run_dir))
