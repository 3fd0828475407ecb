"""Character-level GPT on any text file (A3 part 3): train, validate on the whole split, sample, resume.

``dl1 run gpt --txt_file FILE`` trains the course's gpt-mini (or ``--n_layer --n_head --n_embd``) on random windows of
the first 90 % of the text, evaluates the loss on every character of the last 10 % every ``--eval_interval`` iterations,
logs a generated sample each time, keeps ``best.pt`` (model + tokenizer + model config: ``dl1 generate`` needs nothing
else) and resumes with ``--resume RUN_DIR``.  ``--preset nanogpt-cpu`` is nanoGPT's CPU recipe on tiny Shakespeare.

Under ``torchrun --nproc_per_node N -m dl1 run gpt ...`` it trains data parallel: ``--train_batch_size`` is the global
batch, each rank takes ``--train_batch_size / N`` of every step's random windows (see
:func:`dl1.data.text.random_batches`: N ranks train on exactly the windows one process draws), validation scores each
rank's share of the split's windows and adds the sums up, and rank 0 writes the run folder.

Where the defaults differ from the course's train.py: the last 10 % of the text is held out for validation (the course
trains on the whole text and validates nothing); the learning rate warms up over 100 iterations, then decays along a
cosine to a tenth of its peak (the course keeps 5e-4 constant); training stops after 5,000 iterations (the course: 100
epochs); a sample is logged every 500 iterations (the course: 1,000).  ``--preset course`` is the course's training:
the whole text, a constant 5e-4 without warm-up, gpt-mini, block 128, batch 128, AdamW betas 0.9 and 0.95, weight
decay 0.1, gradient clipping at 1, dropout 0.1, tanh GELU, 100 epochs, seed 0, 5 samples every 1,000 iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dl1.config import arg, shared
from dl1.data.text import SYNTHETIC, resolve_text_file
from dl1.errors import UsageError
from dl1.experiments.registry import Experiment, Ref, runner
from dl1.models.gpt_config import ACTIVATION_NAMES, MAX_TOKENS, GPTConfig
from dl1.models.gpt_config import PRESETS as MODEL_PRESETS
from dl1.report import summary as keys

# nanoGPT's recipes: its config/train_shakespeare_char.py (GPU: best validation loss 1.4697 on one A100), and the CPU
# overrides of its README ("I only have a macbook")
_NANOGPT = dict(txt_file="shakespeare", model_type=None, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
                weight_decay=0.1, betas=(0.9, 0.99), clip_grad_norm=1.0, activation="gelu")
# the course's train.py: TextDataset over the whole text, AdamW(5e-4, betas (0.9, 0.95), weight decay 0.1) without a
# scheduler, gradient clipping 1.0, 100 epochs of batch 128, gpt-mini at block 128 with dropouts 0.1, seed 0, and a
# generated sample every 1000 steps
_COURSE = dict(val_fraction=0.0, model_type="gpt-mini", n_layer=None, n_head=None, n_embd=None, block_size=128,
               train_batch_size=128, learning_rate=5e-4, lr_schedule="constant", warmup_iters=0, weight_decay=0.1,
               betas=(0.9, 0.95), clip_grad_norm=1.0, dropout=0.1, activation="gelu_tanh", max_iters=None,
               num_epochs=100.0, seed=0, eval_interval=1000, generate_batch_size=5)
PRESETS: dict[str, dict[str, Any]] = {
    "course": _COURSE,
    "nanogpt-cpu": dict(_NANOGPT, n_layer=4, n_head=4, n_embd=128, block_size=64, train_batch_size=12, max_iters=2000,
                        dropout=0.0, eval_interval=500),
    "nanogpt-gpu": dict(_NANOGPT, n_layer=6, n_head=6, n_embd=384, block_size=256, train_batch_size=64,
                        max_iters=5000, dropout=0.2, eval_interval=250, precision="bf16"),
}
DEFAULT_ITERS = 5000
MAX_ITERS = 10**8  # a bound for every iteration count (nanoGPT's recipes use 2000 and 5000)
MAX_BATCH = 65_536


@dataclass(frozen=True)
class Config:
    txt_file: str = arg("shakespeare", "Text file to train on (any encoding, see --encoding), or the named corpus "
                                       "'shakespeare' (tiny Shakespeare, shipped with dl1: offline).")
    data_dir: str | None = shared("data_dir", help="Folder searched for named corpora (default $DL1_DATA or ./data).")
    encoding: str = arg("auto", "Text encoding; 'auto' = UTF-8 (BOM dropped), else Latin-1 with a note.")
    val_fraction: float = arg(0.1, "Fraction of the text (its end) held out for validation (the course: 0, it trains "
                                   "on the whole text).", min=0.0, max=0.5)
    preset: str = arg("none", "A whole recipe: its values become the defaults (explicit flags win). course = the "
                              "course's training; nanogpt-cpu / nanogpt-gpu = nanoGPT's recipes on tiny Shakespeare "
                              "(nanogpt-gpu in bf16 as nanoGPT; on a GPU without bfloat16 add --precision fp16, "
                              "nanoGPT's fallback).",
                      choices=("none", *PRESETS))
    model_type: str | None = arg("gpt-mini", "Named model size (gpt-mini = 6 layers, 6 heads, width 192); "
                                             "ignored when --n_layer --n_head --n_embd are given.",
                                 choices=tuple(MODEL_PRESETS))
    n_layer: int | None = arg(None, "Number of transformer blocks (custom size; give all three).", min=1, max=1024)
    n_head: int | None = arg(None, "Number of attention heads (custom size).", min=1, max=1024)
    n_embd: int | None = arg(None, "Embedding width, divisible by n_head (custom size).", min=1, max=65_536)
    dropout: float | None = arg(None, "Dropout of embeddings, attention and residuals (default: the course's 0.1).",
                                min=0.0, max=0.9)
    activation: str = arg("gelu_tanh", "MLP activation: gelu_tanh (GPT-2's, the course's NewGELU) or gelu (exact, "
                                       "nanoGPT's; about 2x cheaper on CPU).", choices=ACTIVATION_NAMES)
    block_size: int = arg(128, "Context length in characters.", min=1, max=1_048_576)
    train_batch_size: int = arg(128, "Random windows per training step, the global batch under torchrun (each of N "
                                     "ranks takes 1/N).", min=1, max=MAX_BATCH)
    learning_rate: float = arg(5e-4, "Peak AdamW learning rate.", min=0.0, max=10.0, min_inclusive=False)
    min_lr: float | None = arg(None, "Learning rate at the end of the cosine decay (default learning_rate / 10; the "
                                     "course has no decay).",
                               min=0.0, max=10.0)
    warmup_iters: int = arg(100, "Linear warm-up iterations.", min=0, max=MAX_ITERS)
    lr_schedule: str = arg("cosine", "cosine (warm-up then decay to min_lr) or constant (warm-up then flat; the "
                                     "course's, without warm-up).",
                           choices=("cosine", "constant"))
    weight_decay: float = arg(0.1, "AdamW weight decay on Linear weights (not biases, LayerNorms, embeddings).",
                              min=0.0, max=10.0)
    betas: tuple[float, ...] = arg((0.9, 0.95), "AdamW betas (two values, each below 1).", min=0.0, max=1.0)
    clip_grad_norm: float = arg(1.0, "Clip the gradient norm to this value (0 = off).", min=0.0, max=1e6)
    max_iters: int | None = arg(None, f"Training iterations (default {DEFAULT_ITERS} unless --num_epochs).", min=1,
                                max=MAX_ITERS)
    num_epochs: float | None = arg(None, "Passes over the training windows (course's TextDataset epochs: "
                                         "(N_train - block_size) / train_batch_size iterations each); "
                                         "used when --max_iters is not given.", min=0.0, max=10_000.0,
                                   min_inclusive=False)
    eval_interval: int = arg(500, "Iterations between validations (validation = every character of the split).",
                             min=1, max=MAX_ITERS)
    log_interval: int = arg(50, "Iterations between logged training losses (one host sync each).", min=1,
                            max=MAX_ITERS)
    eval_batch_size: int = arg(32, "Windows per forward pass during validation.", min=1, max=MAX_BATCH)
    sample_tokens: int = arg(200, "Characters generated after every validation (0 = none).", min=0, max=MAX_TOKENS)
    final_sample_tokens: int = arg(500, "Characters of the sample from the best model written to samples.txt and "
                                        "the summary (0 = none).", min=0, max=MAX_TOKENS)
    generate_batch_size: int = arg(1, "Samples generated after every validation.", min=1, max=16)
    sample_prompt: str = arg("\n", "Prompt of the logged samples (characters must be in the vocabulary).")
    seed: int = shared("seed", 0, "Random seed (model init, batches, samples).")
    device: str = shared("device")
    threads: int = shared("threads")
    precision: str = shared("precision")
    compile: bool = shared("compile")
    resume: str | None = shared("resume", help=(
        "Run folder (or checkpoint) to continue from; auto = continue the run in --run_dir if it holds one, else "
        "start there (a requeued job)."))
    dist_timeout: float = shared("dist_timeout")

    def check(self) -> None:
        if len(self.betas) != 2 or max(self.betas) >= 1.0:
            raise UsageError(f"--betas needs two values below 1, got {' '.join(map(str, self.betas))}")
        try:
            model_config(self, vocab_size=1).resolved()  # the one size rule, before any run folder is made
        except ValueError as exc:
            raise UsageError(f"dl1 run gpt: {exc}") from None


SMOKE = {"txt_file": "synthetic", "model_type": None, "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16,
         "train_batch_size": 8, "max_iters": 20, "eval_interval": 10, "sample_tokens": 20, "warmup_iters": 2,
         "final_sample_tokens": 50}


def model_config(cfg: Config, vocab_size: int) -> GPTConfig:
    """The model's config: the three sizes when any is given (--model_type is then ignored), else --model_type."""
    custom = any(v is not None for v in (cfg.n_layer, cfg.n_head, cfg.n_embd))
    p = {} if cfg.dropout is None else {"embd_pdrop": cfg.dropout, "resid_pdrop": cfg.dropout,
                                        "attn_pdrop": cfg.dropout}
    return GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, model_type=None if custom else cfg.model_type,
                     n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, activation=cfg.activation, **p)


def total_iters(cfg: Config, n_train: int) -> int:
    if cfg.max_iters is not None:
        return cfg.max_iters
    if cfg.num_epochs is not None:
        per_epoch = max(1, n_train - cfg.block_size) / cfg.train_batch_size
        return max(1, math.ceil(cfg.num_epochs * per_epoch))
    return DEFAULT_ITERS


def check_text(cfg: Config) -> None:
    """The text exists (a named corpus: in --data_dir, the cache, or downloadable)."""
    if cfg.txt_file != SYNTHETIC:
        resolve_text_file(cfg.txt_file, cfg.data_dir)


EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, presets=PRESETS, global_batch=("train_batch_size",),
    preflight=(check_text,), figures=Ref("dl1.report.gpt:make_figures"),
    export=runner("gpt", "export"),
    summary_keys=(keys.GPT_BEST_VAL_LOSS,))
