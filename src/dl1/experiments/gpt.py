"""Character-level GPT on any text file (A3 part 3): train, validate on the whole split, sample, resume.

``dl1 run gpt --txt_file FILE`` trains the course's gpt-mini (or ``--n_layer --n_head --n_embd``) on random windows of
the first 90 % of the text, evaluates the loss on every character of the last 10 % every ``--eval_interval`` iterations,
logs a generated sample each time, keeps ``best.pt`` (model + tokenizer + model config: ``dl1 generate`` needs nothing
else) and resumes with ``--resume RUN_DIR``.  ``--preset nanogpt-cpu`` is nanoGPT's CPU recipe on tiny Shakespeare.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dl1.config import arg, config_to_dict
from dl1.errors import DL1Error, UsageError
from dl1.report import save_figure
from dl1.runtime import Run, choose_device, read_jsonl, seed_everything

# nanoGPT's CPU recipe (README "I only have a macbook"): its config/train_shakespeare_char.py with the CPU overrides
PRESETS: dict[str, dict[str, Any]] = {
    "nanogpt-cpu": dict(txt_file="shakespeare", model_type=None, n_layer=4, n_head=4, n_embd=128, block_size=64,
                        train_batch_size=12, max_iters=2000, dropout=0.0, learning_rate=1e-3, min_lr=1e-4,
                        warmup_iters=100, weight_decay=0.1, betas=(0.9, 0.99), clip_grad_norm=1.0, eval_interval=500,
                        activation="gelu"),
    # nanoGPT's GPU recipe (config/train_shakespeare_char.py): best validation loss 1.4697 on one A100
    "nanogpt-gpu": dict(txt_file="shakespeare", model_type=None, n_layer=6, n_head=6, n_embd=384, block_size=256,
                        train_batch_size=64, max_iters=5000, dropout=0.2, learning_rate=1e-3, min_lr=1e-4,
                        warmup_iters=100, weight_decay=0.1, betas=(0.9, 0.99), clip_grad_norm=1.0, eval_interval=250,
                        activation="gelu"),
}
DEFAULT_ITERS = 5000


@dataclass(frozen=True)
class Config:
    txt_file: str = arg("shakespeare", "Text file to train on (any encoding, see --encoding), or the named corpus "
                                       "'shakespeare' (looked up in --data_dir and the cache, downloaded if online).")
    data_dir: str | None = arg(None, "Folder searched for named corpora (default $DL1_DATA or ./data).")
    encoding: str = arg("auto", "Text encoding; 'auto' = UTF-8 (BOM dropped), else Latin-1 with a note.")
    val_fraction: float = arg(0.1, "Fraction of the text (its end) held out for validation.", min=0.0, max=0.5)
    preset: str = arg("none", "A whole recipe; it sets the fields still at their defaults (explicit flags with "
                              "non-default values win).", choices=("none", *PRESETS))
    model_type: str | None = arg("gpt-mini", "Named model size (gpt-mini = 6 layers, 6 heads, width 192); "
                                             "ignored when --n_layer --n_head --n_embd are all given.",
                                 choices=("gpt-nano", "gpt-micro", "gpt-mini", "gopher-44m", "openai-gpt", "gpt2",
                                          "gpt2-medium", "gpt2-large", "gpt2-xl"))
    n_layer: int | None = arg(None, "Number of transformer blocks (custom size; give all three).", min=1)
    n_head: int | None = arg(None, "Number of attention heads (custom size).", min=1)
    n_embd: int | None = arg(None, "Embedding width, divisible by n_head (custom size).", min=1)
    dropout: float | None = arg(None, "Dropout of embeddings, attention and residuals (default: the course's 0.1).",
                                min=0.0, max=0.9)
    activation: str = arg("gelu_tanh", "MLP activation: gelu_tanh (GPT-2's, the course's NewGELU) or gelu (exact, "
                                       "nanoGPT's; about 2x cheaper on CPU).", choices=("gelu_tanh", "gelu"))
    block_size: int = arg(128, "Context length in characters.", min=1)
    train_batch_size: int = arg(128, "Random windows per training step.", min=1)
    learning_rate: float = arg(5e-4, "Peak AdamW learning rate.", min=0.0, min_inclusive=False)
    min_lr: float | None = arg(None, "Learning rate at the end of the cosine decay (default learning_rate / 10).",
                               min=0.0)
    warmup_iters: int = arg(100, "Linear warm-up iterations.", min=0)
    lr_schedule: str = arg("cosine", "cosine (warm-up then decay to min_lr) or constant (warm-up then flat).",
                           choices=("cosine", "constant"))
    weight_decay: float = arg(0.1, "AdamW weight decay on Linear weights (not biases, LayerNorms, embeddings).",
                              min=0.0)
    betas: tuple[float, ...] = arg((0.9, 0.95), "AdamW betas (two values).", min=0.0, max=1.0)
    clip_grad_norm: float = arg(1.0, "Clip the gradient norm to this value (0 = off).", min=0.0)
    max_iters: int | None = arg(None, f"Training iterations (default {DEFAULT_ITERS} unless --num_epochs).", min=1)
    num_epochs: float | None = arg(None, "Passes over the training windows (course's TextDataset epochs: "
                                         "(N_train - block_size) / train_batch_size iterations each); "
                                         "used when --max_iters is not given.", min=0.0, min_inclusive=False)
    eval_interval: int = arg(500, "Iterations between validations (validation = every character of the split).",
                             min=1)
    log_interval: int = arg(50, "Iterations between logged training losses (one host sync each).", min=1)
    eval_batch_size: int = arg(32, "Windows per forward pass during validation.", min=1)
    sample_tokens: int = arg(200, "Characters generated after every validation (0 = none).", min=0)
    final_sample_tokens: int = arg(500, "Characters of the sample from the best model written to samples.txt and "
                                        "the summary (0 = none).", min=0)
    generate_batch_size: int = arg(1, "Samples generated after every validation.", min=1, max=16)
    sample_prompt: str = arg("\n", "Prompt of the logged samples (characters must be in the vocabulary).")
    seed: int = arg(0, "Random seed (model init, batches, samples).")
    device: str = arg("auto", "Device: auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps.")
    threads: int = arg(0, "torch CPU threads (0 = torch's default).", min=0)
    amp: bool = arg(False, "Mixed precision (float16) on CUDA.")
    resume: str | None = arg(None, "Run folder (or checkpoint) to continue from.")

    def check(self) -> None:
        if len(self.betas) != 2:
            raise UsageError(f"--betas needs two values, got {len(self.betas)}")
        resolve(self)  # model-size rules, before any run folder is made


SMOKE = {"txt_file": "synthetic", "model_type": None, "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16,
         "train_batch_size": 8, "max_iters": 20, "eval_interval": 10, "sample_tokens": 20, "warmup_iters": 2,
         "final_sample_tokens": 50}


# ---------------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------------

def resolve(cfg: Config) -> Config:
    """Apply ``--preset`` to the fields still at their defaults, then check the model size."""
    if cfg.preset != "none":
        defaults = {f.name: f.default for f in dataclasses.fields(Config)}
        updates = {k: v for k, v in PRESETS[cfg.preset].items() if getattr(cfg, k) == defaults[k]}
        cfg = dataclasses.replace(cfg, **updates)
    sizes = [cfg.n_layer, cfg.n_head, cfg.n_embd]
    if any(v is not None for v in sizes) and not all(v is not None for v in sizes):
        raise UsageError("give all three of --n_layer --n_head --n_embd (or none, and --model_type)")
    if cfg.model_type is None and not all(v is not None for v in sizes):
        raise UsageError("give --model_type or all three of --n_layer --n_head --n_embd")
    if cfg.n_embd is not None and cfg.n_embd % cfg.n_head:
        raise UsageError(f"--n_embd ({cfg.n_embd}) must be divisible by --n_head ({cfg.n_head})")
    return cfg


def model_config(cfg: Config, vocab_size: int):
    from dl1.models.gpt import GPTConfig

    custom = cfg.n_layer is not None
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


# ---------------------------------------------------------------------------------------------------------------------
# evaluation and samples
# ---------------------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def split_loss(model, corpus, split: str, block_size: int, batch_size: int, device, max_windows: int | None = None
               ) -> float:
    """Mean cross-entropy (nats per character) over every character of ``split`` in non-overlapping windows."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    windows = 0
    for x, y in corpus.eval_windows(split, block_size, batch_size):
        if max_windows is not None:
            if windows >= max_windows:
                break
            x, y = x[:max_windows - windows], y[:max_windows - windows]
        x, y = x.to(device), y.to(device)
        logits, _ = model(x)  # (b, T, V)
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
        count += y.numel()
        windows += x.size(0)
    return float(total.item()) / max(count, 1)


