"""ResNet-18 transfer (Q1.2): frozen ImageNet backbone, fresh fc trained with Adam on CIFAR-100/10, cached features.

ImageNet ResNet-18 (torchvision ``IMAGENET1K_V1``, or ``--weights PATH``), every parameter frozen, ``fc`` replaced by a
``Linear(512, classes)`` with weight N(0, 0.01^2) and bias 0; Adam on ``fc`` only, cross-entropy, validation accuracy
after every epoch, the best checkpoint kept and reloaded for the test accuracy.  Data: CIFAR resized to 224x224,
normalised with the CIFAR-100 statistics (the template uses them for CIFAR-10 too); train/validation = 45 000/5 000
with split seed 42, built from two copies of the train set so that only the train part is augmented.
Batch norm of the frozen backbone stays in eval mode by default (``--bn_mode eval``: a pure linear probe on fixed
ImageNet features); ``--bn_mode train`` reproduces the reference solution, whose ``model.train()`` lets the BN running
statistics drift to CIFAR.  Without augmentation (and with ``--bn_mode eval``) the backbone's 512-d features never
change, so they are computed once per split and ``fc`` trains on them (``--cache_features auto``): the same model and
result as full forwards, many times faster.  ``--test_noise`` also reports the accuracy on test images with N(0, 0.1)
noise added after normalisation.

Under ``torchrun --nproc_per_node N -m dl1 run resnet-transfer ...`` it trains data parallel: each rank takes
``--batch_size / N`` images (or cached features) of every global batch; the feature cache, the validation and the
test accuracy are shared by the ranks (each computes its part, the parts are gathered or the counts summed), so the
numbers are those of one process; rank 0 writes the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from dl1.config import arg, shared
from dl1.data.catalog import parse_augmentations as parse_names
from dl1.errors import UsageError
from dl1.experiments.checks import Precision, VisionData, WeightsFile
from dl1.experiments.registry import Experiment, runner
from dl1.lazy import Ref
from dl1.report import summary as keys

MAX_BATCH, MAX_EPOCHS = 4096, 10_000


@dataclass(frozen=True)
class Config:
    lr: float = arg(0.001, "Adam learning rate of fc.", min=0.0, max=10.0, min_inclusive=False)
    batch_size: int = arg(128, "Mini-batch size (training and evaluation), the global batch under torchrun (each of "
                               "N ranks takes 1/N of it).", min=1, max=MAX_BATCH)
    epochs: int = arg(30, "Training epochs.", min=1, max=MAX_EPOCHS)
    seed: int = shared("seed", 123, "Seed of fc's initialisation and of the batch order.")
    dataset: str = arg("cifar100", "Dataset; synthetic = tiny fake CIFAR-10 files written into the run folder "
                                   "(smoke runs only, never a result).", choices=("cifar100", "cifar10", "synthetic"))
    data_dir: str | None = shared("data_dir", help="Folder holding the CIFAR files (default: $DL1_DATA, else ./data).")
    augmentation_name: str | None = arg(None, "Training augmentation(s), comma-separated: random_hflip, random_crop, "
                                              "auto_augment, rand_augment, trivial_augment, color_jitter, "
                                              "random_erasing (default: none).")
    test_noise: bool = arg(False, "Also evaluate on test images with Gaussian noise added after normalisation.")
    noise_std: float = arg(0.1, "Standard deviation of the test noise (normalised units).", min=0.0, max=100.0)
    weights: str = arg("imagenet", "Backbone weights: imagenet (torchvision IMAGENET1K_V1, from the torch hub cache "
                                   "or downloaded), a local state-dict PATH, or random (tests only, never a result). "
                                   "Files are read with torch.load(weights_only=True): tensors only, a file holding "
                                   "anything else is refused.")
    bn_mode: str = arg("eval", "Batch-norm mode of the frozen backbone while training: eval (pure linear probe) or "
                               "train (running statistics drift, as in the reference solution).",
                       choices=("eval", "train"))
    cache_features: str = arg("auto", "Train fc on cached 512-d features: auto (when there is no augmentation and "
                                      "bn_mode is eval), on, or off.", choices=("auto", "on", "off"))
    val_size: int = arg(5000, "Validation images split off the train set (seed 42).", min=1, max=1_000_000)
    image_size: int = arg(224, "Side the 32x32 images are resized to.", min=16, max=1024)
    num_workers: int = arg(2, "DataLoader worker processes for the image pipeline.", min=0, max=64)
    device: str = shared("device")
    precision: str = shared("precision")
    compile: bool = shared("compile")
    resume: str | None = shared("resume", help="Run folder (or checkpoint) of an interrupted run to continue.")
    dist_timeout: float = shared("dist_timeout")

    def check(self) -> None:
        augmented = bool(parse_names(self.augmentation_name))
        if self.cache_features == "on" and (augmented or self.bn_mode == "train"):
            why = "augmentation changes the images every epoch" if augmented else "bn_mode train changes the backbone"
            raise UsageError(f"--cache_features on: features cannot be cached because {why}; use auto or off")

    def use_cache(self) -> bool:
        if self.cache_features == "auto":
            return not parse_names(self.augmentation_name) and self.bn_mode == "eval"
        return self.cache_features == "on"


SMOKE = {"dataset": "synthetic", "weights": "random", "epochs": 2, "batch_size": 16, "val_size": 16,
         "image_size": 32, "num_workers": 0}

EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, global_batch=("batch_size",),
    preflight=(WeightsFile("weights"), VisionData(), Precision()), figures=Ref("dl1.report.transfer:make_figures"),
    export=runner("resnet_transfer", "export"),
    summary_keys=(keys.TEST_ACC,))
