"""Report of a mini-clip run, from its folder alone: the numbers of its sub-runs (zero-shot on the original and the
shifted Fashion-MNIST test set, each prompt learnt on the shifted data, clean and noisy) in one table and one figure,
the course's robustness table over the same sub-runs, and the mini-CLIP's training curve.

``RUN/runs/zeroshot-original[-noisy]``, ``RUN/runs/zeroshot-shifted[-noisy]`` are clip-zeroshot runs;
``RUN/runs/prompt-<method>-<size or layer>`` are clip-prompt runs.  These are the mini-CLIP's Fashion-MNIST numbers,
not the course's CIFAR numbers with OpenAI's ViT-B/32 (said in the report).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dl1.report import markdown, new_figure, save_figure
from dl1.report import summary as keys
from dl1.report.robustness import REF_DEEP, REF_VISUAL, robustness_rows, robustness_table
from dl1.report.robustness_figures import plot_deep_prompts
from dl1.report.runs import read_run
from dl1.report.summary import flatten
from dl1.run.files import make_folder, read_jsonl, write_file, write_text_atomic
from dl1.run.reader import RunFolder

METHOD_LABELS = {"padding": "padding", "fixed_patch": "fixed patch", "random_patch": "random patch",
                 "deep_prompt": "deep prompt, layer"}
CHANCE = 10.0  # percent: 10 balanced classes
TEST_IMAGES = 10_000  # Fashion-MNIST's test set
NOT_COURSE = ("These are dl1's mini-CLIP numbers on Fashion-MNIST (a model trained here in minutes on a CPU), not the "
              "course's CIFAR-10/100 numbers with OpenAI's ViT-B/32.")


def _top1(summary: dict[str, Any], key: str) -> float | None:
    value = flatten(summary).get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def clean_noisy(clean: float | None, noisy: float | None) -> str:
    """``"85.61 / 85.50"``: clean and noisy test top-1 in one cell (``—`` for one not measured)."""
    return " / ".join("—" if v is None else f"{v:.2f}" for v in (clean, noisy))


def _label(method: str, value: int) -> str:
    extra = " (whole image)" if method == "fixed_patch" and value == 28 else ""
    return f"{METHOD_LABELS.get(method, method)} {value}{extra}"


def _prompt_runs(run_dir: Path) -> list[tuple[str, int, Path]]:
    """``(method, size or layer, folder)`` of the prompt sub-runs, in the order of the run's ``--prompts``."""
    order = [str(p).replace(":", "-") for p in RunFolder(run_dir).config.get("prompts", [])]
    out = []
    for folder in (run_dir / "runs").glob("prompt-*"):
        method, _, value = folder.name.removeprefix("prompt-").rpartition("-")
        if value.isdigit():
            out.append((method, int(value), folder))
    rank = {name: i for i, name in enumerate(order)}
    return sorted(out, key=lambda t: (rank.get(f"{t[0]}-{t[1]}", len(rank)), t[2].name))


def pipeline_numbers(run_dir: str | Path) -> dict[str, Any]:
    """The summary sections of a mini-clip run: ``zeroshot`` (``original``/``shifted`` x ``clean``/``noisy`` test
    top-1, %, and both as one text ``clean_noisy``) and ``prompts`` (per prompt, e.g. ``padding_4``: the same, the
    noise drop, the gain over zero-shot on the shifted data, the trainable parameters, the test images scored and the
    sub-run)."""
    runs = Path(run_dir) / "runs"
    zeroshot: dict[str, dict[str, Any]] = {}
    for name in ("original", "shifted"):
        zeroshot[name] = {}
        for kind, suffix in (("clean", ""), ("noisy", "-noisy")):
            folder = runs / f"zeroshot-{name}{suffix}"
            if folder.is_dir():
                zeroshot[name][kind] = _top1(RunFolder(folder).summary, keys.TEST_TOP1)
        zeroshot[name]["clean_noisy"] = clean_noisy(zeroshot[name].get("clean"), zeroshot[name].get("noisy"))
    base = zeroshot.get("shifted", {}).get("clean")
    prompts = {}
    for method, value, folder in _prompt_runs(Path(run_dir)):
        summary = RunFolder(folder).summary
        clean, noisy = _top1(summary, keys.RESULTS_TEST_TOP1), _top1(summary, keys.RESULTS_TEST_NOISY_TOP1)
        prompts[f"{method}_{value}"] = {
            "label": _label(method, value), "clean": clean, "noisy": noisy, "clean_noisy": clean_noisy(clean, noisy),
            "drop": None if clean is None or noisy is None else clean - noisy,
            "gain_over_zeroshot": None if clean is None or base is None else clean - base,
            "val": _top1(summary, keys.RESULTS_VAL_TOP1), "trainable": flatten(summary).get(keys.PARAMS_TRAINABLE),
            "test_images": flatten(summary).get(keys.RESULTS_TEST_N), "run": folder.name}
    return {"zeroshot": zeroshot, "prompts": prompts}


