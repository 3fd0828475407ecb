"""Figures of the generative models: image grids, the VAE's latent manifold, learning curves from ``metrics.jsonl``,
and the per-epoch image snapshots (``<folder>/epoch_NNN.npz``) that the VAE and the AAE store in their run folders.

Importing this module imports torch and torchvision (the VAE figures need them), not matplotlib; the snapshots are
read by :func:`dl1.data.files.read_npz`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import make_grid

from dl1.data.files import read_npz
from dl1.models.vae import VAE
from dl1.report import new_figure, save_figure
from dl1.run.files import make_folder, near_root, read_jsonl, write_atomic, write_file
from dl1.run.reader import RunFolder, checkpoint_file
from dl1.train import load_checkpoint

VAE_SAMPLES = "samples"


# -- snapshots: one compressed npz per epoch ---------------------------------------------------------------------------
def save_epoch_arrays(folder: str | Path, epoch: int, **arrays: np.ndarray) -> Path:
    """Write ``folder/epoch_NNN.npz`` atomically (:func:`dl1.run.files.write_atomic`) with the given arrays."""
    folder = Path(folder)
    make_folder(folder)
    path = folder / f"epoch_{epoch:03d}.npz"
    return write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays), near_root(path))  # never through a link


def load_epoch_arrays(folder: str | Path) -> dict[int, dict[str, np.ndarray]]:
    """Every ``folder/epoch_NNN.npz``, keyed by epoch (0 = before training), read by :func:`read_npz`: arrays only
    (pickles are refused), a cut, corrupt or hostile file is one line naming it."""
    out = {}
    for path in sorted(Path(folder).glob("epoch_*.npz")):
        try:
            epoch = int(path.stem.split("_")[1])
        except (IndexError, ValueError):
            continue  # not a name dl1 writes (epoch_NNN.npz)
        out[epoch] = read_npz(path)
    return out


# -- image grids ------------------------------------------------------------------------------------------------------
def grid(images: np.ndarray, nrow: int, pad: int = 2) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` -> one ``(rows*(H+pad)+pad, nrow*(W+pad)+pad)`` grey (C=1) or RGB image, white gaps."""
    n, c, h, w = images.shape
    rows = -(-n // nrow)
    out = np.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def level_grid(images: np.ndarray, levels: int = 16, nrow: int = 8) -> np.ndarray:
    """uint8 images ``(N, 1, H, W)`` with values ``0..levels-1`` (the VAE's 4-bit samples) as one grey uint8 grid
    ``0..255`` (what TensorBoard shows)."""
    scaled = (images.astype(np.float32) * (255.0 / (levels - 1))).round().clip(0, 255).astype(np.uint8)
    return grid(scaled, nrow)


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 8,
                    value_range: tuple[float, float] = (0.0, 1.0), padding: int = 2) -> Path:
    """Save ``[B, C, H, W]`` images as one PNG grid, mapping ``value_range`` linearly to black..white.

    E.g. ``value_range=(0, 15)`` for 4-bit images, ``(-1, 1)`` for tanh outputs.  Returns the path.
    """
    lo, hi = value_range
    if hi <= lo:
        raise ValueError(f"value_range must be increasing, got {value_range}")
    x = (images.detach().float().cpu() - lo) / (hi - lo)  # (B, C, H, W) in [0, 1]
    tiled = make_grid(x.clamp(0, 1), nrow=nrow, padding=padding, pad_value=0.5)  # (3, H', W')
    return save_png(tiled[:1] if x.shape[1] == 1 else tiled, path)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Save one ``[C, H, W]`` image with values in [0, 1] as PNG: grey (one channel, a third of the size) if C = 1."""
    array = image.detach().cpu().mul(255).add(0.5).clamp(0, 255).to(torch.uint8)  # (C, H, W)
    path = Path(path)
    make_folder(path.parent)
    if array.shape[0] == 1:
        image = Image.fromarray(array[0].numpy(), mode="L")
    else:
        image = Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")
    return write_file(path, lambda fh: image.save(fh, format="PNG"), near_root(path))  # never through a link


# -- the VAE's latent manifold ----------------------------------------------------------------------------------------
def manifold_latents(grid_size: int = 20, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``grid_size²`` 2-D latents of the manifold, ``[grid², 2]``: ``z = Φ⁻¹((i + 0.5)/grid_size)`` per axis.

    Row-major order: the image in grid row ``r``, column ``c`` (index ``r·grid + c``) decodes
    ``z = (Φ⁻¹(p_c), Φ⁻¹(p_r))`` — z₁ grows to the right, z₂ grows downwards.
    """
    p = (torch.arange(grid_size, dtype=torch.float32, device=device) + 0.5) / grid_size  # (G,)
    z = torch.special.ndtri(p)  # Gaussian percent-point function, (G,)
    z2, z1 = torch.meshgrid(z, z, indexing="ij")  # (G, G) each: row index -> z2, column index -> z1
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)  # (G², 2)


