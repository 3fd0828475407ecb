"""The schema of ``summary.json``: the dotted keys that the experiments write and that report, tour and the robustness
tables read, named once here and used on both sides, and the strict reader that makes a missing key loud.

A summary is a nested dict (``run.finish(results={"test": {"top1": ...}})``); readers see it flattened, with dotted
keys (``"results.test.top1"``).  A reader that needs a key uses :func:`require` (a missing key is a
:class:`SummaryKeyError` naming it and the keys that are there), never ``.get`` with a silent default.
"""

from __future__ import annotations

import difflib
from typing import Any

from dl1.errors import DL1Error

# -- keys written by the experiments and read by report, tour and the robustness tables --------------------------------
TEST_ACCURACY = "test_accuracy"                   # mlp-numpy, mlp-pytorch: best-validation model's test accuracy
TEST_BPD = "test_bpd"                             # vae: test bits per dimension
TEST_ACC = "test.acc"                             # resnet-transfer: test accuracy (a fraction)
TEST_NOISE_ACC = "test_noise.acc"                 # resnet-transfer --test_noise: noisy test accuracy
TEST_TOP1 = "test.top1"                           # clip-zeroshot: top-1 (%)
AAE_RECON = "test.recon_loss"                     # aae: test reconstruction MSE
AAE_DISC = "test.disc_accuracy"                   # aae: discriminator accuracy on test codes vs prior samples
GPT_BEST_VAL_LOSS = "best.val_loss"               # gpt: best validation loss
GPT_TOKENS_PER_S = "speed.train_tokens_per_s"     # gpt: training throughput
GNN_WALKS_AGREE = "q3_1.all_walk_counts_agree"    # gnn: Aⁿ = brute-force walk counts
RESULTS_TEST_TOP1 = "results.test.top1"           # clip-prompt, mini-clip sub-runs: test top-1 (%)
RESULTS_TEST_NOISY_TOP1 = "results.test_noisy.top1"  # clip-prompt --test_noise: noisy test top-1 (%)
RESULTS_VAL_TOP1 = "results.val.top1"             # clip-prompt: validation top-1 (%)
RESULTS_TEST_N = "results.test.n"                 # clip-prompt: test images scored
RESULTS_TOTAL_TOP1 = "results.total.top1"         # clip-cross-dataset: sample-weighted 110-way top-1 (%)
CLIP_ARCH = "clip.arch"                           # clip-prompt, clip-cross-dataset: the CLIP architecture
CLIP_RANDOM_WEIGHTS = "clip.random_weights"       # a tiny random CLIP (smoke runs)
MODEL_RANDOM_WEIGHTS = "model.random_weights"     # clip-zeroshot: a tiny random CLIP (smoke runs)
DATA_DATASET = "data.dataset"                     # clip-prompt: the dataset the prompt was learnt on
DATA_SYNTHETIC = "data.synthetic"                 # clip-prompt: synthetic files (smoke runs)
PARAMS_TRAINABLE = "params.trainable"             # clip-prompt: the prompt's parameters


class SummaryKeyError(DL1Error):
    """A summary lacks a key that a report row needs (the experiment and its reader disagree on the schema)."""


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"test.acc": 0.9, ...}`` keeping scalars only."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, int | float | str | bool) or obj is None:
        out[prefix[:-1]] = obj
    return out


def require(summary: dict[str, Any], key: str, where: str = "summary") -> Any:
    """The value of dotted ``key`` in ``summary`` (nested or already flat); a missing key raises
    :class:`SummaryKeyError` naming it, the closest key that is there, and ``where``."""
    flat = summary if key in summary else flatten(summary)
    if key in flat:
        return flat[key]
    close = difflib.get_close_matches(key, list(flat), n=1, cutoff=0.6)
    hint = f" (it has {close[0]!r})" if close else ""
    raise SummaryKeyError(f"{where} has no {key!r}{hint}: the experiment no longer writes what the report reads")