def _cell(v: Any, fmt: str = "{:.2f}") -> str:
    return "—" if v is None else fmt.format(v) if isinstance(v, int | float) else markdown.cell(v)


def method_table(numbers: dict[str, Any], shift: str) -> str:
    """One Markdown table: zero-shot on the original and the shifted test set, then every prompt (shifted)."""
    shift = markdown.cell(shift)  # from config.json
    lines = [f"| model | test set | trainable parameters | clean top-1 (%) | noisy top-1 (%) | gain over zero-shot "
             f"on {shift} (points) |", "|---|---|---:|---:|---:|---:|"]
    for name, values in numbers["zeroshot"].items():
        test = "original" if name == "original" else shift
        lines.append(f"| zero-shot (frozen mini-CLIP) | {test} | 0 | {_cell(values.get('clean'))} | "
                     f"{_cell(values.get('noisy'))} | — |")
    partial = []
    for p in numbers["prompts"].values():
        mark = ""
        if isinstance(p.get("test_images"), int) and p["test_images"] < TEST_IMAGES:
            mark = " *"
            partial.append(p["label"])
        lines.append(f"| {markdown.cell(p['label'])}{mark} | {shift} | {_cell(p['trainable'], '{:,}')} | "
                     f"{_cell(p['clean'])} | {_cell(p['noisy'])} | {_cell(p['gain_over_zeroshot'], '{:+.2f}')} |")
    if partial:
        lines += ["", f"\\* scored on the first --prompt_batches batches of the {TEST_IMAGES:,} test images only "
                      "(--prompt_batches x --prompt_batch_size is below the test set)."]
    return "\n".join(lines) + "\n"