def visualize_manifold(decoder: torch.nn.Module, grid_size: int = 20) -> torch.Tensor:
    """Decode the ``grid_size × grid_size`` percentile grid of a 2-D latent space into one image grid.

    Each cell shows the decoder's **mean** image ``Σ_k p_k·k/15`` (not a sample).  Returns the ``make_grid``
    tensor ``[3, H, W]`` with values in [0, 1]; save it with ``torchvision.utils.save_image``.
    """
    device = next(decoder.parameters()).device
    with torch.no_grad():
        z = manifold_latents(grid_size, device=device)  # (G², 2)
        logits = decoder(z)  # (G², 16, 28, 28)
        probs = F.softmax(logits, dim=1)
        levels = torch.arange(logits.shape[1], device=device, dtype=probs.dtype).view(1, -1, 1, 1) / (
            logits.shape[1] - 1)
        imgs = (probs * levels).sum(dim=1, keepdim=True)  # (G², 1, 28, 28) in [0, 1]
    return make_grid(imgs.cpu(), nrow=grid_size, padding=2, pad_value=0.5)


# -- learning curves --------------------------------------------------------------------------------------------------
def _epoch_series(records: list[dict], split: str, key: str) -> tuple[list[float], list[float]]:
    rows = [r for r in records if r.get("split") == split and key in r and "epoch" in r]
    return [r["epoch"] for r in rows], [float(r[key]) for r in rows]


def plot_learning_curves(metrics_path: str | Path, path: str | Path, title: str = "VAE",
                         keys: Sequence[str] = ("bpd", "reconstruction_loss", "regularization_loss"),
                         baseline: float | None = None) -> Path:
    """Train/validation curves per epoch from ``metrics.jsonl``, one panel per key; test value and baseline marked.

    The last ``test`` record (if any) is drawn as a star at the best epoch; ``baseline`` as a dotted line in the first
    panel.
    """
    records = read_jsonl(Path(metrics_path))
    fig, axes = new_figure(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for split, style in (("train", "-"), ("val", "--")):
            xs, ys = _epoch_series(records, split, key)
            if xs:
                ax.plot(xs, ys, style, marker="o", markersize=2.5, label=split)
        test = [r for r in records if r.get("split") == "test" and key in r]
        if test:
            ax.plot([test[-1].get("epoch", 0)], [test[-1][key]], "*", markersize=11,
                    label=f"test (best epoch) {test[-1][key]:.3f}")
        if baseline is not None and key == keys[0]:
            ax.axhline(baseline, color="grey", linestyle=":", label=f"per-pixel categorical {baseline:.2f}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


# -- a VAE run folder -------------------------------------------------------------------------------------------------
def vae_best_model(run_dir: str | Path):
    """The VAE of a run folder with its best (else last) checkpoint's weights, on the CPU, in eval mode."""
    cfg = RunFolder(run_dir).config
    model = VAE(int(cfg["num_filters"]), int(cfg["z_dim"]), float(cfg["lr"]))
    model.load_state_dict(load_checkpoint(checkpoint_file(run_dir, prefer="best"))["modules"]["vae"])
    return model.eval()


def vae_figures(run_dir: str | Path, model=None) -> list[Path]:
    """Rebuild every figure of a VAE run folder: sample grids, learning curves, and the manifold when z_dim = 2."""
    run_dir = Path(run_dir)
    figures = run_dir / "figures"
    out = []
    for epoch, arrays in load_epoch_arrays(run_dir / VAE_SAMPLES).items():
        out.append(save_image_grid(torch.from_numpy(arrays["images"]), figures / f"vae_samples_epoch_{epoch:03d}.png",
                                   nrow=8, value_range=(0, 15)))
    records = read_jsonl(run_dir / "metrics.jsonl")
    base = [r for r in records if r.get("split") == "baseline"]
    cfg = RunFolder(run_dir).config
    out.append(plot_learning_curves(run_dir / "metrics.jsonl", figures / "vae_learning_curve.png",
                                    title=f"VAE, 4-bit {cfg['dataset']}, z_dim={cfg['z_dim']}",
                                    baseline=base[-1]["test_bpd"] if base else None))
    if cfg["z_dim"] == 2 and (run_dir / "checkpoints").is_dir():
        model = model if model is not None else vae_best_model(run_dir)
        out.append(save_png(visualize_manifold(model.decoder, grid_size=20)[:1], figures / "vae_manifold.png"))
    return out
