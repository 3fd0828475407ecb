"""The runner of ``dl1 run vae`` (flags and description: :mod:`dl1.experiments.vae`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dl1.data import loaders
from dl1.data.images import uint8_images
from dl1.experiments.memory_advice import check_step_fits
from dl1.experiments.vae import SAMPLES_DIR, Config
from dl1.export_format import Exported, module_state, trainer_modules
from dl1.losses import elbo_to_bpd
from dl1.models.vae import VAE, batch_noise, discretize, fit_pixel_categorical, pixel_categorical_bpd
from dl1.report.generative import level_grid, save_epoch_arrays, vae_figures
from dl1.run import device as run_device
from dl1.run.device import choose_device, seed_everything
from dl1.run.folder import Run
from dl1.run.reader import checkpoint_file
from dl1.train import Trainer, distributed


# -- data --------------------------------------------------------------------------------------------------------------
def load_4bit(cfg: Config, run: Run) -> dict[str, torch.Tensor]:
    """``{"train", "val", "test"}`` -> uint8 tensors ``[N, 1, 28, 28]`` with values 0..15."""
    arrays = uint8_images(cfg.dataset, cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed,
                          fake_idx_dir=run.synthetic_dir() if cfg.dataset == "synthetic" else None)
    return {split: discretize(torch.from_numpy(getattr(arrays, f"x_{split}"))).to(torch.uint8)
            for split in ("train", "val", "test")}


def log_baseline(data: dict[str, torch.Tensor], run: Run) -> dict[str, float]:
    """Fit the per-pixel categorical baseline on the training set; log its val/test bpd once per run folder."""
    done = run.metrics("baseline")
    if done:
        return {k: done[-1][k] for k in ("val_bpd", "test_bpd")}
    table = fit_pixel_categorical(data["train"].cpu())
    result = {f"{s}_bpd": pixel_categorical_bpd(table, data[s].cpu()) for s in ("val", "test")}
    run.log(0, "baseline", result, model="per-pixel categorical (Laplace, fit on train)")
    return result


# -- evaluation and samples -------------------------------------------------------------------------------------------
def evaluate_split(model: torch.nn.Module, images: torch.Tensor, seed: int, batch_size: int = 500,
                   part: slice | None = None) -> dict[str, float]:
    """Per-image means of ``bpd``, ``reconstruction_loss``, ``regularization_loss``, ``ELBO`` over a split (or its
    ``part``: one rank's share), and ``n``, the images scored.  The noise is drawn for the whole split from a
    generator seeded by ``seed``: an image gets the same noise whichever rank scores it."""

    model.eval()
    generator = torch.Generator(device=images.device).manual_seed(seed)
    noise = batch_noise(generator, len(images), model.z_dim)[part or slice(None)]  # (n, z_dim)
    images = images[part or slice(None)]  # (n, 1, 28, 28)
    totals = torch.zeros(3, dtype=torch.float64, device=images.device)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].long()  # (B, 1, 28, 28)
            rec, reg, _ = model(x, noise[start:start + batch_size])
            totals += torch.stack([rec.double(), reg.double(), (rec + reg).double()]) * len(x)
    rec, reg, elbo = (totals / max(len(images), 1)).tolist()
    return {"bpd": float(elbo_to_bpd(torch.tensor(elbo), images.shape)), "reconstruction_loss": rec,
            "regularization_loss": reg, "ELBO": elbo, "n": len(images)}


def save_samples(model, run: Run, epoch: int, seed: int, n: int = 64, step: int = 0) -> Path:
    """Draw ``n`` samples with a generator seeded by ``(seed, epoch)``, store them as uint8 in ``samples/`` (and show
    the grid in TensorBoard at ``step``, with ``--tensorboard``)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed * 1000 + epoch)
    model.eval()
    images = model.sample(n, generator=generator).to(torch.uint8).cpu().numpy()  # (n, 1, 28, 28)
    run.log_image("samples", level_grid(images), step)
    folder = run.path(SAMPLES_DIR)
    if not run.enabled:
        return folder / f"epoch_{epoch:03d}.npz"
    return save_epoch_arrays(folder, epoch, images=images)


