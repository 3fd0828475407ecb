"""The VAE of assignment 3 part 1: CNN encoder -> diagonal Gaussian q(z|x), CNN decoder -> 16-way logits per pixel.

Images are 4-bit: ``[B, 1, 28, 28]`` long tensors with values 0..15.  The architecture is the course's (tutorial 9,
GELU activations); the decoder's first transposed convolution has ``output_padding=0`` so that 4 -> 7 -> 14 -> 28.
Plain ``nn.Module``s (no Lightning), no distribution objects from torch (the course forbids them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dl1.losses import KLD, elbo_to_bpd, sample_reparameterize

NUM_LEVELS = 16  # 4-bit pixels: values 0..15


def discretize(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels 0..255 -> 4-bit values ``min(floor(16·x/255), 15)`` (= the course's ``floor(16·ToTensor(x))``)."""
    return torch.clamp((images.long() * NUM_LEVELS) // 255, max=NUM_LEVELS - 1)


def conv_encoder(num_input_channels: int, num_filters: int, out_features: int, act: type[nn.Module]) -> nn.Sequential:
    """Tutorial 9's encoder stack: ``[B, C, 28, 28] -> [B, out_features]`` (three stride-2 convolutions, then linear).

    Shared by this VAE (GELU) and the adversarial autoencoder (ReLU); the layer order fixes the state-dict keys.
    """
    c = num_filters
    return nn.Sequential(
        nn.Conv2d(num_input_channels, c, kernel_size=3, padding=1, stride=2),  # 28 -> 14
        act(),
        nn.Conv2d(c, c, kernel_size=3, padding=1),
        act(),
        nn.Conv2d(c, 2 * c, kernel_size=3, padding=1, stride=2),  # 14 -> 7
        act(),
        nn.Conv2d(2 * c, 2 * c, kernel_size=3, padding=1),
        act(),
        nn.Conv2d(2 * c, 2 * c, kernel_size=3, padding=1, stride=2),  # 7 -> 4
        act(),
        nn.Flatten(),  # (B, 2c·4·4)
        nn.Linear(2 * 16 * c, out_features),
    )


def conv_decoder(num_filters: int, num_output_channels: int, act: type[nn.Module], *tail: nn.Module) -> nn.Sequential:
    """Tutorial 9's decoder stack after its linear layer: ``[B, 2c, 4, 4] -> [B, num_output_channels, 28, 28]``.

    The first transposed convolution has ``output_padding=0`` so that 4 -> 7 -> 14 -> 28; ``tail`` (e.g. ``Tanh``)
    follows the last layer.
    """
    c = num_filters
    return nn.Sequential(
        nn.ConvTranspose2d(2 * c, 2 * c, kernel_size=3, output_padding=0, padding=1, stride=2),  # 4 -> 7
        act(),
        nn.Conv2d(2 * c, 2 * c, kernel_size=3, padding=1),
        act(),
        nn.ConvTranspose2d(2 * c, c, kernel_size=3, output_padding=1, padding=1, stride=2),  # 7 -> 14
        act(),
        nn.Conv2d(c, c, kernel_size=3, padding=1),
        act(),
        nn.ConvTranspose2d(c, num_output_channels, kernel_size=3, output_padding=1, padding=1, stride=2),  # 14 -> 28
        *tail,
    )


def step_memory(build: Callable[[], nn.Module], floats_per_image: int) -> tuple[int, int]:
    """About the bytes one float32 Adam step of ``build()``'s model needs: ``(fixed, per image)``, so that a batch of
    ``n`` images needs ``fixed + n * per_image``.  Fixed: 16 bytes a parameter (weights, gradients, Adam's two
    moments; counted on the meta device, nothing is allocated); per image: ``floats_per_image`` float32 values kept
    for the backward pass."""
    with torch.device("meta"):
        fixed = 16 * sum(p.numel() for p in build().parameters())
    return fixed, 4 * floats_per_image


class CNNEncoder(nn.Module):
    """``[B, C, 28, 28]`` 4-bit images -> ``(mean, log_std)``, each ``[B, z_dim]`` (raw linear outputs)."""

    def __init__(self, num_input_channels: int = 1, num_filters: int = 32, z_dim: int = 20):
        super().__init__()
        self.z_dim = z_dim
        self.net = conv_encoder(num_input_channels, num_filters, 2 * z_dim, nn.GELU)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float() / 15 * 2.0 - 1.0  # 0..15 -> [-1, 1]
        out = self.net(x)  # (B, 2·z_dim)
        mean, log_std = out.chunk(2, dim=-1)  # (B, z_dim) each
        return mean, log_std


class CNNDecoder(nn.Module):
    """``[B, z_dim]`` latents -> ``[B, num_input_channels, 28, 28]`` logits over the 16 pixel values (no softmax)."""

    def __init__(self, num_input_channels: int = NUM_LEVELS, num_filters: int = 32, z_dim: int = 20):
        super().__init__()
        self.num_filters = num_filters
        self.linear = nn.Sequential(nn.Linear(z_dim, 2 * 16 * num_filters), nn.GELU())
        self.net = conv_decoder(num_filters, num_input_channels, nn.GELU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.linear(z)  # (B, 2c·16)
        x = x.reshape(x.shape[0], 2 * self.num_filters, 4, 4)  # (B, 2c, 4, 4)
        return self.net(x)  # (B, 16, 28, 28)


class VAE(nn.Module):
    """Encoder + reparameterised sample + decoder; ``forward`` returns ``(L_rec, L_reg, bpd)``, bpd being the loss."""

    @staticmethod
    def activation_floats(num_filters: int) -> int:
        """About the float32 values one training image keeps for the backward pass (CPU peak memory, within ~15 %)."""
        return 5000 * num_filters + 784 * NUM_LEVELS

    def __init__(self, num_filters: int = 32, z_dim: int = 20, lr: float | None = None):
        """``lr`` is accepted for the course's ``VAE(num_filters, z_dim, lr)`` signature and not kept: the model
        does not train itself (the experiment builds Adam from ``--lr``)."""
        super().__init__()
        self.z_dim = z_dim
        self.encoder = CNNEncoder(z_dim=z_dim, num_filters=num_filters)
        self.decoder = CNNDecoder(z_dim=z_dim, num_filters=num_filters)

    def forward(self, imgs: torch.Tensor, eps: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``imgs`` long ``[B, 1, 28, 28]`` in 0..15 -> scalars (reconstruction nats, KL nats, bits per dimension).

        ``L_rec`` is the cross-entropy summed over pixels and averaged over the batch; ``L_reg`` the KL to the prior
        averaged over the batch; ``bpd = (L_rec + L_reg)·log2(e)/784``.  ``eps`` ``[B, z_dim]``: the standard normal
        noise of the reparameterisation (e.g. from :func:`batch_noise`); drawn from the global stream when None.
        """
        # the statistics and the KL in float32, under autocast too (a bfloat16 KL can come out below 0)
        mean, log_std = (t.float() for t in self.encoder(imgs))  # (B, z_dim) each
        std = torch.exp(log_std)  # (B, z_dim)
        z = sample_reparameterize(mean, std) if eps is None else mean + std * eps  # (B, z_dim)
        logits = self.decoder(z)  # (B, 16, 28, 28)
        L_rec = F.cross_entropy(logits, imgs[:, 0], reduction="none").sum(dim=(1, 2)).mean()  # noqa: N806
        L_reg = KLD(mean, log_std).mean()  # noqa: N806
        bpd = elbo_to_bpd(L_rec + L_reg, imgs.shape)
        return L_rec, L_reg, bpd

    @torch.no_grad()
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``z ~ N(0, I)``, decode, and sample every pixel from its categorical: long ``[B, 1, 28, 28]`` in 0..15.

        ``generator`` (on the model's device) makes the draw independent of the global random stream.
        """
        device = next(self.parameters()).device
        z = torch.randn(batch_size, self.z_dim, device=device, generator=generator)  # (B, z_dim)
        logits = self.decoder(z)  # (B, 16, H, W)
        B, K, H, W = logits.shape  # noqa: N806
        probs = F.softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(-1, K)  # (B·H·W, 16)
        pixels = torch.multinomial(probs, 1, generator=generator)  # (B·H·W, 1)
        return pixels.reshape(B, 1, H, W)


def batch_noise(generator: torch.Generator, rows: int, z_dim: int, rank: int = 0, world_size: int = 1
                ) -> torch.Tensor:
    """The reparameterisation noise of rank ``rank``'s ``rows`` images of a global batch: the whole batch's
    ``(rows · world_size, z_dim)`` standard normal draw from ``generator`` (on the model's device), rows
    ``rank::world_size`` (the rows :func:`dl1.data.loaders.shard` gives that rank).  Seeded per step, one process and
    N ranks use the same noise for every image, and a resumed run the same as an uninterrupted one."""
    eps = torch.randn(rows * world_size, z_dim, generator=generator, device=generator.device)  # (B, z_dim)
    return eps[rank::world_size]  # (rows, z_dim)


def fit_pixel_categorical(imgs: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """The independent per-pixel categorical baseline: log-probabilities ``[C·H·W, 16]`` from 4-bit ``[N, C, H, W]``.

    Each pixel position gets its own distribution over the 16 values, fit by counting with ``alpha`` pseudo-counts
    (Laplace smoothing, so unseen values keep a finite likelihood).
    """
    flat = imgs.reshape(imgs.shape[0], -1).long()  # (N, P)
    P = flat.shape[1]  # noqa: N806
    index = (torch.arange(P, device=flat.device) * NUM_LEVELS + flat).reshape(-1)  # (N·P,)
    counts = torch.bincount(index, minlength=P * NUM_LEVELS).reshape(P, NUM_LEVELS).double() + alpha  # (P, 16)
    return (counts / counts.sum(dim=1, keepdim=True)).log()


def pixel_categorical_bpd(log_probs: torch.Tensor, imgs: torch.Tensor) -> float:
    """Bits per dimension of 4-bit images ``[N, C, H, W]`` under :func:`fit_pixel_categorical`'s table."""
    flat = imgs.reshape(imgs.shape[0], -1).long()  # (N, P)
    nll = -log_probs.gather(1, flat.T.contiguous()).T  # (N, P) nats
    return float(nll.mean() / torch.log(torch.tensor(2.0, dtype=nll.dtype)))
