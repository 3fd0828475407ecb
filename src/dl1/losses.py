"""Pure loss functions: the VAE's reparameterisation trick, Gaussian KL divergence and ELBO -> bits per dimension.

Course names and semantics (assignment 3, ``part1/utils.py``); no ``torch.distributions``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

LOG2_E = math.log2(math.e)  # 1 / ln 2: nats -> bits


def sample_reparameterize(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``z = mean + std * eps`` with ``eps ~ N(0, I)``: a sample of N(mean, std²) differentiable in both.

    ``mean`` and ``std`` have the same shape (e.g. ``[B, z_dim]``); ``std`` must be non-negative.
    """
    if bool((std < 0).any()):
        raise ValueError("sample_reparameterize: std must be non-negative (pass exp(log_std), not log_std)")
    eps = torch.randn_like(std)
    return mean + std * eps


def KLD(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:  # noqa: N802  (the course's name)
    """KL(N(mean, exp(log_std)²) ‖ N(0, I)), summed over the last dimension.

    ``½ Σ_d (σ_d² + μ_d² − 1 − 2 log σ_d)``; the output has the input's shape without its last dimension.
    """
    return 0.5 * (torch.exp(2 * log_std) + mean.pow(2) - 1 - 2 * log_std).sum(dim=-1)


def elbo_to_bpd(elbo: torch.Tensor, img_shape: Sequence[int]) -> torch.Tensor:
    """Negative ELBO in nats per image -> bits per dimension: ``elbo · log2(e) / (C·H·W)``.

    ``img_shape`` is the batch shape ``[B, C, H, W]``: every dimension but the first counts as a dimension of the image.
    """
    dims = math.prod(int(s) for s in list(img_shape)[1:])
    return elbo * LOG2_E / dims
