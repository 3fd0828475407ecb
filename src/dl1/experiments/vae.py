"""VAE on 4-bit MNIST / Fashion-MNIST: bits per dimension, 8x8 sample grids, 2-D latent manifold (A3 part 1).

Pixels are discretised to 16 levels, ``min(floor(16·x/255), 15)`` (identical to the course's ``floor(16·ToTensor(x))``
clamped to 15); the train set is split into train/validation with a seeded permutation (54 000 / 6 000 for MNIST-sized
data).  The training loss is the negative ELBO in bits per dimension; the best-validation-bpd checkpoint is tested.
An independent per-pixel categorical model fit on the training set is reported beside the VAE as a baseline.

The reparameterisation noise is drawn per step from a generator seeded by ``(seed, step)`` (and, for an evaluation,
once for the whole split), so that a resumed run repeats an uninterrupted one.  Under ``torchrun --nproc_per_node N -m
dl1 run vae ...`` it trains data parallel: each rank takes ``--batch_size / N`` images of every global batch and those
images' rows of the global batch's noise, so N ranks compute what one process computes; validation is shared by the
ranks; rank 0 writes the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dl1.config import arg, precision_arg
from dl1.data.images import DATASETS
from dl1.errors import UsageError
from dl1.runtime import Run, choose_device, seed_everything

if TYPE_CHECKING:  # torch is imported inside the functions: a missing dataset is reported before it loads
    import torch

SAMPLES_DIR = "samples"


@dataclass(frozen=True)
class Config:
    z_dim: int = arg(20, "Dimensionality of the latent space z.", min=1, max=1024)
    num_filters: int = arg(32, "Channels c of the encoder/decoder convolutions (2c in the deeper layers).",
                           min=1, max=512)
    lr: float = arg(1e-3, "Adam learning rate.", min=0.0, max=10.0, min_inclusive=False)
    batch_size: int = arg(128, "Mini-batch size, the global batch under torchrun (each of N ranks takes 1/N).", min=1,
                          max=4096)
    epochs: int = arg(80, "Number of training epochs.", min=0, max=10_000)
    seed: int = arg(42, "Random seed (validation split, shuffling, initialisation, sampling).", min=0, max=2**32 - 1)
    dataset: str = arg("mnist", "Dataset, discretised to 4 bits ('synthetic' writes tiny fake IDX files into the run "
                                "folder: for smoke runs only).", choices=DATASETS)
    data_dir: str | None = arg(None, "Folder holding MNIST/ or FashionMNIST/ (default: $DL1_DATA, else ./data; "
                                     "Debian's dataset-fashion-mnist is found automatically).")
    val_size: int = arg(6000, "Training images held out for validation (fewer than the training set has).",
                        min=1, max=59_999)
    sample_every: int = arg(5, "Save an 8x8 grid of samples every N epochs (and before training and at the end).",
                            min=1, max=10_000)
    device: str = arg("auto", "Device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps.")
    precision: str = precision_arg()
    resume: str | None = arg(None, "Run folder (or checkpoint file) to continue from; --epochs may be raised.")

    def check(self) -> None:
        if self.resume and not Path(self.resume).exists():
            raise UsageError(f"--resume: {self.resume} does not exist (give a run folder or a checkpoint file)")


GLOBAL_BATCH = ("batch_size",)  # data parallel under torchrun
SMOKE = {"dataset": "synthetic", "epochs": 2, "num_filters": 4, "z_dim": 2, "batch_size": 16, "val_size": 16,
         "sample_every": 1}


# -- data --------------------------------------------------------------------------------------------------------------
def load_4bit(cfg: Config, run: Run) -> dict[str, torch.Tensor]:
    """``{"train", "val", "test"}`` -> uint8 tensors ``[N, 1, 28, 28]`` with values 0..15."""
    import torch

    from dl1.data.images import uint8_images
    from dl1.models.vae import discretize

    arrays = uint8_images(cfg.dataset, cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed,
                          fake_idx_dir=run.synthetic_dir() if cfg.dataset == "synthetic" else None)
    return {split: discretize(torch.from_numpy(getattr(arrays, f"x_{split}"))).to(torch.uint8)
            for split in ("train", "val", "test")}


def log_baseline(data: dict[str, torch.Tensor], run: Run) -> dict[str, float]:
    """Fit the per-pixel categorical baseline on the training set; log its val/test bpd once per run folder."""
    from dl1.models.vae import fit_pixel_categorical, pixel_categorical_bpd

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
    import torch

    from dl1.losses import elbo_to_bpd
    from dl1.models.vae import batch_noise

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
    import torch

    from dl1.report.generative import level_grid, save_epoch_arrays

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
    import torch

    from dl1.data.loaders import TensorBatches
    from dl1.models.vae import batch_noise
    from dl1.train import Trainer, distributed

    info = distributed.current()  # under torchrun: each rank trains on its share of every global batch
    noise = torch.Generator(device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def on_epoch_end(epoch: int, results: dict) -> None:
        if epoch % cfg.sample_every == 0 or epoch == cfg.epochs:
            save_samples(model, run, epoch, cfg.seed, step=trainer.step)

    trainer = Trainer(run, {"vae": model}, {"adam": optimizer}, epochs=cfg.epochs, monitor="val/bpd", mode="min",
                      device=device, desc="vae", on_epoch_end=on_epoch_end, precision=cfg.precision)
    net = trainer.wrap(model)  # data parallel: DistributedDataParallel averages the gradients

    def batches(epoch: int) -> TensorBatches:
        return TensorBatches(data["train"], batch_size=distributed.local_batch(cfg.batch_size), shuffle=True,
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
    from dl1.models.vae import VAE, check_step_memory
    from dl1.runtime import available_memory
    from dl1.train import distributed

    device = choose_device(cfg.device)
    world = distributed.current().world_size  # memory is checked for this rank's share of the global batch
    check_step_memory(lambda: VAE(cfg.num_filters, cfg.z_dim), VAE.activation_floats(cfg.num_filters),
                      distributed.local_batch(cfg.batch_size), available_memory(device),
                      what=f"the VAE (--num_filters {cfg.num_filters})", where=str(device),
                      flag="--batch_size" if world == 1 else f"per-rank --batch_size / {world} =")
    seed_everything(cfg.seed)
    data = {k: v.to(device) for k, v in load_4bit(cfg, run).items()}
    baseline = log_baseline(data, run)
    model = VAE(cfg.num_filters, cfg.z_dim, cfg.lr).to(device)
    if not (run.path(SAMPLES_DIR) / "epoch_000.npz").exists():
        save_samples(model, run, 0, cfg.seed)
    trainer, result = train(cfg, run, model, data, device)
    trainer.load_best()
    with trainer.autocast():  # the precision it trained and validated in; the whole split on every rank
        test = evaluate_split(model, data["test"], cfg.seed)
    run.log(trainer.step, "test", test, epoch=result["best_epoch"])
    figures = make_figures(run.dir, model=model) if run.enabled else []
    return run.finish(test_bpd=test["bpd"], best_val_bpd=result["best_value"], best_epoch=result["best_epoch"],
                      test=test, baseline_pixel_categorical=baseline, epochs_run=result["epochs_run"],
                      steps=result["steps"], train_time_s=result["train_time_s"], dataset=cfg.dataset,
                      synthetic_data=cfg.dataset == "synthetic", device=str(device),
                      sizes={k: len(v) for k, v in data.items()}, figures=[str(p) for p in figures])


def make_figures(run_dir: str | Path, model=None) -> list[Path]:
    """Rebuild every figure of a run folder (``dl1.report.generative.vae_figures``)."""
    from dl1.report.generative import vae_figures

    return vae_figures(run_dir, model=model)
