"""The runner of ``dl1 run gpt`` (see :mod:`dl1.experiments.gpt` for the flags): train a character-level GPT,
validate on the whole split, sample, resume; and its export."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dl1.data.text import load_corpus, random_batches
from dl1.errors import DL1Error, UsageError
from dl1.experiments.gpt import Config, model_config, total_iters
from dl1.experiments.memory_advice import check_fits
from dl1.export_format import Exported
from dl1.hub.gpt_checkpoint import GPTCheckpoint, read_gpt_checkpoint
from dl1.models.gpt import GPT, summed_loss
from dl1.models.gpt_config import SIZES
from dl1.models.gpt_sampling import generate_text as generate
from dl1.report.gpt import make_figures, throughput
from dl1.run.device import choose_device, seed_everything
from dl1.run.files import write_text_atomic
from dl1.run.folder import Run
from dl1.run.reader import checkpoint_file
from dl1.train import Trainer, distributed, warmup_cosine


def read_resume(cfg: Config, run: Run) -> GPTCheckpoint | None:
    """The ``--resume`` checkpoint, read once (tensors mapped, not copied) before anything is written: a readable GPT
    checkpoint (stored config, tokenizer and weights checked) of the size these flags give; its training-loss window
    and its engine state are then restored from this one object.  A continued run's file was read when the run was
    opened (``run.resume_state``): that object is checked, and the file is not read again."""
    if not cfg.resume:
        return None
    path = checkpoint_file(cfg.resume, prefer="last")
    saved = read_gpt_checkpoint(path, mmap=True, state=run.resume_state(path))
    ours = model_config(cfg, saved.config.vocab_size).resolved()
    differ = [f"{k} {getattr(saved.config, k)} there, {getattr(ours, k)} here" for k in SIZES
              if getattr(saved.config, k) != getattr(ours, k)]
    if differ:
        raise UsageError(f"cannot resume from {saved.path}: it holds another model size ({'; '.join(differ)})")
    return saved


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
        cfg, info = self.cfg, distributed.current()
        n = min(cfg.eval_interval, self.iters - epoch * cfg.eval_interval)
        seed = cfg.seed * 1_000_003 + epoch  # a fresh, reproducible stream per interval: exact resume
        return random_batches(self.corpus, n, cfg.train_batch_size, cfg.block_size, seed, rank=info.rank,
                              world_size=info.world_size)  # this rank's rows of every step's global batch

    def train_step(self, batch) -> dict[str, Any]:
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
                write_text_atomic(run.dir / "samples.txt", sample + "\n", root=run.dir)  # never through a link
            make_figures(run.dir)
        best = fit["steps"] if fit["best_epoch"] is None else min(fit["best_epoch"] * cfg.eval_interval, self.iters)
        return run.finish(
            data=corpus.describe(), model={**model.config.to_dict(), "params": model.num_params()},
            iters=self.iters, threads=torch.get_num_threads(), device=str(trainer.device),
            final={"val_loss": val_loss, "train_loss": train_loss}, best={"iter": best, "val_loss": fit["best_value"]},
            speed=self.speed() if trainer.train_batches else {}, train_time_s=round(trainer.train_time_s, 2),
            sample=sample, checkpoint=str(trainer.best_path if trainer.best_path.exists() else trainer.last_path))


def run(cfg: Config, run: Run) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = run.device = choose_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as nanoGPT
    saved = read_resume(cfg, run)
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
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, cfg.betas, device.type)  # AdamW
    min_lr = cfg.learning_rate / 10 if cfg.min_lr is None else cfg.min_lr
    scheduler = warmup_cosine(optimizer, cfg.warmup_iters, iters if cfg.lr_schedule == "cosine" else 10**12,
                              min_factor=min_lr / cfg.learning_rate)
    state.trainer = Trainer(run, {"model": model}, {"model": optimizer}, epochs=math.ceil(iters / cfg.eval_interval),
                            monitor="val/loss" if len(corpus.val) else None, schedulers={"model": scheduler},
                            clip_grad_norm=cfg.clip_grad_norm or None, device=device, precision=cfg.precision,
                            compile=cfg.compile,
                            extra_state=state.extra_state, desc="gpt", total_steps=iters,
                            resume_mid_epoch=True)  # a stop signal saves where it is: batches are seeded per interval
    state.net = state.trainer.wrap(model)
    if saved is not None:
        state.restore(saved.extra)
    fit = state.trainer.fit(state.train_batches, state.train_step, state.evaluate, resume=cfg.resume,
                            resume_state=None if saved is None else saved.state)
    return state.finish(fit)


def export(run_dir: Path, config: dict[str, Any], prefer: str) -> Exported:
    """The trained GPT of a run, with its character tokenizer (``dl1 export``; ``--format hf`` too)."""
    checkpoint = read_gpt_checkpoint(checkpoint_file(run_dir, prefer=prefer))  # config, tokenizer, weights checked
    return Exported(checkpoint.weights, "dl1.models.gpt.GPT", {"config": checkpoint.config.to_dict()},
                    {"tokenizer": checkpoint.tokenizer.state_dict()}, {"file": str(checkpoint.path)})
