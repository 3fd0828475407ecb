"""Adversarial autoencoder (the course's ``part2/models.py``): encoder, decoder, latent discriminator and both losses.

encoder -> decoder -> discriminator -> ``AdversarialAE`` (forward, autoencoder loss, discriminator loss, sample).

Images are ``[B, 1, 28, 28]`` in ``[-1, 1]`` (``ToTensor`` then ``Normalize(0.5, 0.5)``).  The encoder is deterministic;
the discriminator sees codes ``z`` and returns **logits** (``> 0`` means "from the prior N(0, I)").  The generator loss
is the non-saturating one, ``BCEWithLogits(D(E(x)), 1) = -log sigmoid(D(E(x)))``: the encoder is pushed to make its
codes look like prior samples.  (Some published solutions use ``-log(1 - sigmoid(D(E(x))))``, which *helps* the
discriminator; both equal ln 2 at zero logits, so the course's unit test cannot tell them apart; ``tests/test_aae.py``
checks the gradient's sign.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dl1.models.vae import conv_decoder, conv_encoder


def prior_like(z: torch.Tensor) -> torch.Tensor:
    """Samples of the prior ``N(0, I)`` shaped like the codes ``z`` from the global random stream, drawn in float32
    also when ``z`` is a float16 or bfloat16 autocast output (autocast casts them for the matrix products)."""
    dtype = torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype
    return torch.randn(z.shape, dtype=dtype, device=z.device)


class PriorDraws:
    """Prior samples ``N(0, I)`` that depend only on ``(seed, key)``, so that data-parallel ranks draw exactly the
    samples one process draws: ``draw(key, rows, part)`` re-seeds a generator on ``device`` with ``(seed, key)``
    (e.g. the optimisation step: a resumed run draws the same), draws ``(rows, z_dim)`` float32 values and returns the
    rows ``part`` (this rank's share).  The global random stream is left alone."""

    def __init__(self, seed: int, z_dim: int, device: torch.device | str = "cpu"):
        self.seed, self.z_dim = seed, z_dim
        self.generator = torch.Generator(device=device)

    def draw(self, key: int, rows: int, part: slice = slice(None)) -> torch.Tensor:
        self.generator.manual_seed((self.seed * 1_000_003 + key) % 2**63)
        return torch.randn(rows, self.z_dim, generator=self.generator, device=self.generator.device)[part]


class ConvEncoder(nn.Module):
    """Deterministic Tutorial-9 encoder: ``[B, C, 28, 28] -> [B, z_dim]`` (ReLU, three stride-2 convolutions)."""

    def __init__(self, z_dim: int = 8, num_input_channels: int = 1, num_filters: int = 32):
        super().__init__()
        self.net = conv_encoder(num_input_channels, num_filters, z_dim, nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, z_dim)


class ConvDecoder(nn.Module):
    """Tutorial-9 decoder with ReLU and a ``Tanh`` output: ``[B, z_dim] -> [B, C, 28, 28]`` in ``[-1, 1]``."""

    def __init__(self, z_dim: int = 8, num_input_channels: int = 1, num_filters: int = 32):
        super().__init__()
        self.linear = nn.Sequential(nn.Linear(z_dim, 2 * 16 * num_filters), nn.ReLU())
        self.net = conv_decoder(num_filters, num_input_channels, nn.ReLU, nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear(z)                          # (B, 2c * 16)
        h = h.reshape(h.shape[0], -1, 4, 4)         # (B, 2c, 4, 4)
        return self.net(h)                          # (B, C, 28, 28)


class Discriminator(nn.Module):
    """MLP on latent codes: ``[B, z_dim] -> [B, 1]`` logits (no sigmoid; ``> 0`` = classified as a prior sample)."""

    def __init__(self, z_dim: int = 8, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, 1)


class AdversarialAE(nn.Module):
    """Encoder + decoder trained to reconstruct, with a discriminator pulling the code distribution towards N(0, I)."""

    @staticmethod
    def activation_floats(num_filters: int) -> int:
        """About the float32 values one training image keeps for the backward pass (CPU peak memory, within ~15 %)."""
        return 2700 * num_filters + 784 * 8

    def __init__(self, z_dim: int = 8, num_input_channels: int = 1, num_filters: int = 32):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = ConvEncoder(z_dim, num_input_channels, num_filters)
        self.decoder = ConvDecoder(z_dim, num_input_channels, num_filters)
        self.discriminator = Discriminator(z_dim)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        """Encoder + decoder parameters: the ones the autoencoder optimiser owns."""
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)              # (B, z_dim)
        recon_x = self.decoder(z)        # (B, C, 28, 28)
        return recon_x, z

    def get_loss_autoencoder(self, x: torch.Tensor, recon_x: torch.Tensor, z_fake: torch.Tensor,
                             lambda_: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``ae_loss = lambda_ * MSE(x, recon_x) + (1 - lambda_) * BCEWithLogits(D(z_fake), 1)`` and its parts.

        The gradient of the generator term also reaches the discriminator's parameters; the training step must give
        this loss to an optimiser that holds only encoder and decoder parameters (see ``dl1.experiments.aae``).
        """
        recon_loss = F.mse_loss(recon_x, x)                                   # mean over B, C, H, W
        logits = self.discriminator(z_fake)                                   # (B, 1)
        gen_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        ae_loss = lambda_ * recon_loss + (1.0 - lambda_) * gen_loss
        logging_dict = {"gen_loss": gen_loss.detach(), "recon_loss": recon_loss.detach(), "ae_loss": ae_loss.detach()}
        return ae_loss, logging_dict

    def get_loss_discriminator(self, z_fake: torch.Tensor, z_real: torch.Tensor | None = None,
                               discriminator: nn.Module | None = None
                               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean of ``BCE(D(z_real), 1)`` and ``BCE(D(z_fake), 0)``, ``z_real ~ N(0, I)`` (drawn here from the global
        random stream unless given); no gradient to the encoder.  ``discriminator``: what scores the codes (default
        ``self.discriminator``; data parallel, its DistributedDataParallel wrapper)."""
        D = self.discriminator if discriminator is None else discriminator  # noqa: N806
        z_real = prior_like(z_fake) if z_real is None else z_real            # (B, z_dim), same device
        logits_real = D(z_real)                                               # (B, 1)
        logits_fake = D(z_fake.detach())                                      # (B, 1)
        loss_real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
        loss_fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
        disc_loss = 0.5 * (loss_real + loss_fake)
        correct = (logits_real > 0).sum() + (logits_fake < 0).sum()
        accuracy = correct.float() / (logits_real.numel() + logits_fake.numel())
        logging_dict = {"disc_loss": disc_loss.detach(), "loss_real": loss_real.detach(),
                        "loss_fake": loss_fake.detach(), "accuracy": accuracy.detach()}
        return disc_loss, logging_dict

    @torch.no_grad()
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``batch_size`` prior samples ``z ~ N(0, I)``: ``[B, C, 28, 28]`` in ``[-1, 1]``."""
        z = torch.randn(batch_size, self.z_dim, generator=generator, device=self.device if generator is None else "cpu")
        return self.decoder(z.to(self.device))
