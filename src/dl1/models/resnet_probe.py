"""ImageNet ResNet-18 as a frozen feature extractor with a fresh linear head (the course's ``get_model``).

``get_model(num_classes, weights)`` loads torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` (from torch's hub cache,
else downloaded) or a local state-dict file, freezes every parameter, and replaces ``fc`` (512 -> num_classes) with
weight ~ N(0, 0.01^2) and bias 0, the only trainable part.  ``weights="random"`` builds a randomly initialised
network for tests and smoke runs (never reported as a result).

Offline and without the weights file, :func:`load_resnet18` fails in about a second with one line naming the file to
download and the folder to put it in; it checks the cache and the network itself, so torchvision never starts a
download that would hang.

Batch norm of the frozen backbone: :func:`set_backbone_mode` keeps it in ``eval`` mode by default, so the running
statistics stay ImageNet's and the model is a pure linear probe on fixed features (which is what makes feature
caching exact).  ``train`` mode reproduces the reference solution (``model.train()`` updates the BN statistics on
CIFAR although no weight is trained).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from dl1.errors import DL1Error
from dl1.hub import online

FEATURE_DIM = 512
WEIGHTS_ENUM = "IMAGENET1K_V1"  # = ResNet18_Weights.DEFAULT
FC_STD = 0.01


def weights_url() -> str:
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights[WEIGHTS_ENUM].url


def weights_file() -> Path:
    """Where torchvision looks for the ImageNet weights: ``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights_url())


def missing_weights_message() -> str:
    path = weights_file()
    return (f"ResNet-18 ImageNet weights not found and cannot be downloaded (offline): download {weights_url()} "
            f"and put it in {path.parent}/ as {path.name} (set TORCH_HOME to use another cache), "
            f"or pass --weights PATH")


def check_weights(weights: str | Path | None = "imagenet") -> None:
    """Fail fast (about a second) with one line if the weights are neither on disk nor downloadable."""
    if weights is None or str(weights) == "random":
        return
    if str(weights) == "imagenet":
        if not weights_file().is_file() and not online(weights_url()):
            raise DL1Error(missing_weights_message())
    elif not Path(weights).is_file():
        raise DL1Error(f"--weights: file not found: {weights}")


def load_resnet18(weights: str | Path | None = "imagenet") -> nn.Module:
    """torchvision ResNet-18: ``"imagenet"`` (cache or download), ``"random"``/``None``, or a state-dict file."""
    from torchvision.models import ResNet18_Weights, resnet18

    if weights is None or str(weights) == "random":
        return resnet18(weights=None)
    if str(weights) == "imagenet":
        check_weights(weights)
        try:
            return resnet18(weights=ResNet18_Weights[WEIGHTS_ENUM])
        except Exception as exc:  # download failed or corrupt cache file
            raise DL1Error(f"cannot load ResNet-18 ImageNet weights ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160]}); {missing_weights_message()}") from None
    return _from_file(Path(weights))


def _from_file(path: Path) -> nn.Module:
    """A torchvision ResNet-18 state dict (optionally under a ``state_dict``/``model`` key) from ``path``."""
    from torchvision.models import resnet18

    if not path.is_file():
        raise DL1Error(f"--weights: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DL1Error(f"--weights: cannot read {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}") \
            from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    model = resnet18(weights=None)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise DL1Error(f"--weights: {path} is not a torchvision ResNet-18 state dict "
                       f"({str(exc).splitlines()[0][:160]})") from None
    return model


def reset_fc(model: nn.Module, num_classes: int, std: float = FC_STD) -> nn.Linear:
    """Replace ``model.fc`` by a trainable ``Linear(512, num_classes)`` with weight ~ N(0, std^2) and bias 0."""
    fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.normal_(fc.weight, mean=0.0, std=std)
    nn.init.zeros_(fc.bias)
    model.fc = fc
    return fc


def freeze_backbone(model: nn.Module) -> None:
    """``requires_grad=False`` for every parameter except those of ``fc``."""
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("fc.")


def get_model(num_classes: int = 100, weights: str | Path | None = "imagenet") -> nn.Module:
    """The course's ``get_model``: ResNet-18, all frozen, fresh ``fc`` (N(0, 0.01^2) weight, zero bias)."""
    model = load_resnet18(weights)
    for p in model.parameters():
        p.requires_grad = False
    reset_fc(model, num_classes)
    freeze_backbone(model)
    return model


def backbone(model: nn.Module) -> list[nn.Module]:
    """The modules before ``fc`` (whose parameters stay frozen)."""
    return [m for name, m in model.named_children() if name != "fc"]


def set_backbone_mode(model: nn.Module, bn_mode: str = "eval") -> None:
    """``fc`` in train mode, the backbone in ``bn_mode`` (``eval``: pure linear probe; ``train``: BN stats move)."""
    if bn_mode not in ("eval", "train"):
        raise ValueError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
    for m in backbone(model):
        m.train(bn_mode == "train")
    model.fc.train()


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The 512-d penultimate features, exactly what ``model.fc`` receives: (B, 3, H, W) -> (B, 512)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)  # (B, 512)
