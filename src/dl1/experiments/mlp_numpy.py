"""NumPy MLP from scratch (assignment 1, Q3/Q6): train with SGD, keep the best-validation model, test it.

The course's ``train_mlp_numpy.py``: ``[Linear → ELU] × hidden → Linear → SoftMax`` in pure NumPy (``dl1.numpy_nn``),
cross-entropy on the probabilities, plain SGD, flattened images, a seeded 5,000-image validation split evaluated in
full every epoch; the best-validation model (``clear_cache`` + ``deepcopy``) is evaluated on the test split.  The model
is float32 (asked for explicitly: the modules default to the course's float64, which trains slower).  Writes
``metrics.jsonl``, ``summary.json`` (test accuracy, confusion matrix, per-class precision/recall/F-β),
``checkpoints/best.npz`` and ``figures/{curves,confusion_matrix,f_beta}.png``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dl1.config import arg, shared
from dl1.data.catalog import CHOICES
from dl1.experiments.checks import VisionData
from dl1.experiments.registry import Experiment, runner
from dl1.lazy import Ref
from dl1.report import summary as keys

EVAL_CHUNK = 4096
MAX_WIDTH, MAX_BATCH, MAX_EPOCHS = 16_384, 65_536, 10_000


@dataclass(frozen=True)
class Config:
    hidden_dims: tuple[int, ...] = arg((128,), "Sizes of the hidden layers (one ELU layer per number).", min=1,
                                       max=MAX_WIDTH)
    lr: float = arg(0.1, "Learning rate of plain SGD.", min=0.0, max=100.0, min_inclusive=False)
    batch_size: int = arg(128, "Mini-batch size (the last incomplete training batch is dropped).", min=1,
                          max=MAX_BATCH)
    epochs: int = arg(10, "Number of passes over the training split.", min=1, max=MAX_EPOCHS)
    seed: int = shared("seed", 42, "Seed of the weights, the validation split and the shuffling.")
    data_dir: str | None = shared("data_dir", help="Folder holding the dataset (none: $DL1_DATA, else ./data).")
    dataset: str = arg("cifar10", "Dataset (synthetic = random clusters for smoke runs only).", choices=CHOICES)


SMOKE = {"dataset": "synthetic", "epochs": 2, "hidden_dims": (32,), "batch_size": 64}



EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, preflight=(VisionData(),),
    figures=Ref("dl1.report.classification:make_classification_figures"), export=runner("mlp_numpy", "export"),
    summary_keys=(keys.TEST_ACCURACY,))
