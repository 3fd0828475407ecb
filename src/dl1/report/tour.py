"""The tour's report: ``report.md`` and ``report.html`` of a ``dl1 tour`` folder.

Contents with links to every part, the summary table (our number beside the reference, the time and the command of
each part, in both files), then per part its status, the command that reproduces it, a GPT's sample and its figures:
learning curves first, each figure once, each with a one-line caption saying what to look for.
"""

from __future__ import annotations

import fnmatch
import html
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from dl1.report import markdown


@dataclass(frozen=True)
class Shown:
    """Figures of a run shown in the tour: file names matching ``pattern``, all of them or only the first or the last
    (of a per-epoch series), each with a one-line caption saying what to look for."""

    pattern: str
    caption: str
    pick: str = "all"  # all | first | last


_CLASSIFICATION = [
    Shown("curves.png", "Learning curves: the training loss falls and validation accuracy rises; a growing gap between "
                        "training and validation accuracy is overfitting."),
    Shown("confusion_matrix.png", "Test confusion matrix (rows: true class): the diagonal is what is right; the bright "
                                  "off-diagonal cells are the classes mixed up (shirt, T-shirt, pullover and coat)."),
    Shown("f_beta.png", "Per-class F-β on the test set (β = 0.1 weighs precision, 10 recall): the low bars are the "
                        "classes the confusion matrix mixes up."),
]
FIGURES: dict[str, list[Shown]] = {
    "mlp-numpy": _CLASSIFICATION,
    "mlp-pytorch": _CLASSIFICATION,
    "vae": [
        Shown("vae_learning_curve.png", "Bits per dimension per epoch: validation should fall well below the dotted "
                                        "per-pixel baseline; the star is the test value of the best epoch."),
        Shown("vae_samples_epoch_*.png", "Samples before training: noise, the starting point.", "first"),
        Shown("vae_samples_epoch_*.png", "Samples from the prior after the last epoch: garment silhouettes (shirts, "
                                         "shoes, bags) instead of noise; longer training sharpens them.", "last"),
        Shown("vae_manifold.png", "The 2-D latent space decoded on a grid: neighbouring cells should turn smoothly "
                                  "from one kind of garment into another."),
    ],
    "aae": [
        Shown("aae_curves.png", "Losses per epoch: the reconstruction error falls; a discriminator accuracy near 0.5 "
                                "means it can no longer tell the codes from prior samples."),
        Shown("aae_reconstructions.png", "Test images (odd rows) above their reconstructions (even rows), before "
                                         "and during training: the reconstructions should sharpen."),
        Shown("aae_samples.png", "Decoded samples of the prior, before and during training: they look like "
                                 "garments once the codes follow N(0, I)."),
        Shown("aae_latent.png", "2-D test codes over prior samples: the classes should fill the prior's disc without "
                                "holes."),
    ],
    "gpt": [
        Shown("gpt_loss.png", "Training and validation loss per iteration (nats per character): validation tracking "
                              "training means no overfitting yet; compare with the reference in the table."),
    ],
    "gnn": [
        Shown("gnn_graphs.png", "The course's three graphs and their adjacency matrices: symmetric, one row per node."),
        Shown("gnn_walks.png", "A² and A³: entry (u, v) counts the walks of that length from u to v, equal to the "
                               "brute-force enumeration."),
        Shown("gnn_checks.png", "Every claim on random graphs: '=' bars must sit below the dashed rounding line, "
                                "'≠' bars far above it."),
        Shown("gnn_attention.png", "Self-attention as a GNN on the complete graph: relabelling the tokens moves the "
                                   "weights with them (right column zero) only without positional encodings."),
        Shown("gnn_graph_attention.png", "Attention masked to each graph: only edges (and self-loops) get weight; "
                                         "wider edges attend more."),
    ],
    "cnn-compare": [
        Shown("cnn_top1_vs_time.png", "ImageNet accuracy against time per image: the best models sit top-left."),
        Shown("cnn_time_vs_params.png", "Time per image against parameters: size alone does not set the speed "
                                        "(depth and memory traffic do)."),
        Shown("cnn_nograd_time.png", "Forward time with and without no_grad: no_grad saves the cost of keeping "
                                     "activations for backward."),
        Shown("cnn_nograd_memory.png", "Memory with and without no_grad: without it every activation is kept for "
                                       "the backward pass."),
    ],
    "resnet-transfer": [
        Shown("resnet_transfer_curves.png", "The linear probe's training loss and its training/validation accuracy "
                                            "per epoch: a probe on frozen features converges in a few epochs."),
    ],
    "clip-zeroshot": [
        Shown("*.png", "Eight test images with CLIP's five most probable classes: the true class should be on top."),
    ],
    "mini-clip": [
        Shown("mini_clip_methods.png", "Test top-1 of the mini-CLIP: zero-shot on the original and the shifted "
                                       "images (left), then each prompt learnt on the shifted images; clean and "
                                       "noisy bars side by side, the dotted line is chance."),
        Shown("zeroshot_original.png", "Zero-shot on 8 original test images: the true class (green) mostly on top."),
        Shown("zeroshot_shifted.png", "The same 8 images after the shift: the frozen mini-CLIP calls almost "
                                      "everything by one or two classes; this is what the prompts repair."),
        Shown("mini_clip_training.png", "The mini-CLIP's contrastive loss falls and its validation zero-shot top-1 "
                                        "rises per epoch (no curve when a cached model was reused)."),
    ],
    "clip-prompt": [
        Shown("prompt_curves.png", "Training loss and validation top-1 per epoch: the prompt alone should lift "
                                   "accuracy above zero-shot CLIP."),
        Shown("prompt_before.png", "The prompt before training: random values."),
        Shown("prompt_after.png", "The learnt prompt: structure in the pixels CLIP sees, not just noise."),
    ],
}
# per-epoch grids already shown inside a progress figure above (no figure twice)
INSIDE_OTHERS = {"aae": ("reconstruction_epoch_*.png", "samples_epoch_*.png"),
                 "vae": ("vae_samples_epoch_*.png",)}


