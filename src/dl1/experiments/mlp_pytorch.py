"""PyTorch MLP (assignment 1, Q4/Q6): the NumPy MLP's twin with autograd, optional batch norm, plain SGD.

The course's ``train_mlp_pytorch.py``: ``[Linear → (BatchNorm1d) → ELU] × hidden → Linear`` on flattened images,
``nn.CrossEntropyLoss`` on the logits, ``optim.SGD(lr)``, the same seeded 5,000-image validation split evaluated in full
every epoch.  Trained by the shared engine (best checkpoint on ``val/acc``, resumable); the best-validation weights are
evaluated on the test split.  Writes ``metrics.jsonl``, ``summary.json`` (test accuracy, confusion matrix, per-class
precision/recall/F-β), ``checkpoints/{best,last}.pt`` and ``figures/{curves,confusion_matrix,f_beta}.png``.
Under ``torchrun --nproc_per_node N -m dl1 run mlp-pytorch ...`` it trains data parallel (gloo on CPUs, NCCL on GPUs):
each rank takes ``--batch_size / N`` images of every global batch; rank 0 writes the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from dl1.config import arg, shared
from dl1.data.catalog import CHOICES
from dl1.experiments.checks import Precision, VisionData
from dl1.experiments.registry import Experiment, runner
from dl1.lazy import Ref
from dl1.report import summary as keys

EVAL_CHUNK = 4096  # images per forward pass when evaluating a whole split
MAX_WIDTH, MAX_BATCH, MAX_EPOCHS = 16_384, 65_536, 10_000


@dataclass(frozen=True)
class Config:
    hidden_dims: tuple[int, ...] = arg((128,), "Sizes of the hidden layers (one ELU layer per number).", min=1,
                                       max=MAX_WIDTH)
    lr: float = arg(0.1, "Learning rate of plain SGD.", min=0.0, max=100.0, min_inclusive=False)
    use_batch_norm: bool = arg(False, "Insert BatchNorm1d between every hidden Linear and its ELU.")
    batch_size: int = arg(128, "Mini-batch size, the global batch under torchrun (each of N ranks takes 1/N of it; "
                               "the last incomplete training batch is dropped).", min=1, max=MAX_BATCH)
    epochs: int = arg(10, "Number of passes over the training split.", min=1, max=MAX_EPOCHS)
    seed: int = shared("seed", 42, "Seed of the weights, the validation split and the shuffling.")
    data_dir: str | None = shared("data_dir", help="Folder holding the dataset (none: $DL1_DATA, else ./data).")
    dataset: str = arg("cifar10", "Dataset (synthetic = random clusters for smoke runs only).", choices=CHOICES)
    device: str = shared("device")
    precision: str = shared("precision")
    compile: bool = shared("compile")
    resume: str | None = shared("resume", help=(
        "Run folder (or checkpoint file) to continue from; --epochs may be raised."))
    dist_timeout: float = shared("dist_timeout")


SMOKE = {"dataset": "synthetic", "epochs": 2, "hidden_dims": (32,), "batch_size": 64}

EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, global_batch=("batch_size",), preflight=(VisionData(), Precision()),
    figures=Ref("dl1.report.classification:make_classification_figures"), export=runner("mlp_pytorch", "export"),
    summary_keys=(keys.TEST_ACCURACY,))
