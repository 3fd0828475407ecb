"""The character-level GPT's figure and throughput numbers, computed from a run folder or the Trainer's clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dl1.errors import DL1Error
from dl1.report import new_figure, save_figure
from dl1.run.files import read_jsonl
from dl1.run.reader import RunFolder


def throughput(train_s: float, cpu_s: float, iters: int, tokens_per_iter: int) -> dict[str, float]:
    """Training throughput (evaluation excluded): wall clock, and per CPU-second of this process.

    With one thread on a busy machine the CPU-time figure estimates what the same run does on a quiet one."""
    tokens = tokens_per_iter * max(iters, 1)
    return {"train_tokens_per_s": round(tokens / max(train_s, 1e-9), 1),
            "ms_per_iter": round(train_s / max(iters, 1) * 1000, 2),
            "train_tokens_per_cpu_s": round(tokens / max(cpu_s, 1e-9), 1)}


def make_figures(run_dir: str | Path) -> list[Path]:
    """``figures/gpt_loss.png``: training loss (running means) and validation loss against iterations."""
    run_dir = Path(run_dir)
    records = read_jsonl(run_dir / "metrics.jsonl")
    split = "train_iter" if any(r["split"] == "train_iter" for r in records) else "train"
    train = [(r["step"], r["loss"]) for r in records if r["split"] == split and _number(r.get("loss"))]
    val = [(r["step"], r["loss"]) for r in records if r["split"] == "val" and _number(r.get("loss"))]
    if not train and not val:
        return []
    fig, ax = new_figure(figsize=(5.5, 3.6))
    if train:
        ax.plot(*zip(*train, strict=True), lw=1, label="train (running mean, training mode)")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation (whole split)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.set_title(title(run_dir), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return [save_figure(fig, run_dir / "figures" / "gpt_loss.png")]


def title(run_dir: Path) -> str:
    """The figure's title from the run's ``config.json`` (corpus, model size, block, batch, preset)."""
    try:
        c = RunFolder(run_dir).config
        size = c["model_type"] if c.get("n_layer") is None else f"{c['n_layer']} layers x {c['n_embd']} wide"
        return (f"char GPT on {Path(c['txt_file']).name}: {size}, block {c['block_size']}, batch "
                f"{c['train_batch_size']}" + (f"\n(preset {c['preset']})" if c.get("preset", "none") != "none" else ""))
    except (DL1Error, OSError, ValueError, KeyError, TypeError, AttributeError):
        return "character-level GPT"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
