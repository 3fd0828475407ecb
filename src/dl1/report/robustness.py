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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dl1.hub.clip import TINY_ARCH
from dl1.report import markdown
from dl1.report import summary as keys
from dl1.report.summary import flatten

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


def _headline(run: dict[str, Any], key: str, scale: float = 1.0) -> tuple[dict[str, Any], float | None]:
    """(flattened summary, its headline number): None for a run without a summary (it did not finish); a finished
    run without ``key`` is a :class:`~dl1.report.summary.SummaryKeyError` naming it, never a silently dropped row."""
    flat = flatten(run["summary"])
    if flat:
        keys.require(flat, key, f"{run['dir']}/summary.json")
    return flat, _num(flat, key, scale)


def _num(flat: dict[str, Any], key: str, scale: float = 1.0) -> float | None:
    v = flat.get(key)
    return float(v) * scale if isinstance(v, int | float) and not isinstance(v, bool) else None


def _is_ref_arch(arch: Any) -> bool:
    return arch in REF_ARCHS


# -- rows from run folders ---------------------------------------------------------------------------------------------
def prompt_row(run: dict[str, Any]) -> Row | None:
    """A clip-prompt run (training, or ``--evaluate``) -> its row; None without a test top-1."""
    cfg, (flat, clean) = run["config"], _headline(run, keys.RESULTS_TEST_TOP1)
    noisy = _num(flat, keys.RESULTS_TEST_NOISY_TOP1)
    if clean is None:
        return None
    dataset = flat.get(keys.DATA_DATASET) or cfg.get("dataset") or "?"
    arch = flat.get(keys.CLIP_ARCH) or cfg.get("arch", "")
    smoke = arch == TINY_ARCH or bool(flat.get(keys.CLIP_RANDOM_WEIGHTS) or flat.get(keys.DATA_SYNTHETIC)
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
    cfg, (flat, clean) = run["config"], _headline(run, keys.TEST_ACC, 100.0)
    if clean is None:
        return None
    aug = cfg.get("augmentation_name") or "none"
    dataset = cfg.get("dataset", "?")
    smoke = dataset == "synthetic" or cfg.get("weights") == "random"
    row = Row("resnet", "ResNet-18 linear probe" + ("" if aug == "none" else f" + {aug}"),
              "cifar10" if dataset == "synthetic" else dataset, clean, _num(flat, keys.TEST_NOISE_ACC, 100.0),
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
        smoke = arch == TINY_ARCH or bool(flat.get(keys.MODEL_RANDOM_WEIGHTS) or cfg.get("synthetic_data"))
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
            if keys.RESULTS_TEST_NOISY_TOP1 in flatten(other["summary"]):
                continue  # its checkpoint's evaluation (with noise) stands for it
        rows.append(prompt_row(run))
    rows = [r for r in rows if r is not None]
    rows.sort(key=lambda r: (FAMILY_ORDER.index(r.family) if r.family in FAMILY_ORDER else 9, r.sort,
                             r.dataset, r.method))
    return rows


def _cell(v: Any, digits: int = 2) -> str:
    """A table cell: a float with ``digits`` decimals, anything else escaped (names come from run folders)."""
    if v is None:
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else markdown.cell(v)


def robustness_table(rows: list[Row]) -> str:
    """The Markdown table (and its notes) of :func:`robustness_rows`."""
    lines = ["| method | dataset | clean top-1 (%) | noisy top-1 (%) | drop (points) | reference clean | "
             "reference noisy | reference drop | run |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        data = DATASET_LABELS.get(r.dataset, r.dataset) + (" (smoke)" if r.smoke else "")
        lines.append(f"| {_cell(r.method)} | {_cell(data)} | {_cell(r.clean)} | {_cell(r.noisy)} | "
                     f"{_cell(r.drop)} | {_cell(r.ref_clean)} | {_cell(r.ref_noisy)} | {_cell(r.ref_drop)} | "
                     f"{_cell(', '.join(r.runs))} |")
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
        flat, total = _headline(run, keys.RESULTS_TOTAL_TOP1)
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
        arch = flat.get(keys.CLIP_ARCH)
        smoke = arch == TINY_ARCH or bool(flat.get("synthetic") or flat.get(keys.CLIP_RANDOM_WEIGHTS))
        ref = REF_CROSS.get((*key, trained)) if ok and not smoke and _is_ref_arch(arch) else None
        noise = " + noise" if run["config"].get("test_noise") else ""
        rows.append(((kind != "visual_prompt", key[0] != "padding", str(key), trained),
                     f"| {_cell(label + noise)} | "
                     f"{_cell(str(DATASET_LABELS.get(trained, trained)) + (' (smoke)' if smoke else ''))} | "
                     f"{_cell(_num(flat, 'results.cifar10.top1'))} | {_cell(_num(flat, 'results.cifar100.top1'))} | "
                     f"{_cell(total)} | {_cell(ref)} | {_cell(run['dir'].name)} |"))
    if not rows:
        return None
    lines = ["| prompt | learnt on | CIFAR-10 test (of 110 classes) | CIFAR-100 test (of 110 classes) | 110-way top-1 "
             "(%) | reference | run |", "|---|---|---:|---:|---:|---:|---|"]
    lines += [text for _, text in sorted(rows, key=lambda t: t[0])]
    lines += ["", "The CIFAR-10 and CIFAR-100 test sets as one 110-class problem; the total is sample-weighted."]
    return "\n".join(lines) + "\n"
