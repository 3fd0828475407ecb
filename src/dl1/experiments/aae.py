"""Adversarial autoencoder on MNIST / Fashion-MNIST: reconstruction + latent discriminator (assignment 3, Q2.4-Q2.6).

Images are scaled to [-1, 1] (``ToTensor`` + ``Normalize(0.5, 0.5)``); the model trains on the training set only and is
evaluated every epoch on the test split (reconstruction MSE, and the discriminator's accuracy on test codes vs prior
samples).  Two optimisers: Adam(betas 0.5, 0.999) on encoder + decoder, SGD on the discriminator.

Update order per batch (the template's; the PDF's text describes the reverse, both are valid):
  1. autoencoder step: ``recon, z = model(x)``; ``lambda_ * MSE + (1 - lambda_) * BCE(D(z), "real")``; the Adam
     optimiser holds only encoder + decoder parameters, so the discriminator is not changed by this step;
  2. discriminator step on the same codes ``z`` (detached, i.e. as encoded before step 1) against fresh ``N(0, I)``
     samples; SGD holds only the discriminator's parameters and the codes are detached, so the encoder is not changed.
Each step zeroes its optimiser's gradients first, so step 1's gradients in the discriminator never reach step 2.

Snapshots (reconstructions of the same test images, decoded samples of the same prior draws and, for ``--z_dim 2``,
all test codes) are taken before training ("epoch 0", the course's "0 epochs"), after epoch 1, every ``--save_every``
epochs and after the last one; ``dl1 report`` rebuilds the figures from them.

Under ``torchrun --nproc_per_node N -m dl1 run aae ...`` it trains data parallel: each rank takes ``--batch_size / N``
images of every global batch (both optimisers' gradients are averaged over the ranks); the prior samples of a step
are drawn from ``(--seed, step)`` as the global batch's and each rank takes its items' rows, so that N ranks train as
one process does; the test split is shared by the ranks (metrics weighted by images); rank 0 writes the run folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dl1.config import arg, shared
from dl1.data.catalog import IMAGE_DATASETS as DATASETS
from dl1.errors import UsageError
from dl1.experiments.checks import Precision, VisionData
from dl1.experiments.registry import Experiment, runner
from dl1.lazy import Ref
from dl1.report import summary as keys


@dataclass(frozen=True)
class Config:
    z_dim: int = arg(8, "Dimensionality of the latent code z.", min=1, max=1024)
    batch_size: int = arg(64, "Mini-batch size, the global batch under torchrun (each of N ranks takes 1/N of it).",
                          min=1, max=4096)
    lambda_: float = arg(0.995, "Weight of the reconstruction loss; 1 - lambda_ weighs the generator (adversarial) "
                                "loss. 1 = plain autoencoder.", min=0.0, max=1.0)
    ae_lr: float = arg(1e-3, "Learning rate of the encoder/decoder optimiser (Adam, betas 0.5, 0.999).", min=0.0,
                       max=10.0, min_inclusive=False)
    d_lr: float = arg(5e-3, "Learning rate of the discriminator optimiser (SGD).", min=0.0, max=10.0,
                      min_inclusive=False)
    epochs: int = arg(100, "Number of training epochs.", min=1, max=10_000)
    seed: int = shared("seed", 42, "Random seed (weights, shuffling, prior samples).")
    dataset: str = arg("mnist", "Dataset; 'synthetic' is random class clusters for smoke runs only (not a result).",
                       choices=DATASETS)
    data_dir: str | None = shared("data_dir", help=(
        "Dataset folder (default: $DL1_DATA or ./data; Fashion-MNIST is also found in "
        "/usr/share/datasets/fashion-mnist)."))
    num_filters: int = arg(32, "Base number of convolution channels c of encoder and decoder.", min=1, max=512)
    train_size: int = arg(0, "Use only the first N training images (0 = all 60,000).", min=0, max=60_000)
    test_size: int = arg(0, "Evaluate on the first N test images (0 = all 10,000).", min=0, max=10_000)
    save_every: int = arg(5, "Save reconstruction/sample snapshots every N epochs, plus before training, after epoch "
                             "1 and after the last epoch (0 = only those three).", min=0, max=10_000)
    n_images: int = arg(64, "Number of prior samples and of reconstructed test images in each snapshot grid.",
                        min=8, max=1024)
    device: str = shared("device")
    precision: str = shared("precision")
    compile: bool = shared("compile")
    resume: str | None = shared("resume", help="Run folder (or checkpoint file) to continue from.")
    dist_timeout: float = shared("dist_timeout")

    def check(self) -> None:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise UsageError(f"--device: {self.device!r} is not one of auto, cpu, mps, cuda, cuda:N")


SMOKE = {"dataset": "synthetic", "epochs": 2, "batch_size": 32, "num_filters": 4, "n_images": 16, "save_every": 1}

EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, global_batch=("batch_size",), preflight=(VisionData(), Precision()),
    figures=Ref("dl1.report.aae:make_figures"), export=runner("aae", "export"),
    summary_keys=(keys.AAE_RECON, keys.AAE_DISC))