def sample_text(model, tokenizer, prompt: str, n_tokens: int, num_samples: int = 1, seed: int = 0,
                temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                do_sample: bool = True) -> list[str]:
    """``num_samples`` continuations of ``prompt`` (the prompt included)."""
    device = next(model.parameters()).device
    prompt = prompt or tokenizer.chars[0]
    idx = torch.tensor([tokenizer.encode(prompt)] * num_samples, dtype=torch.long, device=device)  # (n, P)
    g = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    out = model.generate(idx, n_tokens, temperature=temperature, do_sample=do_sample, top_k=top_k, top_p=top_p,
                         generator=g)
    model.train(was_training)
    return [tokenizer.decode(row) for row in out.tolist()]


class _TimedBatches:
    """The batches of one training interval; adds the wall time spent iterating (= training) to ``clock``."""

    def __init__(self, batches, clock: dict[str, float]):
        self.batches, self.clock = batches, clock

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield from self.batches
        finally:
            self.clock["train_s"] += time.perf_counter() - t0
            self.clock["cpu_s"] += time.process_time() - c0
            self.clock["iters"] += len(self.batches)


# ---------------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------------

def run(cfg: Config, run: Run) -> dict[str, Any]:
    from dl1.data.text import load_corpus, random_batches
    from dl1.models.gpt import GPT
    from dl1.train import Trainer, load_checkpoint

    cfg = resolve(cfg)
    run.save_json("resolved_config.json", config_to_dict(cfg))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = choose_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as nanoGPT
    corpus = load_corpus(cfg.txt_file, cfg.data_dir, cfg.val_fraction, cfg.encoding, cfg.block_size).to(device)
    tok = corpus.tokenizer
    prompt = cfg.sample_prompt if not tok.unknown(cfg.sample_prompt) else tok.decode(corpus.train[:1])
    model = GPT(model_config(cfg, tok.vocab_size)).to(device)
    print(f"[gpt] {corpus.path}: {len(corpus.train):,} train / {len(corpus.val):,} val characters, vocabulary "
          f"{tok.vocab_size} ({corpus.encoding}); model {model.num_params() / 1e6:.2f} M parameters "
          f"(without lm_head), {torch.get_num_threads()} thread(s), device {device}", flush=True)
    iters = total_iters(cfg, len(corpus.train))
    optimizer, scheduler = optimisation(cfg, model, iters)
    epochs = math.ceil(iters / cfg.eval_interval)
    extra = {"tokenizer": tok.state_dict(), "model_config": model.config.to_dict(),
             "corpus": {"path": corpus.path, "encoding": corpus.encoding}}
    trainer = Trainer(run, {"model": model}, {"model": optimizer}, epochs=epochs,
                      monitor="val/loss" if len(corpus.val) else None,
                      schedulers={"model": scheduler}, clip_grad_norm=cfg.clip_grad_norm or None, device=device,
                      amp=cfg.amp, extra_state=lambda: extra, desc="gpt")
    if cfg.resume:
        _check_resume_vocab(cfg.resume, tok, load_checkpoint)
    clock = {"train_s": 0.0, "cpu_s": 0.0, "iters": 0}
    last_val: dict[str, Any] = {}  # the newest validation, reused by finish() when it is of the final weights
    window = {"sum": torch.zeros((), device=device), "n": 0}

    def train_batches(epoch: int):
        n = min(cfg.eval_interval, iters - epoch * cfg.eval_interval)
        seed = cfg.seed * 1_000_003 + epoch  # a fresh, reproducible stream per interval: exact resume
        return _TimedBatches(random_batches(corpus, n, cfg.train_batch_size, cfg.block_size, seed), clock)

    def train_step(batch) -> dict[str, Any]:
        x, y = (t.to(device, non_blocking=True) for t in batch)
        with trainer.autocast():
            _, loss = model(x, y)
        trainer.backward_step(loss)
        window["sum"] += loss.detach()
        window["n"] += 1
        if trainer.step % cfg.log_interval == 0:  # the only host sync of the step, every log_interval steps
            run.log(trainer.step, "train_iter", {"loss": window["sum"].item() / window["n"], "lr": trainer.lr()})
            window["sum"].zero_()
            window["n"] = 0
        return {"loss": loss.detach()}

    def evaluate(epoch: int) -> dict[str, dict[str, Any]]:
        t0 = time.perf_counter()
        results = {}
        if len(corpus.val):
            results["val"] = {"loss": split_loss(model, corpus, "val", cfg.block_size, cfg.eval_batch_size, device)}
            last_val.update(step=trainer.step, loss=results["val"]["loss"])
        eval_s = time.perf_counter() - t0
        if clock["iters"]:
            run.log(trainer.step, "speed", speed(clock, cfg), epoch=epoch, eval_s=round(eval_s, 3))
        if cfg.sample_tokens:
            for i, text in enumerate(sample_text(model, tok, prompt, cfg.sample_tokens, cfg.generate_batch_size,
                                                 seed=cfg.seed + epoch)):
                run.log(trainer.step, "sample", {"text": text}, epoch=epoch, index=i)
        return results

    fit = trainer.fit(train_batches, train_step, evaluate, resume=cfg.resume)
    return finish(cfg, run, trainer, model, corpus, fit, clock, prompt, iters, last_val)


