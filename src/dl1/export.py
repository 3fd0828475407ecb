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
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dl1.config import Parser
from dl1.errors import DL1Error, UsageError, first_line
from dl1.runtime import check_output_folder, checkpoint_file, read_json, write_json

if TYPE_CHECKING:
    from torch import nn

HELP = """A run's trained model in standard formats, without pickle.

--format safetensors (default): RUN/export/model.safetensors + config.json (the experiment, the run's configuration,
  and the dl1 class with the arguments that rebuild it). In Python:
      from dl1.export import load_model; model = load_model("RUN/export")
--format hf (GPT runs): RUN/export-hf/, a Hugging Face GPT2LMHeadModel folder (save_pretrained) with the character
  tokenizer beside it: char_tokenizer.json ({"kind": "char", "chars": [...]}, id = position) and tokenizer.json
  (AutoTokenizer.from_pretrained reads it).
Runs that train no model (gnn, cnn-compare, clip-zeroshot, clip-cross-dataset) are refused with one line."""
FORMAT = "dl1-export"
WEIGHTS = "model.safetensors"
NOTHING = {
    "gnn": "checks the course's GNN claims on random graphs and trains no model",
    "cnn-compare": "times torchvision models with random weights and trains none",
    "clip-zeroshot": "evaluates a pretrained CLIP and trains nothing (its weights are the file it was given)",
    "clip-cross-dataset": "evaluates a prompt trained by clip-prompt: export that clip-prompt run",
}


@dataclass
class Exported:
    """What one run exports: tensors by name, the builder (a key of :data:`BUILDERS`) and its arguments."""

    tensors: dict[str, Any]
    builder: str
    kwargs: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)


# -- rebuilding a model from config.json: only these classes, never a name taken from the file ------------------------
def _gpt(config: dict[str, Any]) -> nn.Module:
    from dl1.models.gpt import GPT, GPTConfig

    return GPT(GPTConfig.from_dict(config))


def _prompter(**kwargs: Any) -> nn.Module:
    from dl1.models.prompters import build_prompter

    return build_prompter(**kwargs)


def _deep_prompt(**kwargs: Any) -> nn.Module:
    from dl1.models.prompt_clip import DeepPrompt

    return DeepPrompt(**kwargs)


def _class(module: str, name: str) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        import importlib

        return getattr(importlib.import_module(module), name)(**kwargs)

    return build


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "dl1.models.mlp.MLP": _class("dl1.models.mlp", "MLP"),
    "dl1.models.vae.VAE": _class("dl1.models.vae", "VAE"),
    "dl1.models.aae.AdversarialAE": _class("dl1.models.aae", "AdversarialAE"),
    "dl1.models.gpt.GPT": _gpt,
    "dl1.models.prompters.build_prompter": _prompter,
    "dl1.models.prompt_clip.DeepPrompt": _deep_prompt,
    "torch.nn.Linear": _class("torch.nn", "Linear"),
    "torchvision.models.resnet18": _class("torchvision.models", "resnet18"),
}


