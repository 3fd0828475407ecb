"""ImageNet ResNet-18 as a frozen feature extractor with a fresh linear head (the course's ``get_model``).

``get_model(num_classes, state_dict)`` builds torchvision's ResNet-18, loads the backbone weights it is given (the
ImageNet ones come from :func:`dl1.hub.torchvision.resnet18_state_dict`; ``None`` keeps the random initialisation,
for tests and smoke runs only, never a result), freezes every parameter, and replaces ``fc`` (512 -> num_classes)
with weight ~ N(0, 0.01^2) and bias 0, the only trainable part.

Batch norm of the frozen backbone: :func:`set_backbone_mode` keeps it in ``eval`` mode by default, so the running
statistics stay ImageNet's and the model is a pure linear probe on fixed features (which is what makes feature
caching exact).  ``train`` mode reproduces the reference solution (``model.train()`` updates the BN statistics on
CIFAR although no weight is trained).

The evaluation helpers (:func:`evaluate_model`, :func:`extract_features`, :func:`feature_accuracy`) take any iterable
of ``(images, labels)`` batches (:func:`correct_count` returns the counts, which data-parallel ranks add up).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torchvision.models import resnet18

from dl1.errors import DL1Error, first_line

FEATURE_DIM = 512
FC_STD = 0.01


def build_resnet18(state_dict: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """torchvision's ResNet-18 with ``state_dict`` loaded (``None``: random initialisation)."""
    model = resnet18(weights=None)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise DL1Error(f"not a torchvision ResNet-18 state dict ({first_line(exc, 160)})") from None
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


def get_model(num_classes: int = 100, state_dict: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The course's ``get_model``: ResNet-18 with ``state_dict``, all frozen, fresh ``fc`` (N(0, 0.01^2) weight, zero
    bias)."""
    model = build_resnet18(state_dict)
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


def extract_features(model: nn.Module, batches: Iterable, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features of every batch, in order: ``((N, 512), (N,))`` on ``device``, model in eval mode."""
    model.eval()
    feats, labels = [], []
    with torch.no_grad():
        for x, y in batches:
            feats.append(features(model, x.to(device)))  # (B, 512)
            labels.append(y.to(device))
    return torch.cat(feats), torch.cat(labels)


def correct_count(model: nn.Module, data_loader: Iterable, device: torch.device) -> tuple[int, int]:
    """``(correct, total)`` predictions of ``model`` in eval mode (no gradients) over ``data_loader``."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in data_loader:
            pred = model(x.to(device)).argmax(dim=1)
            correct += int((pred == y.to(device)).sum())
            total += len(y)
    return correct, total


def evaluate_model(model: nn.Module, data_loader: Iterable, device: torch.device) -> float:
    """The course's ``evaluate_model``: accuracy in [0, 1] with the model in eval mode and no gradients."""
    correct, total = correct_count(model, data_loader, device)
    return correct / max(total, 1)


def feature_accuracy(fc: nn.Module, feats: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Accuracy of ``fc`` on cached features."""
    fc.eval()
    with torch.no_grad():
        correct = sum(int((fc(feats[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
                      for i in range(0, len(labels), batch_size))
    return correct / max(len(labels), 1)


def cached_batches(feats: torch.Tensor, labels: torch.Tensor, order: list[int], batch_size: int) -> list:
    """Mini-batches ``(features, labels)`` of cached features in ``order``."""
    idx = torch.tensor(order, device=feats.device)
    return [(feats[idx[i:i + batch_size]], labels[idx[i:i + batch_size]]) for i in range(0, len(order), batch_size)]