def optimisation(cfg: Config, model, iters: int):
    """AdamW with the course's decay groups, and warm-up then cosine decay to ``min_lr`` (default lr/10) per step."""
    from dl1.train import warmup_cosine

    optimizer = model.configure_optimizers(cfg)
    min_lr = cfg.learning_rate / 10 if cfg.min_lr is None else cfg.min_lr
    decay_end = iters if cfg.lr_schedule == "cosine" else 10**12
    return optimizer, warmup_cosine(optimizer, cfg.warmup_iters, decay_end, min_factor=min_lr / cfg.learning_rate)


def speed(clock: dict[str, float], cfg: Config) -> dict[str, float]:
    """Training throughput (evaluation excluded): wall clock, and per CPU-second of this process.

    With one thread on a busy machine the CPU-time figure estimates what the same run does on a quiet one.
    """
    tokens = cfg.train_batch_size * cfg.block_size * max(clock["iters"], 1)
    return {"train_tokens_per_s": round(tokens / max(clock["train_s"], 1e-9), 1),
            "ms_per_iter": round(clock["train_s"] / max(clock["iters"], 1) * 1000, 2),
            "train_tokens_per_cpu_s": round(tokens / max(clock["cpu_s"], 1e-9), 1)}


def _check_resume_vocab(resume: str, tok, load_checkpoint) -> None:
    path = Path(resume)
    path = path / "checkpoints" / "last.pt" if path.is_dir() else path
    saved = load_checkpoint(path).get("extra", {}).get("tokenizer")
    if saved and saved.get("chars") != tok.state_dict()["chars"]:
        raise DL1Error(f"cannot resume from {path}: its vocabulary differs from this text's (another --txt_file?)")