def load_model(folder: str | Path, device: Any = "cpu") -> nn.Module:
    """The model of a ``dl1 export`` folder, built from its ``config.json`` and loaded (strictly) from
    ``model.safetensors``, in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_export_config(folder)
    model = BUILDERS[config["model"]["builder"]](**config["model"]["kwargs"])
    try:
        model.load_state_dict(load_file(folder / WEIGHTS, device=str(device)), strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DL1Error(f"cannot load {folder / WEIGHTS}: {first_line(exc)}") from None
    return model.to(device).eval()


def load_tokenizer(folder: str | Path) -> Any:
    """The character tokenizer of an exported GPT (``config.json``'s ``tokenizer``)."""
    from dl1.data.text import CharTokenizer

    config = read_export_config(Path(folder))
    if "tokenizer" not in config:
        raise DL1Error(f"{folder} holds a {config.get('experiment')} model, which has no tokenizer")
    return CharTokenizer.from_state_dict(config["tokenizer"])


def read_export_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DL1Error(f"{path}: not a readable export config ({first_line(exc)})") from None
    model = config.get("model") if isinstance(config, dict) else None
    if config.get("format") != FORMAT or not isinstance(model, dict) or model.get("builder") not in BUILDERS \
            or not isinstance(model.get("kwargs"), dict):
        raise DL1Error(f"{path} is not a config written by dl1 export (--format safetensors)")
    return config


# -- reading a run ----------------------------------------------------------------------------------------------------
def _modules(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(module state dicts, checkpoint epoch/step) of a torch checkpoint written by the Trainer."""
    from dl1.train import load_checkpoint

    state = load_checkpoint(path)
    modules = state.get("modules") if isinstance(state, dict) else None
    if not isinstance(modules, dict):
        raise DL1Error(f"{path} is not a checkpoint of a dl1 run (no model weights inside)")
    return modules, {"file": str(path), "epoch": state.get("epoch"), "step": state.get("step")}


def _module(modules: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    if not isinstance(modules.get(name), dict):
        raise DL1Error(f"{path} holds no {name!r} weights (modules: {', '.join(map(str, modules))})")
    return modules[name]


def _linear_sizes(state: dict[str, Any]) -> tuple[int, int]:
    """(inputs of the first Linear, outputs of the last) of an MLP state dict."""
    weights = [v for k, v in state.items() if k.endswith(".weight") and len(v.shape) == 2]
    return int(weights[0].shape[1]), int(weights[-1].shape[0])


def _mlp_pytorch(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    path = checkpoint_file(run_dir, prefer=prefer)
    modules, where = _modules(path)
    state = _module(modules, "model", path)
    n_inputs, n_classes = _linear_sizes(state)
    return Exported(state, "dl1.models.mlp.MLP", {"n_inputs": n_inputs, "n_hidden": list(config["hidden_dims"]),
                                                  "n_classes": n_classes,
                                                  "use_batch_norm": bool(config["use_batch_norm"])}, checkpoint=where)


def _mlp_numpy(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    """The NumPy MLP's ``best.npz`` as the torch MLP's state dict (its Linear i is ``layers.{2i}``: ELUs between)."""
    path = run_dir / "checkpoints" / "best.npz"
    if not path.is_file():
        raise DL1Error(f"no checkpoint in {run_dir} (looked for checkpoints/best.npz)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DL1Error(f"cannot read {path}: {first_line(exc)}") from None
    state = {}
    for key, value in arrays.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit():
            state[f"layers.{2 * int(parts[1])}.{parts[2]}"] = np.ascontiguousarray(value)
    if not state:
        raise DL1Error(f"{path} holds no MLP layers")
    order = sorted(state, key=lambda k: (int(k.split(".")[1]), k))
    state = {k: state[k] for k in order}
    n_inputs, n_classes = _linear_sizes(state)
    epoch = int(arrays["epoch"]) if "epoch" in arrays else None
    return Exported(state, "dl1.models.mlp.MLP", {"n_inputs": n_inputs, "n_hidden": list(config["hidden_dims"]),
                                                  "n_classes": n_classes, "use_batch_norm": False},
                    {"note": "the NumPy MLP's weights; softmax(model(x)) is the NumPy MLP's output"},
                    {"file": str(path), "epoch": epoch})


def _vae(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    path = checkpoint_file(run_dir, prefer=prefer)
    modules, where = _modules(path)
    return Exported(_module(modules, "vae", path), "dl1.models.vae.VAE",
                    {"num_filters": config["num_filters"], "z_dim": config["z_dim"], "lr": config["lr"]},
                    checkpoint=where)


def _aae(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    path = checkpoint_file(run_dir, prefer=prefer)
    modules, where = _modules(path)
    return Exported(_module(modules, "model", path), "dl1.models.aae.AdversarialAE",
                    {"z_dim": config["z_dim"], "num_filters": config["num_filters"]}, checkpoint=where)


def _gpt_run(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    from dl1.generate import read_gpt_checkpoint

    checkpoint = read_gpt_checkpoint(checkpoint_file(run_dir, prefer=prefer))  # config, tokenizer, weights checked
    return Exported(checkpoint.weights, "dl1.models.gpt.GPT", {"config": checkpoint.config.to_dict()},
                    {"tokenizer": checkpoint.tokenizer.state_dict()}, {"file": str(checkpoint.path)})


def _clip_prompt(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    from dl1.hub.clip import read_prompt_checkpoint

    path = checkpoint_file(run_dir, prefer=prefer)
    prompt, saved = read_prompt_checkpoint(path)
    clip = {k: saved.get(k) for k in ("arch", "pretrained", "clip_weights", "dataset", "text_prompt_template")}
    if saved["prompt_type"] == "deep_prompt":
        width = int(prompt["deep_prompt"].shape[-1])
        kwargs = {"prompt_num": saved["prompt_num"], "width": width}
        return Exported(prompt, "dl1.models.prompt_clip.DeepPrompt", kwargs,
                        {"injection_layer": saved["injection_layer"], "clip": clip}, {"file": str(path)})
    kwargs = {k: saved[k] for k in ("method", "prompt_size", "image_size", "seed")}
    return Exported(prompt, "dl1.models.prompters.build_prompter", kwargs, {"clip": clip}, {"file": str(path)})


def _resnet_transfer(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    path = checkpoint_file(run_dir, prefer=prefer)
    modules, where = _modules(path)
    if "fc" in modules:  # --bn_mode eval: the backbone is the ImageNet ResNet-18, unchanged
        fc = _module(modules, "fc", path)
        out_features, in_features = (int(n) for n in fc["weight"].shape)
        return Exported(fc, "torch.nn.Linear", {"in_features": in_features, "out_features": out_features},
                        {"backbone": f"ResNet-18, weights {config.get('weights')} (unchanged: fc replaces its fc)"},
                        where)
    state = _module(modules, "model", path)
    return Exported(state, "torchvision.models.resnet18", {"num_classes": int(state["fc.weight"].shape[0])},
                    checkpoint=where)


EXPORTERS: dict[str, Callable[[Path, dict[str, Any], str], Exported]] = {
    "mlp-pytorch": _mlp_pytorch, "mlp-numpy": _mlp_numpy, "vae": _vae, "aae": _aae, "gpt": _gpt_run,
    "clip-prompt": _clip_prompt, "resnet-transfer": _resnet_transfer,
}


def run_experiment(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """(experiment name, configuration) of a run folder, from its ``config.json``."""
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise DL1Error(f"run folder not found: {run_dir}")
    try:
        config = read_json(path)
    except FileNotFoundError:
        raise DL1Error(f"{run_dir} is not a run folder (no config.json)") from None
    if not isinstance(config, dict) or not isinstance(config.get("experiment"), str):
        raise DL1Error(f"{path} names no experiment")
    return config["experiment"], config


def export_run(run_dir: str | Path, fmt: str = "safetensors", out: str | Path | None = None,
               prefer: str = "best") -> Path:
    """Export the best (``prefer="last"``: the last) model of a run folder; returns the folder written."""
    import torch
    from safetensors.torch import save_file

    from dl1 import __version__

    run_dir = Path(run_dir)
    experiment, config = run_experiment(run_dir)
    if experiment in NOTHING:
        raise DL1Error(f"nothing to export: {experiment} {NOTHING[experiment]}")
    if experiment not in EXPORTERS:
        raise DL1Error(f"nothing to export: dl1 export knows no model of a {experiment} run")
    if fmt == "hf" and experiment != "gpt":
        raise UsageError(f"--format hf is for GPT runs (a GPT2LMHeadModel); export this {experiment} run with "
                         "--format safetensors")
    out = Path(out) if out is not None else run_dir / ("export-hf" if fmt == "hf" else "export")
    check_output_folder(out, "--out")
    exported = EXPORTERS[experiment](run_dir, config, prefer)
    tensors = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v).detach().cpu().contiguous()
               for k, v in exported.tensors.items()}
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        from dl1.hub.gpt2_export import save_hf
        from dl1.models.gpt import GPTConfig

        save_hf(GPTConfig.from_dict(exported.kwargs["config"]), tensors, exported.extra["tokenizer"]["chars"], out)
        return out
    try:
        save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt", "experiment": experiment})
    except (OSError, RuntimeError) as exc:
        raise DL1Error(f"cannot write {out / WEIGHTS}: {first_line(exc)}") from None
    write_json(out / "config.json", {
        "format": FORMAT, "experiment": experiment, "dl1_version": __version__,
        "model": {"builder": exported.builder, "kwargs": exported.kwargs}, **exported.extra,
        "checkpoint": exported.checkpoint, "run_dir": str(run_dir), "run_config": config,
        "load": f"from dl1.export import load_model; model = load_model({str(out)!r})"})
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
