"""The course's comparisons of several runs, computed from their folders alone (what ``dl1 report RUN...`` adds).

* **Robustness table** (Q2.4): one row per method and dataset: CLIP zero-shot (a clean and a ``--test_noise`` run
  paired), the ResNet-18 linear probe, visual prompts (padding, fixed patch, random patch) and deep prompts (each
  injection layer), with clean and noisy test top-1, the drop, and the reference solution's numbers where it ran the
  same setting (CLIP ViT-B/32, real data, padding 30, fixed patch 1, deep prompts of 4 tokens, ...).
* **Visual-prompt figure** (Q2.2/Q2.4): grouped bars, one panel per dataset, clean and noisy bars per method.
* **Deep-prompt figure** (Q2.3/Q2.4): top-1 against the injection layer, one line per dataset and clean / noisy.
* **Cross-dataset table** (Q2.5): the 110-way top-1 of every learnt prompt, in one table.

A clip-prompt run that evaluated its test set with noise gives both numbers; so does an ``--evaluate --test_noise``
run of a checkpoint, which then replaces the row of the training run whose checkpoint it evaluated.  Rows of smoke runs
(tiny random CLIP or synthetic data) say so: their numbers mean nothing.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dl1.hub.clip import TINY_ARCH
from dl1.report import new_figure, save_figure
from dl1.report.runs import flatten

# -- the reference solution's numbers (test top-1 in %, Snellius GPUs): clean, noisy; None where it reported none --
REF_ZEROSHOT = {("cifar10", "train"): 88.73, ("cifar10", "test"): 88.92, ("cifar100", "train"): 63.57,
                ("cifar100", "test"): 63.13}
REF_RESNET = {("cifar100", "none"): (58.49, 25.54), ("cifar100", "auto_augment"): (55.20, 33.94),
              ("cifar100", "random_hflip"): (59.52, 25.14), ("cifar10", "none"): (80.70, 45.85),
              ("cifar10", "auto_augment"): (76.79, 57.27), ("cifar10", "random_hflip"): (81.04, 46.77)}
REF_VISUAL = {("cifar10", "fixed_patch", 1): (89.54, 87.91), ("cifar10", "padding", 30): (93.02, 88.69),
              ("cifar100", "fixed_patch", 1): (64.42, 60.54), ("cifar100", "padding", 30): (72.28, 63.59),
              ("cifar10", "fixed_patch", 224): ("≈ 82.4–83.0", None),
              ("cifar100", "fixed_patch", 224): ("≈ 52.0–52.5", None)}
REF_DEEP = {"cifar10": dict(zip((0, 2, 4, 6, 8, 10), (96.37, 96.14, 96.09, 95.84, 95.22, 94.31), strict=True)),
            "cifar100": dict(zip((0, 2, 4, 6, 8, 10), (79.42, 79.72, 79.79, 77.74, 75.00, 72.43), strict=True))}
REF_DEEP_NOISY = {"cifar100": (66.0, 71.0)}  # reported as a range over the layers
REF_CROSS = {("padding", 30, "cifar10"): 67.58, ("padding", 30, "cifar100"): 70.43,
             ("fixed_patch", 1, "cifar10"): 68.83, ("fixed_patch", 1, "cifar100"): 68.83,
             ("deep", 0, "cifar10"): 76.66, ("deep", 0, "cifar100"): 76.67,
             ("deep", 2, "cifar10"): 76.28, ("deep", 2, "cifar100"): 77.81}
REF_ARCHS = ("ViT-B/32", "ViT-B-32")  # the reference solution's CLIP
VISUAL_ORDER = ("padding", "fixed_patch", "random_patch")
FAMILY_ORDER = ("zeroshot", "resnet", "visual_prompt", "deep_prompt")
DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "fashion-mnist": "Fashion-MNIST",
                  "fashion-mnist-inverted": "Fashion-MNIST (inverted)", "fashion-mnist-rot90": "Fashion-MNIST (rot90)"}
SMOKE_NOTE = "smoke runs (tiny random CLIP or synthetic data): the numbers mean nothing"


@dataclass
class Row:
    """One line of the robustness table (test top-1 in %)."""

    family: str  # zeroshot | resnet | visual_prompt | deep_prompt
    method: str  # the table's label, e.g. "visual prompt: padding 30"
    dataset: str
    clean: float | None
    noisy: float | None
    ref_clean: float | str | None = None
    ref_noisy: float | str | None = None
    runs: list[str] = field(default_factory=list)
    smoke: bool = False
    variant: str = ""  # visual prompts: the figure's bar label ("padding 30"); deep prompts: ""
    layer: int | None = None  # deep prompts: the injection layer
    arch: str = ""
    image_size: int | None = None
    weights: str | None = None  # the CLIP weights file (the mini-CLIP's limits are in the config beside it)
    sort: tuple = ()

    @property
    def drop(self) -> float | None:
        return None if self.clean is None or self.noisy is None else self.clean - self.noisy

    @property
    def ref_drop(self) -> float | None:
        numbers = isinstance(self.ref_clean, float) and isinstance(self.ref_noisy, float)
        return self.ref_clean - self.ref_noisy if numbers else None


def _num(flat: dict[str, Any], key: str, scale: float = 1.0) -> float | None:
    v = flat.get(key)
    return float(v) * scale if isinstance(v, int | float) and not isinstance(v, bool) else None


def _is_ref_arch(arch: Any) -> bool:
    return arch in REF_ARCHS


# -- rows from run folders ---------------------------------------------------------------------------------------------
def prompt_row(run: dict[str, Any]) -> Row | None:
    """A clip-prompt run (training, or ``--evaluate``) -> its row; None without a test top-1."""
    cfg, flat = run["config"], flatten(run["summary"])
    clean, noisy = _num(flat, "results.test.top1"), _num(flat, "results.test_noisy.top1")
    if clean is None:
        return None
    dataset = flat.get("data.dataset") or cfg.get("dataset") or "?"
    arch = flat.get("clip.arch") or cfg.get("arch", "")
    smoke = arch == TINY_ARCH or bool(flat.get("clip.random_weights") or flat.get("data.synthetic")
                                     or cfg.get("synthetic_data"))
    transfer = flat.get("transfer.trained_on.dataset")
    reference = _is_ref_arch(arch) and not smoke and not flat.get("transfer.evaluated_on.text_prompt_template") \
        and not transfer
    name = run["dir"].name + (f" (evaluates {run['evaluates']})" if run.get("evaluates") else "")
    row = Row(cfg.get("prompt_type", "?"), "", dataset, clean, noisy, runs=[name], smoke=smoke, arch=arch,
              image_size=cfg.get("image_size"), weights=cfg.get("clip_weights"))
    if row.family == "deep_prompt":
        layer, tokens = cfg.get("injection_layer"), cfg.get("prompt_num")
        row.method, row.layer = f"deep prompt: layer {layer} ({tokens} tokens)", layer
        row.sort = (layer if isinstance(layer, int) else 99, tokens or 0)
        if reference and tokens == 4:
            row.ref_clean = REF_DEEP.get(dataset, {}).get(layer)
            band = REF_DEEP_NOISY.get(dataset)
            row.ref_noisy = f"≈ {band[0]:.0f}–{band[1]:.0f}" if band else None
    else:
        method, size = cfg.get("method", "?"), cfg.get("prompt_size")
        row.variant = f"{str(method).replace('_', ' ')} {size}"
        row.method = f"visual prompt: {row.variant}"
        row.sort = (VISUAL_ORDER.index(method) if method in VISUAL_ORDER else 9, size or 0)
        if reference:
            row.ref_clean, row.ref_noisy = REF_VISUAL.get((dataset, method, size), (None, None))
    if transfer:
        row.method += f" (trained on {transfer})"
    return row


def resnet_row(run: dict[str, Any]) -> Row | None:
    """A resnet-transfer run -> its row (accuracies in [0, 1] become %)."""
    cfg, flat = run["config"], flatten(run["summary"])
    clean = _num(flat, "test.acc", 100.0)
    if clean is None:
        return None
    aug = cfg.get("augmentation_name") or "none"
    dataset = cfg.get("dataset", "?")
    smoke = dataset == "synthetic" or cfg.get("weights") == "random"
    row = Row("resnet", "ResNet-18 linear probe" + ("" if aug == "none" else f" + {aug}"),
              "cifar10" if dataset == "synthetic" else dataset, clean, _num(flat, "test_noise.acc", 100.0),
              runs=[run["dir"].name], smoke=smoke, sort=(aug != "none", aug))
    if not smoke and cfg.get("weights") == "imagenet":
        row.ref_clean, row.ref_noisy = REF_RESNET.get((dataset, aug), (None, None))
    return row


def zeroshot_rows(runs: list[dict[str, Any]]) -> list[Row]:
    """clip-zeroshot runs -> one row per setting, its clean and noisy (``--test_noise``) runs paired."""
    groups: dict[tuple, Row] = {}
    for run in runs:
        cfg, flat = run["config"], flatten(run["summary"])
        split = cfg.get("split", "test")
        top1 = _num(flat, f"{split}.top1")
        if top1 is None:  # a --class_names run: a figure, no accuracy
            continue
        prompt = cfg.get("ensemble") or cfg.get("prompt_template", "")
        arch = cfg.get("arch", "")
        smoke = arch == TINY_ARCH or bool(flat.get("model.random_weights") or cfg.get("synthetic_data"))
        key = (cfg.get("dataset"), split, arch, prompt, smoke)
        if key not in groups:
            course = prompt == "This is a photo of a {}" and not cfg.get("ensemble")
            label = f"CLIP zero-shot ({split} split" + ("" if course else f", {prompt!r}") + ")"
            groups[key] = Row("zeroshot", label, cfg.get("dataset", "?"), None, None, smoke=smoke, arch=arch,
                              sort=(split != "test", prompt))
            if _is_ref_arch(arch) and course and not smoke:
                groups[key].ref_clean = REF_ZEROSHOT.get((cfg.get("dataset"), split))
        row = groups[key]
        setattr(row, "noisy" if cfg.get("test_noise") else "clean", top1)
        row.runs.append(run["dir"].name)
    return list(groups.values())


def robustness_rows(runs: list[dict[str, Any]]) -> list[Row]:
    """The table's rows, in the course's order (zero-shot, ResNet, visual prompts, deep prompts; then dataset)."""
    rows = zeroshot_rows([r for r in runs if r["config"].get("experiment") == "clip-zeroshot"])
    evaluated = {}  # training run folder -> the evaluation of its checkpoint
    for run in runs:
        experiment = run["config"].get("experiment")
        if experiment == "resnet-transfer":
            rows.append(resnet_row(run))
        elif experiment == "clip-prompt" and run["config"].get("evaluate"):
            ckpt = run["summary"].get("checkpoint")
            if ckpt and not run["summary"].get("transfer"):
                evaluated[Path(ckpt).resolve().parent.parent] = run
                run["evaluates"] = Path(ckpt).parent.parent.name
    for run in runs:
        if run["config"].get("experiment") != "clip-prompt":
            continue
        other = evaluated.get(Path(run["dir"]).resolve())
        if other is not None and not run["config"].get("evaluate"):
            if "results.test_noisy.top1" in flatten(other["summary"]):
                continue  # its checkpoint's evaluation (with noise) stands for it
        rows.append(prompt_row(run))
    rows = [r for r in rows if r is not None]
    rows.sort(key=lambda r: (FAMILY_ORDER.index(r.family) if r.family in FAMILY_ORDER else 9, r.sort,
                             r.dataset, r.method))
    return rows


def _cell(v: Any, digits: int = 2) -> str:
    if v is None:
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def robustness_table(rows: list[Row]) -> str:
    """The Markdown table (and its notes) of :func:`robustness_rows`."""
    lines = ["| method | dataset | clean top-1 (%) | noisy top-1 (%) | drop (points) | reference clean | "
             "reference noisy | reference drop | run |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        data = DATASET_LABELS.get(r.dataset, r.dataset) + (" (smoke)" if r.smoke else "")
        lines.append(f"| {r.method} | {data} | {_cell(r.clean)} | {_cell(r.noisy)} | {_cell(r.drop)} | "
                     f"{_cell(r.ref_clean)} | {_cell(r.ref_noisy)} | {_cell(r.ref_drop)} | {', '.join(r.runs)} |")
    notes = ["", "Test top-1 in %; noisy: N(0, 0.1) added after preprocessing; drop = clean − noisy. Reference: the "
             "reference solution's numbers (CLIP ViT-B/32, GPUs), shown only where it ran the same setting."]
    missing = [r for r in rows if r.noisy is None]
    if missing:
        notes.append(f"No noisy evaluation for {len(missing)} row(s): prompts: `dl1 run clip-prompt --evaluate "
                     f"--resume RUN/checkpoints/best.pt --test_noise`; zero-shot: the same run with `--test_noise`; "
                     f"ResNet-18: `dl1 run resnet-transfer ... --test_noise`.")
    if any(r.clean is None for r in rows):
        notes.append("A zero-shot setting with only a noisy run has no clean number: run it without --test_noise.")
    if any(r.smoke for r in rows):
        notes.append(f"(smoke): {SMOKE_NOTE}.")
    return "\n".join(lines + notes) + "\n"


# -- cross-dataset (110-way) -------------------------------------------------------------------------------------------
def cross_table(runs: list[dict[str, Any]]) -> str | None:
    """The 110-way top-1 of every clip-cross-dataset run in one table; None without such runs."""
    rows = []
    for run in (r for r in runs if r["config"].get("experiment") == "clip-cross-dataset"):
        flat = flatten(run["summary"])
        total = _num(flat, "results.total.top1")
        if total is None:
            continue
        kind, trained = flat.get("prompt.prompt_type"), flat.get("trained_on", "?")
        if kind == "deep_prompt":
            layer = flat.get("prompt.injection_layer")
            label, key = f"deep prompt: layer {layer} ({flat.get('prompt.prompt_num')} tokens)", ("deep", layer)
            ok = flat.get("prompt.prompt_num") == 4
        else:
            method, size = flat.get("prompt.method"), flat.get("prompt.prompt_size")
            label, key, ok = f"visual prompt: {str(method).replace('_', ' ')} {size}", (method, size), True
        smoke = flat.get("clip.arch") == TINY_ARCH or bool(flat.get("synthetic") or flat.get("clip.random_weights"))
        ref = REF_CROSS.get((*key, trained)) if ok and not smoke and _is_ref_arch(flat.get("clip.arch")) else None
        noise = " + noise" if run["config"].get("test_noise") else ""
        rows.append(((kind != "visual_prompt", key[0] != "padding", str(key), trained),
                     f"| {label}{noise} | {DATASET_LABELS.get(trained, trained)}{' (smoke)' if smoke else ''} | "
                     f"{_cell(_num(flat, 'results.cifar10.top1'))} | {_cell(_num(flat, 'results.cifar100.top1'))} | "
                     f"{_cell(total)} | {_cell(ref)} | {run['dir'].name} |"))
    if not rows:
        return None
    lines = ["| prompt | learnt on | CIFAR-10 test (of 110 classes) | CIFAR-100 test (of 110 classes) | 110-way top-1 "
             "(%) | reference | run |", "|---|---|---:|---:|---:|---:|---|"]
    lines += [text for _, text in sorted(rows, key=lambda t: t[0])]
    lines += ["", "The CIFAR-10 and CIFAR-100 test sets as one 110-class problem; the total is sample-weighted."]
    return "\n".join(lines) + "\n"


# -- figures -----------------------------------------------------------------------------------------------------------
def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _smoke_mark(fig, rows: list[Row]) -> None:
    if any(r.smoke for r in rows):
        fig.text(0.01, 0.01, SMOKE_NOTE, fontsize=7, color="gray")


def plot_visual_prompts(rows: list[Row], path: Path) -> Path | None:
    """Grouped bars: one panel per dataset, per visual-prompt method a clean and a noisy bar (runs of the same
    method and dataset averaged); the zero-shot baseline as a dashed line and the reference solution as black ticks
    where they exist."""
    import numpy as np

    vp = [r for r in rows if r.family == "visual_prompt"]
    if not vp:
        return None
    datasets = sorted({r.dataset for r in vp}, key=lambda d: (d not in DATASET_LABELS, d))
    variants = [v for _, v in sorted({(r.sort, r.variant) for r in vp})]
    fig, axes = new_figure(1, len(datasets), figsize=(1.5 + 1.6 * max(2, len(variants)) * len(datasets), 4.4),
                           squeeze=False, sharey=True)
    handles: dict[str, Any] = {}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        x = np.arange(len(variants))
        for j, (attr, label, style) in enumerate((("clean", "clean test", {"color": "C0"}),
                                                  ("noisy", "noisy test (N(0, 0.1))",
                                                   {"color": "C1", "hatch": "//", "edgecolor": "white"}))):
            vals = [_mean([getattr(r, attr) for r in vp if r.dataset == dataset and r.variant == v]) for v in variants]
            pos = x + (j - 0.5) * 0.38
            bars = ax.bar(pos, [v if v is not None else 0.0 for v in vals], 0.38, label=label, **style)
            handles[label] = bars
            for p, v in zip(pos, vals, strict=True):
                ax.annotate("n/a" if v is None else f"{v:.1f}", (p, v or 0.0), ha="center", va="bottom", fontsize=7,
                            xytext=(0, 2), textcoords="offset points")
            refs = [next((getattr(r, f"ref_{attr}") for r in vp if r.dataset == dataset and r.variant == v
                          and isinstance(getattr(r, f"ref_{attr}"), float)), None) for v in variants]
            if any(ref is not None for ref in refs):
                pts = [(p, ref) for p, ref in zip(pos, refs, strict=True) if ref is not None]
                handles["reference solution"] = ax.scatter(*zip(*pts, strict=True), marker="_", s=400, linewidths=2.5,
                                                           color="black", zorder=3, label="reference solution")
        base = _mean([r.clean for r in rows if r.family == "zeroshot" and r.dataset == dataset
                      and r.method.startswith("CLIP zero-shot (test")])
        if base is not None:
            handles["zero-shot CLIP (clean test)"] = ax.axhline(base, color="gray", linestyle="--", linewidth=1.2,
                                                                 label="zero-shot CLIP (clean test)")
        ax.set_xticks(x, variants)
        ax.set_title(DATASET_LABELS.get(dataset, dataset) + (" (smoke)" if any(r.smoke for r in vp
                                                                              if r.dataset == dataset) else ""))
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test top-1 (%)")
    fig.suptitle("Visual prompts on frozen CLIP: clean vs noisy test top-1", fontsize=11)
    order = [k for k in ("clean test", "noisy test (N(0, 0.1))", "reference solution", "zero-shot CLIP (clean test)")
             if k in handles]
    fig.legend([handles[k] for k in order], order, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.04))
    _smoke_mark(fig, vp)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save_figure(fig, path)


def _blocks(rows: list[Row]) -> int | None:
    """Residual blocks of the runs' CLIP (the x axis runs over every block), from the architecture's name."""
    from dl1.errors import DL1Error
    from dl1.hub.clip import vision_limits

    try:
        counts = {vision_limits(r.arch, r.image_size or 224, r.weights)[1] for r in rows if r.arch}
    except DL1Error:
        return None
    counts.discard(None)
    return max(counts) if counts else None


def plot_deep_prompts(rows: list[Row], path: Path) -> Path | None:
    """Top-1 against the injection layer: per dataset a clean (solid) and a noisy (dashed) line, and the reference
    solution's clean numbers (dotted, crosses) where they exist; runs of the same layer and dataset averaged."""
    dp = [r for r in rows if r.family == "deep_prompt" and isinstance(r.layer, int)]
    if not dp:
        return None
    fig, ax = new_figure(figsize=(10, 4.6))
    datasets = sorted({r.dataset for r in dp}, key=lambda d: (d not in DATASET_LABELS, d))
    for i, dataset in enumerate(datasets):
        name = DATASET_LABELS.get(dataset, dataset)
        layers = sorted({r.layer for r in dp if r.dataset == dataset})
        for attr, style, marker in (("clean", "-", "o"), ("noisy", "--", "s")):
            pts = [(k, _mean([getattr(r, attr) for r in dp if r.dataset == dataset and r.layer == k])) for k in layers]
            pts = [(k, v) for k, v in pts if v is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), linestyle=style, marker=marker, color=f"C{i}",
                        label=f"{name}, {attr} test")
        ref = sorted({(r.layer, r.ref_clean) for r in dp if r.dataset == dataset and isinstance(r.ref_clean, float)})
        if ref:
            ax.plot(*zip(*ref, strict=True), linestyle=":", marker="x", color=f"C{i}", alpha=0.7,
                    label=f"{name}, clean, reference solution")
        band = REF_DEEP_NOISY.get(dataset)
        if band and any(isinstance(r.ref_noisy, str) for r in dp if r.dataset == dataset):
            ax.axhspan(*band, color=f"C{i}", alpha=0.12, label=f"{name}, noisy, reference solution "
                                                               f"(≈ {band[0]:.0f}–{band[1]:.0f} over the layers)")
    ys = [v for line in ax.get_lines() for v in line.get_ydata()]
    ys += [v for r in dp if isinstance(r.ref_noisy, str) for v in REF_DEEP_NOISY.get(r.dataset, ())]
    lo, hi = max(0.0, min(ys) - 3.0), min(101.0, max(ys) + 3.0)  # accuracies: never below 0 or far above 100
    if hi - lo < 10.0:
        lo = max(0.0, min(lo, hi - 10.0))
        hi = lo + 10.0
    ax.set_ylim(lo, hi)
    blocks = _blocks(dp)
    last = max(blocks - 1 if blocks else 0, max(r.layer for r in dp))
    ax.set_xticks(range(last + 1))
    ax.set_xlim(-0.5, last + 0.5)
    ax.set_xlabel("injection layer (prompt tokens appended before this residual block)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Deep prompts on frozen CLIP: top-1 against the injection layer", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _smoke_mark(fig, dp)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save_figure(fig, path)


# -- what dl1 report adds ----------------------------------------------------------------------------------------------
def course_sections(runs: list[dict[str, Any]], folder: Path) -> list[str]:
    """Markdown lines for the comparison file in ``folder``: the robustness table, the visual- and deep-prompt
    figures (written to ``folder/figures/``) and the cross-dataset table, each when the runs allow it."""
    out: list[str] = []
    rows = robustness_rows(runs)
    if rows:
        out += ["## Robustness to noise (clean vs noisy test top-1)", "", robustness_table(rows)]
        for name, title, plot in (("visual_prompts.png", "visual prompts", plot_visual_prompts),
                                  ("deep_prompts.png", "deep prompts by injection layer", plot_deep_prompts)):
            path = plot(rows, folder / "figures" / name)
            if path is not None:
                out += [f"![{title}](figures/{name})", ""]
    cross = cross_table(runs)
    if cross:
        out += ["## Cross-dataset evaluation (110 classes)", "", cross]
    return out