# -- training ----------------------------------------------------------------------------------------------------------
def train(cfg: Config, run: Run, model, data: dict[str, torch.Tensor], device: torch.device) -> Any:
    """Fit with the shared Trainer (Adam, bpd as the loss, best checkpoint on val/bpd); returns (trainer, result)."""
    info = distributed.current()  # under torchrun: each rank trains on its share of every global batch
    noise = torch.Generator(device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def on_epoch_end(epoch: int, results: dict) -> None:
        if epoch % cfg.sample_every == 0 or epoch == cfg.epochs:
            save_samples(model, run, epoch, cfg.seed, step=trainer.step)

    trainer = Trainer(run, {"vae": model}, {"adam": optimizer}, epochs=cfg.epochs, monitor="val/bpd", mode="min",
                      device=device, desc="vae", on_epoch_end=on_epoch_end, precision=cfg.precision,
                      compile=cfg.compile)
    net = trainer.wrap(model)  # data parallel: DistributedDataParallel averages the gradients

    def batches(epoch: int) -> loaders.TensorBatches:
        return loaders.TensorBatches(data["train"], batch_size=distributed.local_batch(cfg.batch_size), shuffle=True,
                             seed=cfg.seed, epoch=epoch, rank=info.rank, world_size=info.world_size)

    def train_step(batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        model.train()
        x = batch[0].long()  # (b, 1, 28, 28) values 0..15
        noise.manual_seed(cfg.seed * 1_000_003 + trainer.step)  # this step's noise, whichever rank, however resumed
        rec, reg, bpd = net(x, batch_noise(noise, len(x), model.z_dim, info.rank, info.world_size))
        trainer.backward_step(bpd)
        return {"bpd": bpd.detach(), "reconstruction_loss": rec.detach(), "regularization_loss": reg.detach(),
                "ELBO": (rec + reg).detach()}

    def evaluate(epoch: int) -> dict[str, dict[str, float]]:  # each rank scores its part; the engine averages
        return {"val": evaluate_split(model, data["val"], cfg.seed, part=distributed.shard(len(data["val"])))}

    result = trainer.fit(batches, train_step, evaluate, resume=cfg.resume)
    return trainer, result


def run(cfg: Config, run: Run) -> dict[str, Any]:
    device = run.device = choose_device(cfg.device)
    world = distributed.current().world_size  # memory is checked for this rank's share of the global batch
    check_step_fits(lambda: VAE(cfg.num_filters, cfg.z_dim), VAE.activation_floats(cfg.num_filters),
                    distributed.local_batch(cfg.batch_size), run_device.available_memory(device),
                    what=f"the VAE (--num_filters {cfg.num_filters})", where=str(device),
                    flag="--batch_size" if world == 1 else f"per-rank --batch_size / {world} =")
    seed_everything(cfg.seed)
    data = {k: v.to(device) for k, v in load_4bit(cfg, run).items()}
    baseline = log_baseline(data, run)
    model = VAE(cfg.num_filters, cfg.z_dim).to(device)
    if not (run.path(SAMPLES_DIR) / "epoch_000.npz").exists():
        save_samples(model, run, 0, cfg.seed)
    trainer, result = train(cfg, run, model, data, device)
    trainer.load_best()
    with trainer.autocast():  # the precision it trained and validated in; the whole split on every rank
        test = evaluate_split(model, data["test"], cfg.seed)
    run.log(trainer.step, "test", test, epoch=result["best_epoch"])
    figures = vae_figures(run.dir, model=model) if run.enabled else []
    return run.finish(test_bpd=test["bpd"], best_val_bpd=result["best_value"], best_epoch=result["best_epoch"],
                      test=test, baseline_pixel_categorical=baseline, epochs_run=result["epochs_run"],
                      steps=result["steps"], train_time_s=result["train_time_s"], dataset=cfg.dataset,
                      synthetic_data=cfg.dataset == "synthetic", device=str(device),
                      sizes={k: len(v) for k, v in data.items()}, figures=[str(p) for p in figures])


def export(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    """The trained VAE (encoder and decoder)."""
    path = checkpoint_file(run_dir, prefer=prefer)
    modules, where = trainer_modules(path)
    return Exported(module_state(modules, "vae", path), "dl1.models.vae.VAE",
                    {"num_filters": config["num_filters"], "z_dim": config["z_dim"], "lr": config["lr"]},
                    checkpoint=where)
