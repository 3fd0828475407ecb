"""Figures and report text of a clip-prompt run: the prompt before and after training, the curves, the summary.

``checkpoints/init.pt`` holds the prompt before training, ``checkpoints/best.pt`` the best one; ``config.json`` says
what the prompt is; ``metrics.jsonl`` holds the per-epoch training loss and validation top-1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.ticker import MaxNLocator

from dl1.hub.clip import TINY_ARCH
from dl1.models.prompt_clip import count_parameters
from dl1.models.prompters import RandomPatchPrompter, build_prompter
from dl1.report import new_figure, save_figure
from dl1.report.clip import OPENAI_STD  # torch-free: rebuilding this report does not import open_clip
from dl1.run.files import read_jsonl
from dl1.run.reader import RunFolder
from dl1.train import load_checkpoint, save_checkpoint


def describe(model: Any, cfg: Any, data: dict[str, Any], device: Any) -> str:
    """The line a clip-prompt run starts with: what trains, how many parameters, the split sizes, the device."""
    names = [f"{n} {tuple(p.shape)}" for n, p in model.trainable_parameters()]
    n = sum(p.numel() for _, p in model.trainable_parameters())
    return (f"[clip-prompt] {cfg.prompt_type}/{cfg.method if cfg.prompt_type == 'visual_prompt' else 'tokens'}: "
            f"trainable {', '.join(names)} = {n:,} parameters; {len(data['train']):,} train / {len(data['val']):,} "
            f"val / {len(data['test']):,} test images, {len(data['classes'])} classes, device {device}")


def data_info(cfg: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The summary's ``data`` section: dataset, split sizes, classes, batch limit, where preprocessing ran."""
    sizes = {k: len(v) for k, v in data.items() if k not in ("classes", "preprocess")}
    return {"dataset": cfg.dataset, "synthetic": cfg.synthetic_data, "sizes": sizes,
            "classes": len(data["classes"]), "max_batches": cfg.max_batches, "preprocess": data["preprocess"]}


def model_info(model: Any, bundle: Any) -> dict[str, Any]:
    """The summary's ``params`` (trainable and frozen counts) and ``clip`` (architecture, weights) sections."""
    return {"params": count_parameters(model), "clip": bundle.summary()}


def save_initial_prompt(model: Any, run: Any) -> None:
    """``checkpoints/init.pt``: the prompt before training (for the 'before' figure)."""
    path = run.checkpoints / "init.pt"
    if run.enabled and not path.exists():
        save_checkpoint(path, {"modules": {"prompt": model.prompt_learner.state_dict()}})


def make_figures(run_dir: str | Path) -> list[Path]:
    """``prompt_before.png`` / ``prompt_after.png`` (from ``init.pt`` and ``best.pt``) and ``prompt_curves.png``."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.exists():
        return []
    saved = RunFolder(run_dir).config
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


def _smoke(saved: dict[str, Any]) -> bool:
    return saved.get("arch") == TINY_ARCH or bool(saved.get("synthetic_data"))


def prompt_images(saved: dict[str, Any], state: dict[str, Any]) -> list[tuple[str, Any]]:
    """Visual prompt -> two (3, H, W) images: the course's clamp(1 + v) and the pixel-space change on mid-grey."""
    prompter = build_prompter(saved["method"], saved["prompt_size"], saved["image_size"], "zeros")
    prompter.load_state_dict(state)
    with torch.no_grad():
        v = prompter.prompt(location=(0, 0)) if isinstance(prompter, RandomPatchPrompter) else prompter.prompt()
        v = v[0]  # (3, H, W), normalised units
        std = torch.tensor(OPENAI_STD).view(3, 1, 1)
    return [("course view: clamp(1 + v, 0, 1)", (1 + v).clamp(0, 1)),
            ("pixel change: clamp(0.5 + v·std, 0, 1)", (0.5 + v * std).clamp(0, 1))]


def plot_prompt(saved: dict[str, Any], ckpt: Path, out: Path, when: str) -> Path:
    """One prompt checkpoint as a figure: the deep prompt tokens as a heat map, a visual prompt as two images."""
    state = load_checkpoint(ckpt)["modules"]["prompt"]
    if saved["prompt_type"] == "deep_prompt":
        tokens = state["deep_prompt"][:, 0].float()  # (P, width)
        fig, ax = new_figure(figsize=(7, 1.2 + 0.35 * tokens.shape[0]))
        im = ax.imshow(tokens.numpy(), aspect="auto", cmap="coolwarm")
        fig.colorbar(im, ax=ax)
        ax.set_xlabel("feature")
        ax.set_ylabel("token")
        ax.set_title(f"deep prompt ({tokens.shape[0]} tokens before block {saved['injection_layer']}), {when}")
    else:
        shape = f"{saved['method']} {saved['prompt_size']} px"
        if saved["method"] == "random_patch":
            when += "\n(drawn at the top-left; placed at random at every forward pass)"
        fig, axes = new_figure(1, 2, figsize=(7, 3.9))
        for ax, (title, img) in zip(axes, prompt_images(saved, state), strict=True):
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"visual prompt: {shape}, {when}", fontsize=10)
    if _smoke(saved):
        fig.text(0.01, 0.01, "smoke run: tiny random CLIP, synthetic data", fontsize=7, color="gray")
    fig.tight_layout()
    return save_figure(fig, out, dpi=90)


def plot_curves(run_dir: Path, saved: dict[str, Any]) -> Path | None:
    """Training loss and validation top-1 per epoch, from ``metrics.jsonl``."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [(r["epoch"], r["loss"]) for r in records if r["split"] == "train" and "loss" in r]
    val = [(r["epoch"], r["top1"]) for r in records if r["split"] == "val" and "top1" in r]
    if not train:
        return None
    fig, ax = new_figure(figsize=(5.5, 3.4))
    ax.plot(*zip(*train, strict=True), marker=".", color="C0", label="train loss")
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
    ax.set_title(f"{what}, {saved['dataset']}{' (smoke run)' if _smoke(saved) else ''}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, run_dir / "figures" / "prompt_curves.png", dpi=100)
