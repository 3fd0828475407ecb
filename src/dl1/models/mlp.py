"""The course's PyTorch MLP: ``[Linear → (BatchNorm1d) → ELU] × len(n_hidden) → Linear``, logits out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs; returns logits (``nn.CrossEntropyLoss`` applies the softmax).

    Kaiming initialisation as in the NumPy MLP: the input layer ``layers.0`` gets σ = 1/√fan_in (normalised data), every
    later Linear σ = √2/√fan_in (fed by an ELU), biases 0.  ``n_hidden=[]`` is multinomial logistic regression.
    """

    def __init__(self, n_inputs: int, n_hidden: Sequence[int], n_classes: int, use_batch_norm: bool = False):
        super().__init__()
        self.n_inputs, self.n_hidden, self.n_classes = n_inputs, list(n_hidden), n_classes
        self.use_batch_norm = use_batch_norm
        sizes = [n_inputs, *self.n_hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers.append(nn.Linear(fan_in, fan_out))
            if use_batch_norm:
                layers.append(nn.BatchNorm1d(fan_out))
            layers.append(nn.ELU())
        layers.append(nn.Linear(sizes[-1], n_classes))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming normal weights (input layer without the factor 2), zero biases."""
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        for i, linear in enumerate(linears):
            gain = 1.0 if i == 0 else 2.0
            linear.weight.normal_(0.0, math.sqrt(gain / linear.in_features))
            linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) or (B, n_inputs) -> (B, n_classes) logits."""
        return self.layers(x.flatten(1))                                             # (B, n_classes)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
