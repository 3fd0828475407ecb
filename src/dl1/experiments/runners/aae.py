"""The runner of ``dl1 run aae`` (flags and description: :mod:`dl1.experiments.aae`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dl1.data import loaders
from dl1.data.images import class_cycle_indices, first, uint8_images
from dl1.experiments.aae import Config
from dl1.experiments.memory_advice import check_step_fits
from dl1.export_format import Exported, module_state, trainer_modules
from dl1.models.aae import AdversarialAE, PriorDraws, prior_like
from dl1.report.aae import make_figures, save_snapshot, tensorboard_images, to_uint8
from dl1.run import device as run_device
from dl1.run.device import choose_device, seed_everything
from dl1.run.folder import Run
from dl1.run.reader import checkpoint_file
from dl1.train import Trainer, distributed


# -- data -------------------------------------------------------------------------------------------------------------
@dataclass
class AAEData:
    """uint8 images ``(N, 1, 28, 28)`` (scaled to [-1, 1] per batch by ``scale``) with labels and class names."""

    x_train: Any
    x_test: Any
    y_test: Any
    classes: list[str]
    synthetic: bool


def scale(images):
    """uint8 0..255 -> float in [-1, 1], exactly ``Normalize(0.5, 0.5)(ToTensor()(img))``."""
    return images.float() / 127.5 - 1.0


def load_data(cfg: Config, device) -> AAEData:
    """Training and test images on ``device`` (the course uses only the training set; we also evaluate on test)."""
    a = uint8_images(cfg.dataset, cfg.data_dir, val_size=0, seed=cfg.seed)
    to = lambda x: torch.as_tensor(np.ascontiguousarray(x)).to(device)  # noqa: E731
    return AAEData(to(first(a.x_train, cfg.train_size)), to(first(a.x_test, cfg.test_size)),
                   to(first(a.y_test, cfg.test_size)), list(a.classes), cfg.dataset == "synthetic")


def snapshot_epochs(epochs: int, save_every: int) -> set[int]:
    """0 (before training), 1, every ``save_every`` and the last epoch."""
    chosen = {0, 1, epochs}
    if save_every:
        chosen |= set(range(save_every, epochs + 1, save_every))
    return {e for e in chosen if e <= epochs}


# -- evaluation -------------------------------------------------------------------------------------------------------
def evaluate_test(model, data: AAEData, batch_size: int = 1000, prior=None) -> dict[str, float]:
    """Test reconstruction MSE (mean over images and pixels) and discriminator accuracy on test codes vs prior
    samples (``prior``: one row per test image; none: fresh draws), of this rank's part of the test split (all of it
    in one process); ``n`` = its images, by which the engine weighs the ranks' averages."""
    part = distributed.shard(len(data.x_test))
    x_test, prior = data.x_test[part], None if prior is None else prior[part]
    model.eval()
    sq_err, n_pix, correct, n = 0.0, 0, 0, 0
    with torch.no_grad():
        for start in range(0, len(x_test), batch_size):
            x = scale(x_test[start:start + batch_size])                         # (b, 1, 28, 28)
            recon, z = model(x)
            sq_err += float(((recon.float() - x) ** 2).sum())
            n_pix += x.numel()
            real = model.discriminator(prior_like(z) if prior is None else prior[start:start + batch_size])
            fake = model.discriminator(z)
            correct += int((real > 0).sum() + (fake < 0).sum())
            n += 2 * len(x)
    model.train()
    return {"recon_loss": sq_err / max(n_pix, 1), "disc_accuracy": correct / max(n, 1), "n": len(x_test)}


def take_snapshot(model, data: AAEData, run: Run, epoch: int, idx: np.ndarray, prior_z, step: int = 0) -> None:
    """Write ``snapshots/epoch_NNN.npz``: fixed test images, their reconstructions, decoded fixed prior draws (and
    show the grids in TensorBoard at ``step``, with ``--tensorboard``).  Nothing on ranks > 0 (rank 0 writes; the
    weights are the same on every rank, and a snapshot draws nothing from the random stream)."""
    if not run.enabled:
        return
    model.eval()
    with torch.no_grad():
        x = scale(data.x_test[torch.as_tensor(idx, device=data.x_test.device)])
        recon, _ = model(x)
        arrays = {"originals": to_uint8(x), "recon": to_uint8(recon), "samples": to_uint8(model.decoder(prior_z))}
        if model.z_dim == 2:
            codes = torch.cat([model.encoder(scale(data.x_test[s:s + 1000])) for s in range(0, len(data.x_test), 1000)])
            arrays.update(codes=codes.float().cpu().numpy(), labels=data.y_test.cpu().numpy())
    model.train()
    for tag, image in tensorboard_images(arrays).items():
        run.log_image(tag, image, step)
    if run.enabled:
        save_snapshot(run.dir, epoch, **arrays)


# -- training ---------------------------------------------------------------------------------------------------------
def build(cfg: Config, device):
    """The model and its two optimisers over disjoint parameter sets."""
    model = AdversarialAE(cfg.z_dim, num_filters=cfg.num_filters).to(device)
    optimizers = {"ae": torch.optim.Adam(model.autoencoder_parameters(), lr=cfg.ae_lr, betas=(0.5, 0.999)),
                  "disc": torch.optim.SGD(model.discriminator.parameters(), lr=cfg.d_lr)}
    return model, optimizers


