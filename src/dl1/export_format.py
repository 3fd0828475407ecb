"""The ``dl1 export`` format: ``model.safetensors`` (the tensors) beside ``config.json`` (the experiment, the run's
configuration and ``model``: the dl1 class and the arguments that rebuild it), and its readers.  Each experiment's
runner turns its checkpoint into an :class:`Exported` (its registry entry's ``export``); :mod:`dl1.export` is the
command that writes it.

A model is rebuilt only from the classes in :data:`BUILDERS`, never from a name taken from the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_file

from dl1.data.text import CharTokenizer
from dl1.errors import DL1Error, first_line
from dl1.lazy import Ref
from dl1.models.gpt_config import GPTConfig
from dl1.run.files import read_json
from dl1.train import load_checkpoint

if TYPE_CHECKING:
    from torch import nn

FORMAT = "dl1-export"
WEIGHTS = "model.safetensors"


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
    return Ref("dl1.models.gpt:GPT")(GPTConfig.from_dict(config))


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "dl1.models.mlp.MLP": Ref("dl1.models.mlp:MLP"),
    "dl1.models.vae.VAE": Ref("dl1.models.vae:VAE"),
    "dl1.models.aae.AdversarialAE": Ref("dl1.models.aae:AdversarialAE"),
    "dl1.models.gpt.GPT": _gpt,
    "dl1.models.prompters.build_prompter": Ref("dl1.models.prompters:build_prompter"),
    "dl1.models.prompt_clip.DeepPrompt": Ref("dl1.models.prompt_clip:DeepPrompt"),
    "torch.nn.Linear": Ref("torch.nn:Linear"),
    "torchvision.models.resnet18": Ref("torchvision.models:resnet18"),
}


def load_model(folder: str | Path, device: Any = "cpu") -> nn.Module:
    """The model of a ``dl1 export`` folder, built from its ``config.json`` and loaded (strictly) from
    ``model.safetensors``, in eval mode."""
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
    config = read_export_config(Path(folder))
    if "tokenizer" not in config:
        raise DL1Error(f"{folder} holds a {config.get('experiment')} model, which has no tokenizer")
    return CharTokenizer.from_state_dict(config["tokenizer"])


def read_export_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    try:
        config = read_json(path)
    except (OSError, DL1Error) as exc:
        raise DL1Error(f"{path}: not a readable export config ({first_line(exc)})") from None
    model = config.get("model") if isinstance(config, dict) else None
    if config.get("format") != FORMAT or not isinstance(model, dict) or model.get("builder") not in BUILDERS \
            or not isinstance(model.get("kwargs"), dict):
        raise DL1Error(f"{path} is not a config written by dl1 export (--format safetensors)")
    return config


# -- reading a run's checkpoint (for the experiments' exporters) -------------------------------------------------------
def trainer_modules(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(module state dicts, checkpoint epoch/step) of a torch checkpoint written by the Trainer."""
    state = load_checkpoint(path)
    modules = state.get("modules") if isinstance(state, dict) else None
    if not isinstance(modules, dict):
        raise DL1Error(f"{path} is not a checkpoint of a dl1 run (no model weights inside)")
    return modules, {"file": str(path), "epoch": state.get("epoch"), "step": state.get("step")}


def module_state(modules: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    if not isinstance(modules.get(name), dict):
        raise DL1Error(f"{path} holds no {name!r} weights (modules: {', '.join(map(str, modules))})")
    return modules[name]


def linear_sizes(state: dict[str, Any]) -> tuple[int, int]:
    """(inputs of the first Linear, outputs of the last) of an MLP state dict."""
    weights = [v for k, v in state.items() if k.endswith(".weight") and len(v.shape) == 2]
    return int(weights[0].shape[1]), int(weights[-1].shape[0])
