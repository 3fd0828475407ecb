"""``dl1 generate``: sample text from a trained character-level GPT checkpoint or from GPT-2 weights.

    dl1 generate --checkpoint runs/gpt/<stamp> --prompt "ROMEO:" --max_new_tokens 300 --top_k 10
    dl1 generate --pretrained gpt2 --prompt "Yesterday I went to the " --num_samples 10 --max_new_tokens 15

A checkpoint holds the model weights, its configuration and the character tokenizer, so no corpus is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dl1.config import arg, parse_config
from dl1.errors import DL1Error, UsageError


@dataclass(frozen=True)
class Config:
    checkpoint: str | None = arg(None, "A GPT checkpoint (.pt) or a 'dl1 run gpt' run folder (uses its best.pt).")
    pretrained: str | None = arg(None, "GPT-2 weights through transformers: gpt2, gpt2-medium, gpt2-large, gpt2-xl, "
                                       "or a folder written by save_pretrained (with its tokenizer files).")
    prompt: str = arg("", "Text to continue (empty: a newline for character models, <|endoftext|> for GPT-2).")
    max_new_tokens: int = arg(200, "Tokens (characters for a character model) to generate per sample.", min=1)
    num_samples: int = arg(3, "Number of samples.", min=1, max=256)
    temperature: float = arg(1.0, "Softmax temperature (lower = more conservative).", min=0.0, min_inclusive=False)
    top_k: int | None = arg(None, "Sample only among the k most likely tokens.", min=1)
    top_p: float | None = arg(None, "Nucleus sampling: the smallest set of tokens with probability >= p.",
                              min=0.0, max=1.0, min_inclusive=False)
    do_sample: bool = arg(True, "Sample (--no-do_sample: greedy, always the most likely token).")
    seed: int = arg(0, "Random seed of the sampling.")
    device: str = arg("auto", "Device: auto, cpu, cuda, mps.")

    def check(self) -> None:
        if (self.checkpoint is None) == (self.pretrained is None):
            raise UsageError("give exactly one of --checkpoint CKPT or --pretrained NAME")


class HFTokenizer:
    """A ``transformers`` GPT-2 tokenizer behind the ``encode``/``decode`` interface of ``CharTokenizer``."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(list(ids))


def checkpoint_path(source: str | Path) -> Path:
    path = Path(source)
    if path.is_dir():
        for name in ("checkpoints/best.pt", "checkpoints/last.pt", "best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise DL1Error(f"no checkpoints/best.pt or last.pt in {path}")
    return path


def load_gpt_checkpoint(source: str | Path, device: Any = "cpu"):
    """(model in eval mode, CharTokenizer) from a checkpoint written by ``dl1 run gpt``."""
    from dl1.data.text import CharTokenizer
    from dl1.models.gpt import GPT, GPTConfig
    from dl1.train import load_checkpoint

    path = checkpoint_path(source)
    state = load_checkpoint(path, map_location=device)
    extra = state.get("extra") or {}
    if "model_config" not in extra or "tokenizer" not in extra or "model" not in state.get("modules", {}):
        raise DL1Error(f"{path} is not a GPT checkpoint of 'dl1 run gpt' (no model config or tokenizer inside)")
    model = GPT(GPTConfig.from_dict(extra["model_config"]))
    model.load_state_dict(state["modules"]["model"])
    return model.to(device).eval(), CharTokenizer.from_state_dict(extra["tokenizer"])


def load_pretrained(name: str, device: Any = "cpu"):
    """(GPT with GPT-2 weights in eval mode, GPT-2 tokenizer)."""
    from dl1.models.gpt import GPT, hf_offline, load_hf_gpt2

    model = GPT.from_hf(load_hf_gpt2(name)).to(device).eval()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=hf_offline(Path(name).is_dir()))
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DL1Error(f"cannot load the GPT-2 tokenizer {name!r} ({first}); it downloads with the weights on first "
                       "use, or save it into the same folder with GPT2Tokenizer.save_pretrained") from None
    return model, HFTokenizer(tokenizer)


def generate(model, tokenizer, prompt: str, num_samples: int = 1, max_new_tokens: int = 200,
             temperature: float = 1.0, do_sample: bool = True, top_k: int | None = None,
             top_p: float | None = None, seed: int = 0) -> list[str]:
    """``num_samples`` decoded continuations of ``prompt`` (prompt included); the model is put in eval mode."""
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt)
    if not ids:
        raise DL1Error("the prompt encodes to no tokens")
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)  # (n, P)
    g = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    out = model.generate(idx, max_new_tokens, temperature=temperature, do_sample=do_sample, top_k=top_k,
                         top_p=top_p, generator=g)  # (n, P + max_new_tokens)
    return [tokenizer.decode(row) for row in out.tolist()]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dl1 generate``; prints the samples."""
    import sys

    from dl1.runtime import choose_device

    args = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(Config, args, prog="dl1 generate", description=(__doc__ or "").strip())
    device = choose_device(cfg.device)
    if cfg.checkpoint:
        model, tokenizer = load_gpt_checkpoint(cfg.checkpoint, device)
        prompt = cfg.prompt or ("\n" if "\n" in tokenizer.string_to_index else tokenizer.chars[0])
    else:
        model, tokenizer = load_pretrained(cfg.pretrained, device)
        prompt = cfg.prompt or "<|endoftext|>"
    samples = generate(model, tokenizer, prompt, cfg.num_samples, cfg.max_new_tokens, cfg.temperature,
                       cfg.do_sample, cfg.top_k, cfg.top_p, cfg.seed)
    for i, text in enumerate(samples):
        print(f"--- sample {i + 1}/{len(samples)} ---")
        print(text)
    return 0