def plot_methods(numbers: dict[str, Any], shift: str, path: Path) -> Path | None:
    """Grouped bars: zero-shot (original, shifted) and every prompt (shifted), clean and noisy test top-1, with the
    chance level."""
    labels = ["zero-shot\noriginal", f"zero-shot\n{shift}"]
    clean = [numbers["zeroshot"].get(k, {}).get("clean") for k in ("original", "shifted")]
    noisy = [numbers["zeroshot"].get(k, {}).get("noisy") for k in ("original", "shifted")]
    for p in numbers["prompts"].values():
        labels.append(p["label"].replace(" (whole image)", "\n(whole image)"))
        clean.append(p["clean"])
        noisy.append(p["noisy"])
    if all(v is None for v in clean):
        return None
    fig, ax = new_figure(figsize=(1.6 + 1.25 * len(labels), 4.4))
    x = np.arange(len(labels))
    for j, (vals, label, style) in enumerate(((clean, "clean test", {"color": "C0"}),
                                              (noisy, "noisy test (N(0, 0.1))",
                                               {"color": "C1", "hatch": "//", "edgecolor": "white"}))):
        if all(v is None for v in vals):
            continue
        pos = x + (j - 0.5) * 0.38
        ax.bar(pos, [v or 0.0 for v in vals], 0.38, label=label, **style)
        for p, v in zip(pos, vals, strict=True):
            ax.annotate("n/a" if v is None else f"{v:.1f}", (p, v or 0.0), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
    ax.axhline(CHANCE, color="gray", linestyle=":", linewidth=1.2, label="chance (10 classes)")
    ax.axvline(1.5, color="black", linewidth=0.8, alpha=0.4)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"mini-CLIP on Fashion-MNIST: zero-shot, and prompts learnt on the {shift} images", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training(run_dir: Path, path: Path) -> Path | None:
    """The mini-CLIP's contrastive loss and validation zero-shot top-1 per epoch (none for a cached model)."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    train = [(r["epoch"], r["loss"]) for r in records if r.get("split") == "train" and "loss" in r]
    val = [(r["epoch"], r["top1"]) for r in records if r.get("split") == "val" and "top1" in r]
    if not train:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, ax = new_figure(figsize=(5.5, 3.4))
    ax.plot(*zip(*train, strict=True), marker=".", color="C0")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("contrastive loss (train)", color="C0")
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), marker="o", color="C1")
        ax2.set_ylabel("zero-shot top-1 (%, validation)", color="C1")
    ax.set_title("mini-CLIP training on Fashion-MNIST captions", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def _copy_predictions(run_dir: Path, name: str) -> Path | None:
    """The zero-shot prediction figure of sub-run ``zeroshot-<name>`` (the same 8 test images, original or shifted)
    as ``figures/zeroshot_<name>.png`` of the mini-clip run."""
    found = sorted((run_dir / "runs" / f"zeroshot-{name}" / "figures").glob("*.png"))
    if not found:
        return None
    target = run_dir / "figures" / f"zeroshot_{name}.png"
    make_folder(target.parent, run_dir)
    with found[0].open("rb") as src:  # atomically, never through a link at the target
        return write_file(target, lambda dst: shutil.copyfileobj(src, dst), root=run_dir)


def make_report(run_dir: str | Path) -> list[Path]:
    """``report.md`` and the figures of a mini-clip run: ``mini_clip_methods.png`` (every number in one figure),
    ``mini_clip_training.png`` (the training curve), ``zeroshot_original.png`` / ``zeroshot_shifted.png`` (the
    same 8 test images with the frozen mini-CLIP's top-5 predictions, before and after the shift) and, with deep
    prompts, the course's ``deep_prompts.png`` (top-1 against the injection layer)."""
    run_dir = Path(run_dir)
    config, summary = RunFolder(run_dir).config, RunFolder(run_dir).summary
    shift = str(config.get("shift", "shifted"))
    numbers = pipeline_numbers(run_dir)
    figures = [p for p in (plot_methods(numbers, shift, run_dir / "figures" / "mini_clip_methods.png"),
                           plot_training(run_dir, run_dir / "figures" / "mini_clip_training.png"),
                           *(_copy_predictions(run_dir, name) for name in ("original", "shifted"))) if p]
    subruns = [read_run(d) for d in sorted((run_dir / "runs").glob("*")) if (d / "config.json").exists()]
    rows = robustness_rows(subruns)
    deep = plot_deep_prompts(rows, run_dir / "figures" / "deep_prompts.png")  # the course's figure: top-1 by layer
    figures += [deep] if deep else []
    training = summary.get("training", {})
    argv = (run_dir / "argv.txt").read_text(errors="replace").strip().splitlines() if (run_dir / "argv.txt").exists() \
        else []
    how = "reused from the cache" if training.get("cached") else (
        f"trained {training.get('epochs_run', '?')} epochs ({training.get('steps', '?')} steps, "
        f"{_cell(training.get('train_time_s'), '{:.0f}')} s) on {_cell(training.get('images'), '{:,}')} images; "
        f"best validation zero-shot top-1 {_cell(training.get('val_zeroshot_top1'))} % (epoch "
        f"{training.get('best_epoch', '?')})")
    md = [f"# mini-clip: {markdown.cell(run_dir.name)}", "", f"Command: {markdown.command(argv[-1] if argv else None)}",
          "", NOT_COURSE, "", f"The mini-CLIP ({markdown.cell(summary.get('weights', '?'))}): {how}.", "",
          f"## Zero-shot and prompts (shift: {markdown.cell(shift)})", "", method_table(numbers, shift)]
    md += [markdown.image(p.stem, f"figures/{p.name}") for p in figures] + [""]
    if rows:
        md += ["## Robustness to noise (the course's table, over the sub-runs)", "", robustness_table(rows)]
    md += ["Sub-runs (each a complete clip-zeroshot / clip-prompt run folder): "
           + ", ".join(markdown.code(f"runs/{d['dir'].name}") for d in subruns), ""]
    write_text_atomic(run_dir / "report.md", "\n".join(md) + "\n", root=run_dir)
    return figures


def _reference(method: str, value: int) -> str:
    """The reference solution's CIFAR-10 number for the same kind of prompt (for scale only: another task, OpenAI's
    ViT-B/32 at 224 px): padding 4 of 28 px is the course's padding 30 of 224 px, a 28 px patch its 224 px one."""
    course = {("padding", 4): ("padding", 30), ("fixed_patch", 1): ("fixed_patch", 1),
              ("fixed_patch", 28): ("fixed_patch", 224)}.get((method, value))
    if method == "deep_prompt" and value in REF_DEEP["cifar10"]:
        ref = f"{REF_DEEP['cifar10'][value]:.2f} / —"
    elif course is not None and ("cifar10", *course) in REF_VISUAL:
        ref = clean_noisy(*REF_VISUAL[("cifar10", *course)]) if course[1] != 224 else \
            f"{REF_VISUAL[('cifar10', *course)][0]} / —"
        method, value = course
    else:
        return "— (no reference for this prompt)"
    what = f"layer {value}" if method == "deep_prompt" else f"{method.replace('_', ' ')} {value}"
    return f"{ref} (CIFAR-10, ViT-B/32, {what}; reference solution: another task, for scale only)"


def tour_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The tour's rows ``(label, ours, reference)`` of a mini-clip summary, the robustness table in short: zero-shot
    on the original and the shifted test set, then every prompt, each ``clean / noisy`` test top-1 (%)."""
    shift = summary.get("shift", "shifted")
    zs = summary.get("zeroshot", {})
    rows = [("zero-shot, original test: clean / noisy top-1 (%)", zs.get("original", {}).get("clean_noisy", "—"),
             "88.92 / — (CIFAR-10, ViT-B/32; reference solution: another task, for scale only)"),
            (f"zero-shot, {shift} test: clean / noisy top-1 (%)", zs.get("shifted", {}).get("clean_noisy", "—"),
             f"chance: {CHANCE:.0f}")]
    for key, p in (summary.get("prompts") or {}).items():
        method, _, value = key.rpartition("_")
        gain = p.get("gain_over_zeroshot")
        ours = p.get("clean_noisy", "—") + ("" if gain is None else f" ({gain:+.1f} over zero-shot)")
        rows.append((f"{p.get('label', key)}, learnt on {shift}: clean / noisy top-1 (%)", ours,
                     _reference(method, int(value)) if value.isdigit() else "—"))
    return rows
