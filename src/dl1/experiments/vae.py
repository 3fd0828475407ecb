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

from dl1.config import arg, shared
from dl1.data.catalog import IMAGE_DATASETS as DATASETS
from dl1.errors import UsageError
from dl1.experiments.checks import Precision, VisionData
from dl1.experiments.registry import Experiment, runner
from dl1.lazy import Ref
from dl1.report import summary as keys

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
    seed: int = shared("seed", 42, "Random seed (validation split, shuffling, initialisation, sampling).")
    dataset: str = arg("mnist", "Dataset, discretised to 4 bits ('synthetic' writes tiny fake IDX files into the run "
                                "folder: for smoke runs only).", choices=DATASETS)
    data_dir: str | None = shared("data_dir", help=(
        "Folder holding MNIST/ or FashionMNIST/ (default: $DL1_DATA, else ./data; Debian's dataset-fashion-mnist is "
        "found automatically)."))
    val_size: int = arg(6000, "Training images held out for validation (fewer than the training set has).",
                        min=1, max=59_999)
    sample_every: int = arg(5, "Save an 8x8 grid of samples every N epochs (and before training and at the end).",
                            min=1, max=10_000)
    device: str = shared("device")
    precision: str = shared("precision")
    compile: bool = shared("compile")
    resume: str | None = shared("resume", help=(
        "Run folder (or checkpoint file) to continue from; --epochs may be raised."))
    dist_timeout: float = shared("dist_timeout")

    def check(self) -> None:
        if self.resume and self.resume != "auto" and not Path(self.resume).exists():  # auto: see --run_dir
            raise UsageError(f"--resume: {self.resume} does not exist (give a run folder or a checkpoint file)")


SMOKE = {"dataset": "synthetic", "epochs": 2, "num_filters": 4, "z_dim": 2, "batch_size": 16, "val_size": 16,
         "sample_every": 1}

EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, global_batch=("batch_size",), preflight=(VisionData(), Precision()),
    figures=Ref("dl1.report.generative:vae_figures"), export=runner("vae", "export"),
    summary_keys=(keys.TEST_BPD,))
