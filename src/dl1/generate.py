"""``dl1 generate``: sample text from a trained character-level GPT checkpoint or from GPT-2 weights.

    dl1 generate --checkpoint runs/gpt/<stamp> --prompt "ROMEO:" --max_new_tokens 300 --top_k 10
    dl1 generate --pretrained gpt2 --prompt "Yesterday I went to the " --num_samples 10 --max_new_tokens 15

A checkpoint holds the model weights, its configuration and the character tokenizer, so no corpus is needed.  It is
read with torch.load(weights_only=True) (tensors and plain containers only: nothing in the file can run), and what it
stores is checked before the model is built: every size a whole number, a tokenizer as long as the vocabulary, weights
of the shapes the configuration gives, all finite.  GPT-2 weights: see --pretrained (a folder that `dl1 export RUN
--format hf` wrote works too).  The memory the model needs for --num_samples is checked against what the device has
free before anything is allocated.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dl1.config import arg, parse_config
from dl1.errors import DL1Error, UsageError
from dl1.models.gpt_config import MAX_TOKENS
from dl1.run.device import choose_device

__all__ = ["MAX_TOKENS", "Config", "HFTokenizer", "generate", "load_gpt_checkpoint", "load_pretrained", "main"]


@dataclass(frozen=True)
class Config:
    checkpoint: str | None = arg(None, "A GPT checkpoint (.pt) or a 'dl1 run gpt' run folder (uses its best.pt).")
    pretrained: str | None = arg(None, "GPT-2 weights through transformers: gpt2, gpt2-medium, gpt2-large, gpt2-xl, "
                                       "or a folder written by save_pretrained (with its tokenizer files) or by "
                                       "'dl1 export RUN --format hf'. A folder's model.safetensors is preferred; a "
                                       "pytorch_model.bin is read with weights_only=True (a pickle holding anything "
                                       "but tensors is refused).")
    prompt: str = arg("", "Text to continue (empty: a newline for character models, <|endoftext|> for GPT-2).")
    max_new_tokens: int = arg(200, "Tokens (characters for a character model) to generate per sample.", min=1,
                              max=MAX_TOKENS)
    num_samples: int = arg(3, "Number of samples.", min=1, max=256)
    temperature: float = arg(1.0, "Softmax temperature (lower = more conservative; towards 0 sampling becomes "
                                  "greedy).", min=0.0, max=1000.0, min_inclusive=False)
    top_k: int | None = arg(None, "Sample only among the k most likely tokens.", min=1, max=10**7)
    top_p: float | None = arg(None, "Nucleus sampling: the smallest set of tokens with probability >= p.",
                              min=0.0, max=1.0, min_inclusive=False)
    do_sample: bool = arg(True, "Sample (--no-do_sample: greedy, always the most likely token).")
    seed: int = arg(0, "Random seed of the sampling.", min=0, max=2**32 - 1)
    device: str = arg("auto", "Device: auto, cpu, cuda, mps.")

    def check(self) -> None:
        if (self.checkpoint is None) == (self.pretrained is None):
            raise UsageError("give exactly one of --checkpoint CKPT or --pretrained NAME")


class HFTokenizer:
    """A ``transformers`` tokenizer behind the ``encode``/``decode`` interface of ``CharTokenizer``."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(list(ids))


def load_gpt_checkpoint(source: str | Path, device: Any = "cpu", num_samples: int = 1, context: int | None = None):
    """(model in eval mode, CharTokenizer) from a checkpoint written by ``dl1 run gpt`` (a file or a run folder);
    the memory of ``num_samples`` rows of ``context`` tokens is checked before the model is built."""
    from dl1.experiments.memory_advice import check_fits
    from dl1.hub.gpt_checkpoint import build_model, read_gpt_checkpoint
    from dl1.run.reader import checkpoint_file

    checkpoint = read_gpt_checkpoint(checkpoint_file(source, prefer="best"), device)
    check_fits(checkpoint.config, num_samples, device, training=False, batch_flag="--num_samples", context=context)
    return build_model(checkpoint).to(device).eval(), checkpoint.tokenizer


def load_pretrained(name: str, device: Any = "cpu", num_samples: int = 1, context: int | None = None):
    """(GPT with GPT-2 weights in eval mode, its tokenizer: dl1's character tokenizer for a ``dl1 export --format
    hf`` folder, else the ``transformers`` one); the sizes, the vocabulary and the memory are checked first."""
    from dl1.experiments.memory_advice import check_fits
    from dl1.hub import gpt2

    config = gpt2.read_config(name)
    tokenizer = gpt2.load_tokenizer(name)
    char = isinstance(tokenizer, gpt2.CharTokenizer)
    if char and tokenizer.vocab_size != config.vocab_size:
        raise DL1Error(f"{name}: its character tokenizer has {tokenizer.vocab_size} characters but the model's "
                       f"vocabulary is {config.vocab_size}")
    check_fits(config, num_samples, device, training=False, batch_flag="--num_samples", context=context)
    model = gpt2.from_pretrained(name).to(device).eval()
    return model, (tokenizer if char else HFTokenizer(tokenizer))


def default_prompt(tokenizer: Any) -> str:
    """The prompt of an empty ``--prompt``: a newline for a character model (its first character when it has no
    newline), ``<|endoftext|>`` for GPT-2."""
    if isinstance(tokenizer, HFTokenizer):
        return "<|endoftext|>"
    return "\n" if "\n" in tokenizer.string_to_index else tokenizer.chars[0]


def generate(model, tokenizer, prompt: str, num_samples: int = 1, max_new_tokens: int = 200,
             temperature: float = 1.0, do_sample: bool = True, top_k: int | None = None,
             top_p: float | None = None, seed: int = 0) -> list[str]:
    """``num_samples`` decoded continuations of ``prompt`` (:func:`dl1.models.gpt_sampling.generate_text`)."""
    from dl1.models.gpt_sampling import generate_text

    return generate_text(model, tokenizer, prompt, num_samples, max_new_tokens, temperature, do_sample, top_k,
                         top_p, seed)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dl1 generate``; prints the samples."""
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(Config, args, prog="dl1 generate", description=(__doc__ or "").strip())
    device = choose_device(cfg.device)
    context = len(cfg.prompt.encode("utf-8")) + 16 + cfg.max_new_tokens  # tokens: at most one per byte
    if cfg.checkpoint:
        model, tokenizer = load_gpt_checkpoint(cfg.checkpoint, device, cfg.num_samples, context)
    else:
        model, tokenizer = load_pretrained(cfg.pretrained, device, cfg.num_samples, context)
    samples = generate(model, tokenizer, cfg.prompt or default_prompt(tokenizer), cfg.num_samples,
                       cfg.max_new_tokens, cfg.temperature, cfg.do_sample, cfg.top_k, cfg.top_p, cfg.seed)
    for i, text in enumerate(samples):
        print(f"--- sample {i + 1}/{len(samples)} ---")
        print(text)
    return 0
