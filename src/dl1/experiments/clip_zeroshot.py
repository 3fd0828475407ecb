"""CLIP zero-shot classification (Q2.1): top-1/top-5 on CIFAR-10/100 and the 8-image top-5 prediction figure.

The class text features are computed once (one prompt per class, or a named prompt ensemble averaged over templates);
the logits are ``logit_scale.exp()`` x cosine(image, class text).  Top-1 and top-5 are counted over the whole split
(sample-weighted).  ``--visualize_predictions`` draws 8 random images with their top-5 class probabilities
(softmax over the top 5 logits, as the course).  With ``--class_names`` (new labels the dataset does not have) the run
only draws that figure.  ``--test_noise`` adds N(0, 0.1) noise after CLIP preprocessing.  ``--arch tiny-test`` is a
tiny CLIP with RANDOM weights for smoke tests only; it never stands in for missing weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dl1.config import arg, shared
from dl1.data.catalog import FASHION_DATASETS
from dl1.errors import UsageError
from dl1.experiments.checks import VisionData, WeightsFile
from dl1.experiments.registry import Experiment
from dl1.hub.clip import MINI_ARCH, TINY_ARCH, WEIGHTS_HELP, clip_choice
from dl1.lazy import Ref

ENSEMBLES = ("imagenet80", "imagenet7", "cifar18", "course")
N_SHOWN = 8  # images in the prediction figure (the course's choice)


@dataclass(frozen=True)
class Config:
    arch: str = arg("ViT-B/32", "CLIP architecture: course names (ViT-B/32, ViT-B/16, RN50, ...) or open_clip names "
                                f"(ViT-B-32, ...); '{MINI_ARCH}' = dl1's mini-CLIP (dl1 run mini-clip; --clip_weights "
                                "RUN, default the newest run); 'tiny-test' = a tiny CLIP with RANDOM weights, for "
                                "smoke tests only.")
    dataset: str = arg("cifar10", "Dataset to classify (Fashion-MNIST and its shifted copies: for the mini-CLIP).",
                       choices=("cifar10", "cifar100", *FASHION_DATASETS))
    split: str = arg("train", "Dataset split to evaluate (the course's default is train).", choices=("train", "test"))
    prompt_template: str = arg("This is a photo of a {}", "Text prompt; '{}' is replaced by each class name "
                                                          "('_' becomes a space).")
    ensemble: str | None = arg(None, "Named prompt ensemble used instead of --prompt_template: imagenet80 (the CLIP "
                                     "paper's 80 ImageNet templates), imagenet7, cifar18 (the paper's CIFAR "
                                     "templates), course.", choices=ENSEMBLES)
    class_names: tuple[str, ...] | None = arg(None, "Class names to use instead of the dataset's (e.g. red green "
                                                    "blue); the dataset has no labels for them, so only the "
                                                    "prediction figure is made.")
    visualize_predictions: bool = arg(False, "Save the figure of 8 random images with their top-5 predictions.")
    test_noise: bool = arg(False, "Add N(0, 0.1) Gaussian noise to the images after CLIP preprocessing.")
    batch_size: int = arg(32, "Images per batch.", min=1, max=4096)
    num_workers: int | None = arg(None, "DataLoader worker processes (default: min(16, CPU count)).", min=0, max=64)
    seed: int = shared("seed", 42, "Random seed (which images are shown; noise).")
    data_dir: str | None = shared("data_dir", help="Folder with the CIFAR files (default: $DL1_DATA, else ./data).")
    clip_weights: str | None = arg(None, "Default: open_clip's cache, else a download of the OpenAI weights. "
                                         + WEIGHTS_HELP)
    device: str = shared("device")
    preprocess: str = arg("auto", "Where CLIP preprocessing runs: pil (per image in DataLoader workers, as the "
                                  "course), batch (whole uint8 batches on the model's device; the same numbers, "
                                  "Pillow's bicubic reproduced exactly), auto (batch on CUDA, else pil).",
                          choices=("auto", "pil", "batch"))
    max_batches: int = arg(0, "Stop after this many batches (0 = the whole split; anything else is marked "
                              "partial).", min=0, max=10**9)
    synthetic_data: bool = arg(False, "Smoke tests only: write tiny random CIFAR files (real format) into the run "
                                      "folder and use them instead of --data_dir.")

    def check(self) -> None:
        if self.prompt_template.count("{}") != 1:
            raise UsageError(f"--prompt_template must contain '{{}}' exactly once, got {self.prompt_template!r}")
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            raise UsageError("--class_names: the names must be distinct")
        if self.arch == TINY_ARCH and self.clip_weights:
            raise UsageError(f"--arch {TINY_ARCH} is a random test model; it takes no --clip_weights")


def resolve(cfg: Config) -> Config:
    """``--arch`` and ``--clip_weights`` as the run uses them (file reads, so a registry step: a mini-clip run folder
    -> its weights file; a mini-CLIP file -> ``--arch mini``; ``--arch mini`` alone -> the newest mini-clip run)."""
    arch, weights = clip_choice(cfg.arch, cfg.clip_weights)
    return dataclasses.replace(cfg, arch=arch, clip_weights=weights)


SMOKE = {"arch": TINY_ARCH, "synthetic_data": True, "batch_size": 8, "num_workers": 0, "max_batches": 0,
         "visualize_predictions": True}


EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, evaluation_only=True, resolve=resolve,
    preflight=(WeightsFile("clip_weights"), VisionData(synthetic="synthetic_data"),
               VisionData(synthetic="synthetic_data", named="fashion-mnist", when=FASHION_DATASETS)),
    figures=Ref("dl1.report.clip:zeroshot_figures"),
    no_export="evaluates a pretrained CLIP and trains nothing (its weights are the file it was given)")
