"""``dl1 export RUN [--format safetensors|hf] [--out DIR] [--checkpoint best|last]``: a run's trained model in
standard formats, readable without dl1's checkpoints (and without pickle).

``--format safetensors`` (the default) writes ``model.safetensors`` (the model's tensors) and ``config.json``: the
experiment, the run's configuration and ``model``, the dl1 class and the arguments that rebuild it.  Load it with
``safetensors.torch.load_file`` into that class, or in one call::

    from dl1.export import load_model
    model = load_model("runs/vae/20240101-120000/export")   # the model, in eval mode

What is exported: the MLPs (the NumPy MLP too, as the equivalent ``dl1.models.mlp.MLP``, whose softmax is its
output), the VAE, the AAE, the GPT (with its character tokenizer in ``config.json``), clip-prompt's learnt prompt (the
CLIP it was trained with is the weights file you gave, unchanged) and resnet-transfer's classifier ``fc`` (the whole
ResNet-18 with ``--bn_mode train``, whose batch-norm statistics changed).  Runs that train nothing (gnn, cnn-compare,
the CLIP evaluations) are one line saying so.

``--format hf`` (GPT runs): a Hugging Face ``GPT2LMHeadModel`` folder written by ``save_pretrained``, with the
character tokenizer beside it (see :mod:`dl1.hub.gpt2_export`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from dl1 import __version__
from dl1.config import Parser
from dl1.errors import DL1Error, UsageError, first_line
from dl1.experiments import EXPERIMENTS
from dl1.export_format import BUILDERS, FORMAT, WEIGHTS, Exported, load_model, load_tokenizer
from dl1.hub.gpt2_export import CHAR_TOKENIZER, save_hf
from dl1.models.gpt_config import GPTConfig
from dl1.run.files import check_no_links, make_folder, read_json, safe_path, write_file, write_json
from dl1.run.reader import RunFolder, check_output_folder

__all__ = ["export_run", "load_model", "load_tokenizer", "main"]

HF_EXPORT = EXPERIMENTS["gpt"].export  # --format hf: a GPT2LMHeadModel
HELP = """A run's trained model in standard formats, without pickle.

--format safetensors (default): RUN/export/model.safetensors + config.json (the experiment, the run's configuration,
  and the dl1 class with the arguments that rebuild it). In Python:
      from dl1.export import load_model; model = load_model("RUN/export")
--format hf (GPT runs): RUN/export-hf/, a Hugging Face GPT2LMHeadModel folder (save_pretrained) with the character
  tokenizer beside it: char_tokenizer.json ({"kind": "char", "chars": [...]}, id = position) and tokenizer.json
  (AutoTokenizer.from_pretrained reads it).
Runs that train no model (gnn, cnn-compare, clip-zeroshot, clip-cross-dataset) are refused with one line.
--out is a new or empty folder, or an earlier export (replaced whole); a run folder, a link, or a folder holding
  other files is refused. The export is written beside it and renamed into place once its weights load."""
def run_experiment(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """(experiment name, configuration) of a run folder, from its ``config.json``."""
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise DL1Error(f"run folder not found: {run_dir}")
    folder = RunFolder(run_dir)
    if not folder.is_run():
        raise DL1Error(f"{run_dir} is not a run folder (no config.json)")
    config = folder.config
    if not isinstance(config.get("experiment"), str):
        raise DL1Error(f"{path} names no experiment")
    return config["experiment"], config


RUN_MARKERS = ("metrics.jsonl", "summary.json", "env.json", "argv.txt", "run.lock", "checkpoints")


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier ``dl1 export``, which a new export may replace: files only, none of a run
    folder's records, and a ``config.json`` that says ``"format": "dl1-export"`` (``--format safetensors``) or a
    Hugging Face ``GPT2LMHeadModel`` config beside ``char_tokenizer.json`` (``--format hf``)."""
    entries = list(folder.iterdir())
    if any(p.name in RUN_MARKERS or p.is_symlink() or not p.is_file() for p in entries):
        return False
    try:
        config = read_json(folder / "config.json")
        if isinstance(config, dict) and config.get("format") == FORMAT:
            return True
        chars = read_json(folder / CHAR_TOKENIZER)
    except (OSError, DL1Error):
        return False
    return isinstance(config, dict) and "GPT2LMHeadModel" in (config.get("architectures") or []) \
        and isinstance(chars, dict) and chars.get("kind") == "char"


def _holds_run(folder: Path) -> bool:
    """A run's records: a checkpoint, metrics, a summary, ..., or a ``config.json`` naming an experiment (not an
    export's)."""
    if any((folder / name).exists() for name in RUN_MARKERS):
        return True
    try:
        config = read_json(folder / "config.json")
    except (OSError, DL1Error):
        return False
    return isinstance(config, dict) and "experiment" in config and "format" not in config


