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

from dl1.config import arg, precision_arg
from dl1.errors import DL1Error, UsageError
from dl1.generate import MAX_TOKENS
from dl1.models.gpt_config import ACTIVATION_NAMES, SIZES, GPTConfig
from dl1.models.gpt_config import PRESETS as MODEL_PRESETS
from dl1.report.gpt import make_figures, throughput
from dl1.runtime import Run

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
                                       "'shakespeare' (looked up in --data_dir and the cache, downloaded if online).")
    data_dir: str | None = arg(None, "Folder searched for named corpora (default $DL1_DATA or ./data).")
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
    seed: int = arg(0, "Random seed (model init, batches, samples).", min=0, max=2**32 - 1)
    device: str = arg("auto", "Device: auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps.")
    threads: int = arg(0, "torch CPU threads (0 = torch's default).", min=0, max=4096)
    precision: str = precision_arg()
    resume: str | None = arg(None, "Run folder (or checkpoint) to continue from.")

    def check(self) -> None:
        if len(self.betas) != 2 or max(self.betas) >= 1.0:
            raise UsageError(f"--betas needs two values below 1, got {' '.join(map(str, self.betas))}")
        try:
            model_config(self, vocab_size=1).resolved()  # the one size rule, before any run folder is made
        except ValueError as exc:
            raise UsageError(f"dl1 run gpt: {exc}") from None


GLOBAL_BATCH = ("train_batch_size",)  # data parallel under torchrun
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


def preflight(cfg: Config) -> None:
    """Before a run folder is made or touched: the text exists, and a --resume checkpoint is a readable GPT checkpoint
    (stored config, tokenizer and weights checked) of the size these flags give."""
    from dl1.data.text import SYNTHETIC, resolve_text_file
    from dl1.generate import read_gpt_checkpoint
    from dl1.runtime import checkpoint_file

    if cfg.txt_file != SYNTHETIC:
        resolve_text_file(cfg.txt_file, cfg.data_dir)
    if cfg.resume:
        saved = read_gpt_checkpoint(checkpoint_file(cfg.resume, prefer="last"), mmap=True)
        ours = model_config(cfg, saved.config.vocab_size).resolved()
        differ = [f"{k} {getattr(saved.config, k)} there, {getattr(ours, k)} here" for k in SIZES
                  if getattr(saved.config, k) != getattr(ours, k)]
        if differ:
            raise UsageError(f"cannot resume from {saved.path}: it holds another model size ({'; '.join(differ)})")