def select_figures(experiment: str, names: list[str]) -> list[tuple[str, str]]:
    """(file name, caption) of the figures the tour shows for a run with figure files ``names``: in the order of
    :data:`FIGURES` (learning curves first), each file once; a figure without a caption is shown last, saying so."""
    chosen: list[tuple[str, str]] = []
    for spec in FIGURES.get(experiment, []):
        matches = sorted(n for n in names if fnmatch.fnmatch(n, spec.pattern))
        if spec.pick != "all":
            matches = matches[:1] if spec.pick == "first" else matches[-1:]
        chosen += [(n, spec.caption) for n in matches if n not in {c[0] for c in chosen}]
    skipped = INSIDE_OTHERS.get(experiment, ())
    shown = {c[0] for c in chosen}
    rest = [n for n in sorted(names) if n not in shown and not any(fnmatch.fnmatch(n, p) for p in skipped)]
    return chosen + [(n, f"{Path(n).stem} (no caption in the tour yet; see the run's report.md)") for n in rest]


COLUMNS = ("part", "status", "metric", "ours", "reference", "time", "command")


def _anchor(row: dict[str, Any]) -> str:
    return f"part-{row['key']}"


def _summary_lines(rows: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """The summary table's lines as plain cell texts (one line per metric; a part's first line also holds its title,
    status, time and command), each with its part's row."""
    for r in rows:
        for i, (label, ours, ref) in enumerate(r["numbers"] or [("", "", "")]):
            first = i == 0
            yield r, [r["title"] if first else "", r["status"] if first else "", label, ours, ref,
                      f"{r['seconds']} s" if first and r["seconds"] else "", r["command"] if first else ""]


def _markdown(rows: list[dict[str, Any]], budget: str, when: str) -> str:
    """Every value from a run, a flag or a file name goes through :mod:`dl1.report.markdown` (escaped text, inert
    code spans, encoded link targets)."""
    md = [f"# dl1 tour ({markdown.cell(budget)} budget, {when})", "", "Contents: [summary](#summary) · "
          + " · ".join(f"[{markdown.cell(r['title'])}](#{_anchor(r)})" for r in rows), "",
          '<a id="summary"></a>', "", "## Summary", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r, cells in _summary_lines(rows):
        shown = [markdown.cell(c) for c in cells]
        if cells[0]:
            shown[0] = f"[{shown[0]}](#{_anchor(r)})"
        if cells[-1]:
            shown[-1] = markdown.command(cells[-1], table=True)
        md.append("| " + " | ".join(shown) + " |")
    for r in rows:
        md += ["", f'<a id="{_anchor(r)}"></a>', "", f"## {markdown.cell(r['title'])}", "",
               f"Status: **{markdown.cell(r['status'])}**" + (f" — {markdown.cell(r['note'])}" if r["note"] else ""),
               "", f"Reproduce: {markdown.command(r['command'])}", ""]
        if r.get("sample"):
            md += ["Sample from the best model:", "", *markdown.fenced(r["sample"], "text"), ""]
        for path, caption in r["figures"]:
            md += [markdown.image(caption, path), "", f"*{markdown.cell(caption)}*", ""]
        md += ["[back to the summary](#summary)"]
    return "\n".join(md) + "\n"


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;"
         "vertical-align:top}tr.skipped{color:#888}tr.failed{color:#b00}img{max-width:100%;border:1px solid #eee}"
         "figure{margin:1.2em 0}figcaption{color:#333;font-style:italic;margin-top:.3em}"
         "code{background:#f4f4f4;padding:2px 4px;font-size:90%}td code{white-space:normal}"
         "td:nth-child(6),span.w{white-space:nowrap}img.small{image-rendering:pixelated}"
         "nav{background:#f8f8f8;border:1px solid #ddd;padding:.5em 1em}nav ol{margin:.3em 0}"
         "pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}")


def _enlarged(path: Path, below: int = 400) -> str:
    """Attributes that show a small image (a sample grid of 28-pixel images) at twice its size, pixels kept sharp."""
    try:
        with Image.open(path) as image:
            width = image.width
    except (ImportError, OSError):
        return ""
    return f" class='small' width='{2 * width}'" if width < below else ""


def _html(rows: list[dict[str, Any]], budget: str, when: str, folder: Path) -> str:
    esc = html.escape
    body = [f"<h1>dl1 tour <small>({esc(budget)} budget, {esc(when)})</small></h1>",
            "<nav><b>Contents</b><ol><li><a href='#summary'>Summary</a></li>"
            + "".join(f"<li><a href='#{_anchor(r)}'>{esc(r['title'])}</a> ({esc(r['status'])})</li>" for r in rows)
            + "</ol></nav>", "<h2 id='summary'>Summary</h2>",
            "<table><tr>" + "".join(f"<th>{c}</th>" for c in COLUMNS) + "</tr>"]
    for r, cells in _summary_lines(rows):
        html_cells = [esc(c) for c in cells]
        if cells[0]:
            html_cells[0] = f"<a href='#{_anchor(r)}'>{esc(cells[0])}</a>"
        html_cells[3] = f"<b>{esc(cells[3])}</b>"
        if cells[-1]:  # lines break between the command's words only (never after the dashes of a flag)
            words = " ".join(f"<span class='w'>{esc(w)}</span>" for w in cells[-1].split(" "))
            html_cells[-1] = f"<code>{words}</code>"
        body.append(f"<tr class='{esc(r['status'])}'>" + "".join(f"<td>{c}</td>" for c in html_cells) + "</tr>")
    body.append("</table>")
    for r in rows:
        body += [f"<h2 id='{_anchor(r)}'>{esc(r['title'])}</h2>",
                 f"<p>Status: <b>{esc(r['status'])}</b> {esc(r['note'])}</p>",
                 f"<p>Reproduce: <code>{esc(r['command'])}</code></p>"]
        if r.get("sample"):
            body.append(f"<p>Sample from the best model:</p><pre>{esc(r['sample'])}</pre>")
        body += [f"<figure><img src='{esc(path)}' alt='{esc(caption)}'{_enlarged(folder / path)}>"
                 f"<figcaption>{esc(caption)}</figcaption></figure>" for path, caption in r["figures"]]
        body.append("<p><a href='#summary'>back to the summary</a></p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>dl1 tour</title><style>" + STYLE
            + "</style></head><body>" + "\n".join(body)
            + "<script>window.addEventListener('load',()=>{const im=[...document.images];"
              "const ok=im.filter(i=>i.complete&&i.naturalWidth>0).length;"
              "document.body.dataset.imagesLoaded=ok+'/'+im.length;});</script></body></html>")


def write_reports(tour_dir: Path, rows: list[dict[str, Any]], budget: str) -> tuple[Path, Path]:
    """``report.md`` and a self-contained ``report.html`` (images next to it) of the whole tour: contents with links,
    the summary table (with each part's command), then per part its status, command, sample and captioned figures."""
    when = f"{datetime.now():%Y-%m-%d %H:%M}"
    from dl1.run.files import write_text_atomic  # atomically, never through a link planted in the tour folder

    write_text_atomic(tour_dir / "report.md", _markdown(rows, budget, when), root=tour_dir)
    write_text_atomic(tour_dir / "report.html", _html(rows, budget, when, tour_dir), root=tour_dir)
    return tour_dir / "report.md", tour_dir / "report.html"