def check_export_folder(out: Path) -> None:
    """Refuse (one line) an ``--out`` that is a link, a run folder, or a folder that is neither empty nor an earlier
    export: an export never overwrites a run's records or files it did not write."""
    check_no_links(out)
    if not out.is_dir() or is_export(out):
        return
    if _holds_run(out):
        raise UsageError(f"--out {out} is a run folder (it holds a run's records); export into a new folder")
    if any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty and holds no earlier export; export into a new or empty folder")


def _check_weights(exported: Exported, tensors: dict[str, torch.Tensor], run_dir: Path) -> None:
    """The model the export's ``config.json`` describes loads the weights strictly, or one line naming both."""
    try:
        model = BUILDERS[exported.builder](**exported.kwargs)
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, TypeError, ValueError, KeyError, AssertionError) as exc:
        where = exported.checkpoint.get("file", "its checkpoint")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else first_line(exc)
        raise DL1Error(f"{run_dir / 'config.json'} does not match the weights in {where}: {detail[:200]}") from None


def _place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder to ``out``; an earlier export (or empty folder) there is replaced."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.old")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_run(run_dir: str | Path, fmt: str = "safetensors", out: str | Path | None = None,
               prefer: str = "best") -> Path:
    """Export the best (``prefer="last"``: the last) model of a run folder; returns the folder written.

    The files are written into a new folder beside ``out`` and renamed into place once they are complete and the
    weights have loaded into the model ``config.json`` describes: a failure (a full disk) leaves ``out`` as it was."""
    run_dir = Path(run_dir)
    experiment, config = run_experiment(run_dir)
    entry = EXPERIMENTS.get(experiment)
    if entry is not None and entry.no_export:
        raise DL1Error(f"nothing to export: {experiment} {entry.no_export}")
    if entry is None or entry.export is None:
        raise DL1Error(f"nothing to export: dl1 export knows no model of a {experiment} run")
    if fmt == "hf" and entry.export != HF_EXPORT:
        raise UsageError(f"--format hf is for GPT runs (a GPT2LMHeadModel); export this {experiment} run with "
                         "--format safetensors")
    out = Path(out) if out is not None else safe_path(run_dir, "export-hf" if fmt == "hf" else "export")
    if out.name in ("", ".", ".."):  # "." or "..": the folder's own name (the export is written beside it)
        out = Path(os.path.abspath(out))
    check_output_folder(out, "--out")
    check_export_folder(out)
    try:
        exported = entry.export(run_dir, config, prefer)
    except KeyError as exc:
        raise DL1Error(f"{run_dir / 'config.json'} lacks {first_line(exc)}, which the {experiment} model needs") \
            from None
    except (TypeError, ValueError) as exc:
        raise DL1Error(f"{run_dir / 'config.json'} does not describe a {experiment} model: {first_line(exc)}") \
            from None
    tensors = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v).detach().cpu().contiguous()
               for k, v in exported.tensors.items()}
    _check_weights(exported, tensors, run_dir)
    make_folder(out.parent)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.mkdir()
    except OSError as exc:
        raise DL1Error(f"cannot write {out}: {first_line(exc)}") from None
    try:
        if fmt == "hf":
            save_hf(GPTConfig.from_dict(exported.kwargs["config"]), tensors, exported.extra["tokenizer"]["chars"],
                    tmp)
        else:
            data = save(tensors, metadata={"format": "pt", "experiment": experiment})
            write_file(tmp / WEIGHTS, lambda fh: fh.write(data), root=tmp)
            write_json(tmp / "config.json", {
                "format": FORMAT, "experiment": experiment, "dl1_version": __version__,
                "model": {"builder": exported.builder, "kwargs": exported.kwargs}, **exported.extra,
                "checkpoint": exported.checkpoint, "run_dir": str(run_dir), "run_config": config,
                "load": f"from dl1.export import load_model; model = load_model({str(out)!r})"}, root=tmp)
            load_model(tmp)  # what was written loads, strictly, into the model config.json describes
        _place(tmp, out)
    except OSError as exc:
        raise DL1Error(f"cannot write {out} (nothing was changed there): {first_line(exc)}") from None
    except DL1Error as exc:
        raise DL1Error(str(exc).replace(str(tmp), str(out))) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str]) -> int:
    parser = Parser(prog="dl1 export", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN", help="a run folder (runs/NAME/<timestamp>)")
    parser.add_argument("--format", choices=("safetensors", "hf"), default="safetensors",
                        help="safetensors: model.safetensors + config.json (any run with a model); hf: a GPT run as a "
                             "Hugging Face GPT2LMHeadModel folder with its character tokenizer")
    parser.add_argument("--out", default=None, help="output folder (default: RUN/export, or RUN/export-hf)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="which model: the best (default; the last when a run keeps no best) or the last")
    args = parser.parse_args(argv)
    out = export_run(args.run_dir, args.format, args.out, args.checkpoint)
    files = ", ".join(sorted(p.name for p in out.iterdir() if p.is_file()))
    print(f"exported {args.run_dir} -> {out} ({files})")
    return 0