def finish(cfg: Config, run: Run, trainer, model, corpus, fit: dict[str, Any], clock, prompt: str,
           iters: int, last_val: dict[str, Any]) -> dict[str, Any]:
    device = next(model.parameters()).device
    val_windows = max(1, (len(corpus.val) or 100_000) // cfg.block_size)
    if last_val.get("step") == trainer.step:
        val_loss = last_val["loss"]
    else:
        val_loss = split_loss(model, corpus, "val", cfg.block_size, cfg.eval_batch_size, device) \
            if len(corpus.val) else None
    final = {"val_loss": val_loss,
             # the training loss in eval mode on as many characters as the validation split (its first windows;
             # 100,000 characters when there is no validation split)
             "train_loss": split_loss(model, corpus, "train", cfg.block_size, cfg.eval_batch_size, device,
                                      max_windows=val_windows)}
    trainer.load_best()
    samples = [""]
    if cfg.final_sample_tokens:
        samples = sample_text(model, corpus.tokenizer, prompt, cfg.final_sample_tokens, 1, seed=cfg.seed)
        if run.enabled:
            (run.dir / "samples.txt").write_text(samples[0] + "\n")
    make_figures(run.dir)
    return run.finish(
        data={"txt_file": corpus.path, "encoding": corpus.encoding, "vocab_size": corpus.tokenizer.vocab_size,
              "train_chars": len(corpus.train), "val_chars": len(corpus.val), "synthetic": corpus.path == "synthetic"},
        model={**model.config.to_dict(), "params": model.num_params()},
        iters=iters, threads=torch.get_num_threads(), device=str(device),
        final=final, best={"iter": fit["steps"] if fit["best_epoch"] is None else
                           min(fit["best_epoch"] * cfg.eval_interval, iters),
                           "val_loss": fit["best_value"]},
        speed=speed(clock, cfg) if clock["iters"] else {}, train_time_s=round(clock["train_s"], 2),
        sample=samples[0],
        checkpoint=str(trainer.best_path if trainer.best_path.exists() else trainer.last_path))


def make_figures(run_dir: Path) -> list[Path]:
    """``figures/gpt_loss.png``: training loss (running means) and validation loss against iterations."""
    records = read_jsonl(Path(run_dir) / "metrics.jsonl")
    split = "train_iter" if any(r["split"] == "train_iter" for r in records) else "train"
    train = [(r["step"], r["loss"]) for r in records if r["split"] == split and "loss" in r]
    val = [(r["step"], r["loss"]) for r in records if r["split"] == "val" and isinstance(r.get("loss"), float)]
    if not train and not val:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if train:
        ax.plot(*zip(*train, strict=True), lw=1, label="train (running mean, training mode)")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation (whole split)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.set_title(_title(Path(run_dir)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(run_dir) / "figures" / "gpt_loss.png"
    save_figure(fig, path)
    return [path]


def _title(run_dir: Path) -> str:
    import json

    path = run_dir / "resolved_config.json"
    if not path.exists():
        return "character-level GPT"
    c = json.loads(path.read_text())
    size = c["model_type"] if c.get("n_layer") is None else f"{c['n_layer']} layers x {c['n_embd']} wide"
    return (f"char GPT on {Path(c['txt_file']).name}: {size}, block {c['block_size']}, batch {c['train_batch_size']}"
            + (f"\n(preset {c['preset']})" if c.get("preset") != "none" else ""))
