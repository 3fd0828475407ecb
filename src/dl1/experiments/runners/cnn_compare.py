"""The runner of ``dl1 run cnn-compare`` (flags and description: :mod:`dl1.experiments.cnn_compare`)."""

from __future__ import annotations

import gc
import platform
from pathlib import Path
from typing import Any

import torch

from dl1.experiments.cnn_compare import Config
from dl1.models import zoo
from dl1.report.cnn import TABLE_KEYS, make_report
from dl1.run.device import choose_device
from dl1.run.folder import Run


def _device_name(device) -> str:
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
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = run.device = choose_device(cfg.device)
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