@dataclass
class GPTRun:
    """One training run's wiring and the state the Trainer's callbacks share: the training-loss window (saved in
    every checkpoint, so a resumed run logs exactly what an uninterrupted one does) and the newest validation.

    Under torchrun every rank runs every step, so the collectives here are safe: the logged training loss is the
    window averaged over the ranks, the window is averaged over the ranks whenever a checkpoint is built (the logged
    mean is unchanged, and a resumed run continues from exactly the state the uninterrupted one has), and a
    validation adds up the loss sums of the ranks' shares of the split (every rank gets the whole split's mean)."""

    cfg: Config
    run: Run
    corpus: Any
    model: Any
    iters: int
    prompt: str
    trainer: Any = None
    loss_sum: Any = None  # training losses since the last log, summed on the device (no host sync per step)
    loss_count: int = 0
    last_val: tuple[int, float] | None = None  # (step, loss) of the newest validation
    net: Any = None  # the model to train through: trainer.wrap(model)

    def extra_state(self) -> dict[str, Any]:
        from dl1.train import distributed

        self.loss_sum = distributed.all_reduce_mean(self.loss_sum)  # the window in the checkpoint is the ranks' mean
        return {"tokenizer": self.corpus.tokenizer.state_dict(), "model_config": self.model.config.to_dict(),
                "corpus": {"path": self.corpus.path, "encoding": self.corpus.encoding},
                "train_window": {"sum": self.loss_sum.detach().clone(), "count": self.loss_count}}

    def restore(self, extra: dict[str, Any]) -> None:
        """Continue from a (checked) checkpoint's extra state: the same vocabulary, and its training-loss window."""
        if extra["tokenizer"]["chars"] != self.corpus.tokenizer.chars:
            raise DL1Error(f"cannot resume from {self.cfg.resume}: its vocabulary differs from this text's "
                           "(another --txt_file?)")
        if "train_window" in extra:  # absent in checkpoints written before the window was saved
            self.loss_sum.copy_(extra["train_window"]["sum"])
            self.loss_count = extra["train_window"]["count"]

    def train_batches(self, epoch: int):
        from dl1.data.text import random_batches
        from dl1.train import distributed

        cfg, info = self.cfg, distributed.current()
        n = min(cfg.eval_interval, self.iters - epoch * cfg.eval_interval)
        seed = cfg.seed * 1_000_003 + epoch  # a fresh, reproducible stream per interval: exact resume
        return random_batches(self.corpus, n, cfg.train_batch_size, cfg.block_size, seed, rank=info.rank,
                              world_size=info.world_size)  # this rank's rows of every step's global batch

    def train_step(self, batch) -> dict[str, Any]:
        from dl1.train import distributed

        x, y = (t.to(self.trainer.device, non_blocking=True) for t in batch)  # (b, T) each
        _, loss = self.net(x, y)  # under the engine's autocast; data parallel: through DistributedDataParallel
        self.trainer.backward_step(loss)
        self.loss_sum += loss.detach()
        self.loss_count += 1
        if self.trainer.step % self.cfg.log_interval == 0:  # the only host sync of the step
            window = distributed.all_reduce_mean(self.loss_sum)  # every rank is here at this step
            self.run.log(self.trainer.step, "train_iter", {"loss": window.item() / self.loss_count,
                                                           "lr": self.trainer.lr()})
            self.loss_sum.zero_()
            self.loss_count = 0
        return {"loss": loss.detach()}

    def evaluate(self, epoch: int) -> dict[str, dict[str, Any]]:
        import time

        from dl1.generate import generate

        cfg, step = self.cfg, self.trainer.step
        t0 = time.perf_counter()
        results = {}
        if len(self.corpus.val):
            results["val"] = {"loss": self.loss("val")}
            self.last_val = (step, results["val"]["loss"])
        if self.trainer.train_batches:
            self.run.log(step, "speed", self.speed(), epoch=epoch, eval_s=round(time.perf_counter() - t0, 3))
        if cfg.sample_tokens and self.run.enabled:  # logged by rank 0 alone (its own generator: no stream touched)
            texts = generate(self.model, self.corpus.tokenizer, self.prompt, cfg.generate_batch_size,
                             cfg.sample_tokens, seed=cfg.seed + epoch)
            for i, text in enumerate(texts):
                self.run.log(step, "sample", {"text": text}, epoch=epoch, index=i)
        return results

    def loss(self, split: str, max_windows: int | None = None) -> float:
        """Mean loss over every character of ``split`` (or its first ``max_windows`` windows); under torchrun each
        rank scores its share of the windows and the sums are added up: every rank returns the whole split's mean."""
        import torch

        from dl1.models.gpt import summed_loss
        from dl1.train import distributed

        cfg = self.cfg
        part = distributed.shard(self.corpus.count_eval_windows(split, cfg.block_size, max_windows))
        windows = self.corpus.eval_windows(split, cfg.block_size, cfg.eval_batch_size, max_windows, part=part)
        total, count = summed_loss(self.model, windows, self.trainer.device)
        sums = torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=total.device)])
        if distributed.current().enabled:
            sums = distributed.all_reduce_mean(sums)  # the ratio of the means is the ratio of the sums
        total, count = sums.tolist()
        return total / max(count, 1.0)

    def speed(self) -> dict[str, float]:
        t, tokens = self.trainer, self.cfg.train_batch_size * self.cfg.block_size
        return throughput(t.train_time_s, t.train_cpu_s, t.train_batches, tokens)

    def finish(self, fit: dict[str, Any]) -> dict[str, Any]:
        import torch

        from dl1.generate import generate

        cfg, corpus, trainer, model, run = self.cfg, self.corpus, self.trainer, self.model, self.run
        fresh = self.last_val is not None and self.last_val[0] == trainer.step  # the newest validation is final
        with trainer.autocast():  # in the precision it trained and validated in
            val_loss = (self.last_val[1] if fresh else self.loss("val")) if len(corpus.val) else None
            # the training loss in eval mode on as many characters as the validation split (100,000 without one)
            train_loss = self.loss("train", max_windows=max(1, (len(corpus.val) or 100_000) // cfg.block_size))
        trainer.load_best()
        sample = generate(model, corpus.tokenizer, self.prompt, 1, cfg.final_sample_tokens, seed=cfg.seed)[0] \
            if cfg.final_sample_tokens else ""
        if run.enabled:
            if sample:
                (run.dir / "samples.txt").write_text(sample + "\n")
            make_figures(run.dir)
        best = fit["steps"] if fit["best_epoch"] is None else min(fit["best_epoch"] * cfg.eval_interval, self.iters)
        return run.finish(
            data=corpus.describe(), model={**model.config.to_dict(), "params": model.num_params()},
            iters=self.iters, threads=torch.get_num_threads(), device=str(trainer.device),
            final={"val_loss": val_loss, "train_loss": train_loss}, best={"iter": best, "val_loss": fit["best_value"]},
            speed=self.speed() if trainer.train_batches else {}, train_time_s=round(trainer.train_time_s, 2),
            sample=sample, checkpoint=str(trainer.best_path if trainer.best_path.exists() else trainer.last_path))


def run(cfg: Config, run: Run) -> dict[str, Any]:
    import torch

    from dl1.data.text import load_corpus
    from dl1.generate import check_fits, read_gpt_checkpoint
    from dl1.models.gpt import GPT
    from dl1.runtime import checkpoint_file, choose_device, seed_everything
    from dl1.train import Trainer, distributed, warmup_cosine

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = choose_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as nanoGPT
    corpus = load_corpus(cfg.txt_file, cfg.data_dir, cfg.val_fraction, cfg.encoding, cfg.block_size).to(device)
    tok = corpus.tokenizer
    config = model_config(cfg, tok.vocab_size)
    world = distributed.current().world_size  # memory is checked for this rank's share of the global batch
    check_fits(config, distributed.local_batch(cfg.train_batch_size, "--train_batch_size"), device, training=True,
               batch_flag="--train_batch_size" if world == 1 else f"per-rank --train_batch_size / {world} =",
               block_flag="--block_size")
    check_fits(config, cfg.eval_batch_size, device, training=False, batch_flag="--eval_batch_size")
    model = GPT(config).to(device)
    print(f"[gpt] {corpus.path}: {len(corpus.train):,} train / {len(corpus.val):,} val characters, vocabulary "
          f"{tok.vocab_size} ({corpus.encoding}); model {model.num_params() / 1e6:.2f} M parameters "
          f"(without lm_head), {torch.get_num_threads()} thread(s), device {device}", flush=True)
    iters = total_iters(cfg, len(corpus.train))
    usable = cfg.sample_prompt and not tok.unknown(cfg.sample_prompt)
    prompt = cfg.sample_prompt if usable else tok.decode(corpus.train[:1])
    state = GPTRun(cfg, run, corpus, model, iters, prompt, loss_sum=torch.zeros((), device=device))
    optimizer = model.configure_optimizers(cfg)  # AdamW, decay on Linear weights; warm-up, then cosine to min_lr
    min_lr = cfg.learning_rate / 10 if cfg.min_lr is None else cfg.min_lr
    scheduler = warmup_cosine(optimizer, cfg.warmup_iters, iters if cfg.lr_schedule == "cosine" else 10**12,
                              min_factor=min_lr / cfg.learning_rate)
    state.trainer = Trainer(run, {"model": model}, {"model": optimizer}, epochs=math.ceil(iters / cfg.eval_interval),
                            monitor="val/loss" if len(corpus.val) else None, schedulers={"model": scheduler},
                            clip_grad_norm=cfg.clip_grad_norm or None, device=device, precision=cfg.precision,
                            extra_state=state.extra_state, desc="gpt")
    state.net = state.trainer.wrap(model)
    if cfg.resume:
        state.restore(read_gpt_checkpoint(checkpoint_file(cfg.resume, prefer="last"), mmap=True).extra)
    fit = state.trainer.fit(state.train_batches, state.train_step, state.evaluate, resume=cfg.resume)
    return state.finish(fit)
