"""Cross-dataset evaluation of a learnt CLIP prompt (A2 Q2.5): CIFAR-10 + CIFAR-100 test sets as one 110-way problem.

``dl1 run clip-cross-dataset --resume RUN/checkpoints/best.pt`` loads a prompt trained by ``dl1 run clip-prompt`` (on
either dataset; its type, shape and CLIP architecture come from the checkpoint), builds the text classifier of the 110
class names (CIFAR-10's, then CIFAR-100's: the two sets are disjoint), shifts the CIFAR-100 labels by +10 and reports
the top-1 on each test set and the sample-weighted total ``(acc10 * N10 + acc100 * N100) / (N10 + N100)``.
``--precision bf16|fp16`` evaluates under that autocast with the frozen CLIP kept in that dtype on a GPU.  One process
(an evaluation: refused under torchrun).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from dl1.config import arg, shared
from dl1.errors import UsageError
from dl1.experiments.checks import Precision, WeightsFile
from dl1.experiments.registry import Experiment
from dl1.hub.clip import DEFAULT_ARCH, GPU_PRECISION_NOTE, WEIGHTS_HELP, clip_choice
from dl1.report import summary as keys


@dataclass(frozen=True)
class Config:
    resume: str | None = shared("resume", help=(
        "Checkpoint of a learnt prompt (RUN/checkpoints/best.pt of dl1 run clip-prompt); with --synthetic_data and no"
        " --resume, a smoke prompt is trained first."))
    text_prompt_template: str | None = arg(None, "Text template of the 110 class prompts (default: the one the "
                                                 "prompt was trained with; the course script's default has the typo "
                                                 "'This a photo of a {}').")
    data_dir: str | None = shared("data_dir", help="Folder holding cifar-10-batches-py/ and cifar-100-python/ "
                                     "(default: $DL1_DATA, else ./data).")
    synthetic_data: bool | None = arg(None, "Write tiny fake CIFAR-10/100 test files into the run folder and use "
                                            "them (smoke runs only: the numbers mean nothing; default: as the prompt "
                                            "was trained).")
    clip_weights: str | None = arg(None, "Default: the file the prompt was trained with. " + WEIGHTS_HELP)
    test_noise: bool = arg(False, "Add N(0, 0.1) noise after preprocessing.")
    preprocess: str = arg("auto", "Where CLIP's preprocessing runs: pil (DataLoader workers), batch (on the device, "
                                  "same numbers), auto = batch on CUDA.", choices=("auto", "pil", "batch"))
    batch_size: int = arg(128, "Mini-batch size.", min=1, max=4096)
    num_workers: int = arg(4, "DataLoader worker processes.", min=0, max=64)
    max_batches: int = arg(0, "Evaluate at most this many batches per dataset (0 = all).", min=0, max=10**9)
    seed: int = shared("seed", 0, "Random seed (the noise).")
    device: str = shared("device")
    precision: str = shared("precision", note=GPU_PRECISION_NOTE)

    def check(self) -> None:
        if not self.resume and not self.synthetic_data:
            raise UsageError("--resume CKPT is required: the prompt to evaluate (RUN/checkpoints/best.pt)")
        if self.resume and Path(self.resume).is_dir():
            raise UsageError(f"--resume needs a checkpoint file, not a run folder: use "
                             f"{Path(self.resume) / 'checkpoints' / 'best.pt'}")


def resolve(cfg: Config) -> Config:
    """``--clip_weights`` as the run uses it (a file read, so a registry step): a mini-clip run folder -> its weights
    file."""
    return dataclasses.replace(cfg, clip_weights=clip_choice(DEFAULT_ARCH, cfg.clip_weights)[1])


SMOKE = {"synthetic_data": True, "batch_size": 16, "num_workers": 0}


def weighted_total(parts: dict[str, dict[str, float]]) -> dict[str, float]:
    """Sample-weighted top-1 and loss over the parts."""
    n = sum(p["n"] for p in parts.values())
    return {"top1": sum(p["top1"] * p["n"] for p in parts.values()) / n,
            "loss": sum(p["loss"] * p["n"] for p in parts.values()) / n, "n": n}


EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, evaluation_only=True, resolve=resolve,
    preflight=(WeightsFile("clip_weights"), Precision()),
    no_export="evaluates a prompt trained by clip-prompt: export that clip-prompt run",
    summary_keys=(keys.RESULTS_TOTAL_TOP1,))