def make_train_step(model, trainer, lambda_: float, prior=None):
    """One batch: autoencoder update, then discriminator update on the same (detached) codes against prior samples:
    this rank's rows of the global batch's draws of ``prior`` (a :class:`~dl1.models.aae.PriorDraws`) keyed by the
    step (none: fresh draws from the random stream).  Data parallel, the forward passes run through the trainer's
    DistributedDataParallel wrappers: the whole model for the autoencoder step, the discriminator for its own."""
    info = distributed.current()
    net, discriminator = trainer.wrap(model), trainer.wrap(model.discriminator)

    def train_step(batch) -> dict[str, Any]:
        x = scale(batch[0])                                                    # (B, 1, 28, 28) in [-1, 1]
        z_real = None if prior is None else \
            prior.draw(trainer.step, len(x) * info.world_size, slice(info.rank, None, info.world_size))  # (B, z_dim)
        recon_x, z = net(x)                                                    # (B, 1, 28, 28), (B, z_dim)
        ae_loss, ae_parts = model.get_loss_autoencoder(x, recon_x, z, lambda_)
        trainer.backward_step(ae_loss, "ae")                                   # Adam: encoder + decoder only
        disc_loss, d_parts = model.get_loss_discriminator(z, z_real, discriminator)  # z is detached inside
        trainer.backward_step(disc_loss, "disc")                               # SGD: discriminator only
        d_parts["disc_accuracy"] = d_parts.pop("accuracy")
        return {**ae_parts, **d_parts}

    return train_step


def run(cfg: Config, run: Run) -> dict[str, Any]:
    seed_everything(cfg.seed)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    device = run.device = choose_device(cfg.device)
    info, batch_size = distributed.current(), distributed.local_batch(cfg.batch_size)  # this rank's share
    check_step_fits(lambda: AdversarialAE(cfg.z_dim, num_filters=cfg.num_filters),
                    AdversarialAE.activation_floats(cfg.num_filters), batch_size, run_device.available_memory(device),
                    what=f"the AAE (--num_filters {cfg.num_filters})", where=str(device))
    data = load_data(cfg, device)
    model, optimizers = build(cfg, device)
    tag = f"({cfg.dataset}{' - SYNTHETIC smoke data' if data.synthetic else ''}, z={cfg.z_dim}, lambda={cfg.lambda_})"
    run.save_json("aae_meta.json", {"classes": data.classes, "dataset": cfg.dataset, "synthetic": data.synthetic,
                                    "z_dim": cfg.z_dim, "lambda_": cfg.lambda_, "tag": tag})
    idx = class_cycle_indices(data.y_test.cpu().numpy(), cfg.n_images // 2)
    prior_z = torch.randn(cfg.n_images, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    prior = PriorDraws(cfg.seed, cfg.z_dim, device)  # the same draws on every rank (each takes its rows)
    test_prior = prior.draw(-1, len(data.x_test))     # the same prior samples at every evaluation
    chosen = snapshot_epochs(cfg.epochs, cfg.save_every)

    trainer = Trainer(run, {"model": model}, optimizers, epochs=cfg.epochs, monitor=None, device=device, desc="aae",
                      precision=cfg.precision, compile=cfg.compile)

    def evaluate(epoch: int) -> dict[str, dict[str, float]]:
        if epoch in chosen:
            take_snapshot(model, data, run, epoch, idx, prior_z, trainer.step)
        return {"test": evaluate_test(model, data, prior=test_prior)}

    def batches(epoch: int):
        return loaders.TensorBatches(data.x_train, batch_size=batch_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                             rank=info.rank, world_size=info.world_size)

    if not (run.dir / "snapshots" / "epoch_000.npz").exists():
        take_snapshot(model, data, run, 0, idx, prior_z)                      # "0 epochs": before any update
    result = trainer.fit(batches, make_train_step(model, trainer, cfg.lambda_, prior), evaluate, resume=cfg.resume)
    figures = make_figures(run.dir) if run.enabled else []
    train_hist, test_hist = run.metrics("train"), run.metrics("test")
    return run.finish(
        dataset=cfg.dataset, synthetic=data.synthetic, device=str(device), epochs_run=result["epochs_run"],
        steps=result["steps"], train_time_s=result["train_time_s"], n_train=len(data.x_train),
        n_test=len(data.x_test),
        test={"recon_loss": test_hist[-1]["recon_loss"], "disc_accuracy": test_hist[-1]["disc_accuracy"]},
        train={k: train_hist[-1][k] for k in ("recon_loss", "gen_loss", "disc_loss", "disc_accuracy")},
        history={"epoch": [r["epoch"] for r in train_hist],
                 "train_recon_loss": [r["recon_loss"] for r in train_hist],
                 "test_recon_loss": [r["recon_loss"] for r in test_hist],
                 "disc_accuracy": [r["disc_accuracy"] for r in train_hist],
                 "gen_loss": [r["gen_loss"] for r in train_hist], "disc_loss": [r["disc_loss"] for r in train_hist]},
        figures=[str(Path(p).relative_to(run.dir)) for p in figures])


def export(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    """The trained adversarial autoencoder."""
    path = checkpoint_file(run_dir, prefer=prefer)
    modules, where = trainer_modules(path)
    return Exported(module_state(modules, "model", path), "dl1.models.aae.AdversarialAE",
                    {"z_dim": config["z_dim"], "num_filters": config["num_filters"]}, checkpoint=where)
