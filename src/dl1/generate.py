"""``dl1 generate``: sample text from a trained character-level GPT checkpoint or from GPT-2 weights.

    dl1 generate --checkpoint runs/gpt/<stamp> --prompt "ROMEO:" --max_new_tokens 300 --top_k 10
    dl1 generate --pretrained gpt2 --prompt "Yesterday I went to the " --num_samples 10 --max_new_tokens 15

A checkpoint holds the model weights, its configuration and the character tokenizer, so no corpus is needed.  It is
read with torch.load(weights_only=True) (tensors and plain containers only: nothing in the file can run), and what it
stores is checked before the model is built: every size a whole number, a tokenizer as long as the vocabulary, weights
of the shapes the configuration gives, all finite.  GPT-2 weights: see --pretrained.  The memory the model needs for
--num_samples is checked against what the device has free before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dl1 import runtime
from dl1.config import arg, parse_config
from dl1.errors import DL1Error, UsageError, first_line
from dl1.models.gpt_config import GPTConfig

if TYPE_CHECKING:
    from dl1.data.text import CharTokenizer

MAX_TOKENS = 100_000  # the most tokens a flag may ask to generate (or sample during training)


@dataclass(frozen=True)
class Config:
    checkpoint: str | None = arg(None, "A GPT checkpoint (.pt) or a 'dl1 run gpt' run folder (uses its best.pt).")
    pretrained: str | None = arg(None, "GPT-2 weights through transformers: gpt2, gpt2-medium, gpt2-large, gpt2-xl, "
                                       "or a folder written by save_pretrained (with its tokenizer files). A folder's "
                                       "model.safetensors is preferred; a pytorch_model.bin is read with "
                                       "weights_only=True (a pickle holding anything but tensors is refused).")
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
    """A ``transformers`` GPT-2 tokenizer behind the ``encode``/``decode`` interface of ``CharTokenizer``."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(list(ids))


# -- memory ----------------------------------------------------------------------------------------------------------
def check_fits(config: GPTConfig, batch_size: int, device: Any, *, training: bool, batch_flag: str,
               block_flag: str | None = None, context: int | None = None) -> None:
    """One line saying what fits when ``config`` on ``batch_size`` windows of ``context`` tokens (default its block
    size) cannot fit in ``device``'s free memory."""
    cuda = getattr(device, "type", str(device)) == "cuda"
    config.check_memory(batch_size, runtime.available_memory(device), training=training, where=str(device),
                        batch_flag=batch_flag, block_flag=block_flag, cuda=cuda, context=context)


# -- loading ---------------------------------------------------------------------------------------------------------
@dataclass
class GPTCheckpoint:
    """What a ``dl1 run gpt`` checkpoint holds, checked: its model config (resolved), tokenizer and weights."""

    path: Path
    config: GPTConfig
    tokenizer: CharTokenizer
    weights: dict[str, Any]
    extra: dict[str, Any]


def read_gpt_checkpoint(path: str | Path, device: Any = "cpu", mmap: bool = False) -> GPTCheckpoint:
    """Read and check a checkpoint written by ``dl1 run gpt``; anything unusable is one-line :class:`DL1Error`."""
    from dl1.data.text import CharTokenizer
    from dl1.train import load_checkpoint

    path = Path(path)
    state = load_checkpoint(path, map_location=device, mmap=mmap)
    extra = state.get("extra") if isinstance(state, dict) else None
    modules = state.get("modules") if isinstance(state, dict) else None
    if not isinstance(extra, dict) or "model_config" not in extra or "tokenizer" not in extra \
            or not isinstance(modules, dict) or not isinstance(modules.get("model"), dict):
        raise DL1Error(f"{path} is not a GPT checkpoint of 'dl1 run gpt' (no model config or tokenizer inside)")
    try:
        config = GPTConfig.from_dict(extra["model_config"]).resolved()
    except (TypeError, ValueError) as exc:
        raise DL1Error(f"{path}: the stored model config is not usable ({first_line(exc)})") from None
    try:
        tokenizer = CharTokenizer.from_state_dict(extra["tokenizer"])
    except DL1Error as exc:
        raise DL1Error(f"{path}: {exc}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise DL1Error(f"{path}: the stored tokenizer has {tokenizer.vocab_size} characters but the model's "
                       f"vocabulary is {config.vocab_size}")
    _check_weights(path, config, modules["model"], extra.get("train_window"))
    return GPTCheckpoint(path, config, tokenizer, modules["model"], extra)


def _check_weights(path: Path, config: GPTConfig, weights: dict[str, Any], window: Any = None) -> None:
    """The weights are the tensors the config gives (names and shapes from a model on the meta device: nothing is
    allocated), all finite; the training-loss window of ``dl1 run gpt`` (if stored) is a 0-d sum and a count."""
    import torch

    from dl1.models.gpt import GPT

    if window is not None and not (isinstance(window, dict) and isinstance(window.get("sum"), torch.Tensor)
                                   and window["sum"].shape == () and type(window.get("count")) is int
                                   and window["count"] >= 0):
        raise DL1Error(f"{path}: the stored training-loss window is not a sum and a count")

    layers = {k.split(".")[2] for k in weights if isinstance(k, str) and k.startswith("transformer.h.")}
    if len(layers) != config.n_layer:  # before a model of that many layers is built, even on the meta device
        raise DL1Error(f"{path}: the weights hold {len(layers)} layers but the stored model config says "
                       f"{config.n_layer:,}")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    if set(weights) != set(expected):
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise DL1Error(f"{path}: the weights do not match the stored model config (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]})")
    for name, shape in expected.items():
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tuple(tensor.shape) != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise DL1Error(f"{path}: weight {name} is {got} but the stored model config (vocabulary "
                           f"{config.vocab_size:,}, width {config.n_embd}) gives {shape}")
        if not bool(torch.isfinite(tensor).all()):
            raise DL1Error(f"{path}: weight {name} holds NaN or infinite values")


def build_model(checkpoint: GPTCheckpoint):
    """The GPT of a checked checkpoint, its weights used in place (built on the meta device: nothing allocated
    twice)."""
    import torch

    from dl1.models.gpt import GPT

    with torch.device("meta"):
        model = GPT(checkpoint.config)
    model.load_state_dict({k: v.float() for k, v in checkpoint.weights.items()}, assign=True)
    return model


def load_gpt_checkpoint(source: str | Path, device: Any = "cpu", num_samples: int = 1, context: int | None = None):
    """(model in eval mode, CharTokenizer) from a checkpoint written by ``dl1 run gpt`` (a file or a run folder);
    the memory of ``num_samples`` rows of ``context`` tokens is checked before the model is built."""
    from dl1.runtime import checkpoint_file

    checkpoint = read_gpt_checkpoint(checkpoint_file(source, prefer="best"), device)
    check_fits(checkpoint.config, num_samples, device, training=False, batch_flag="--num_samples", context=context)
    return build_model(checkpoint).to(device).eval(), checkpoint.tokenizer


def load_pretrained(name: str, device: Any = "cpu", num_samples: int = 1, context: int | None = None):
    """(GPT with GPT-2 weights in eval mode, GPT-2 tokenizer); the sizes and memory are checked first."""
    from dl1.hub import gpt2

    check_fits(gpt2.read_config(name), num_samples, device, training=False, batch_flag="--num_samples",
               context=context)
    model = gpt2.from_pretrained(name).to(device).eval()
    return model, HFTokenizer(gpt2.load_tokenizer(name))


# -- sampling --------------------------------------------------------------------------------------------------------
def generate(model, tokenizer, prompt: str, num_samples: int = 1, max_new_tokens: int = 200,
             temperature: float = 1.0, do_sample: bool = True, top_k: int | None = None,
             top_p: float | None = None, seed: int = 0) -> list[str]:
    """``num_samples`` decoded continuations of ``prompt`` (prompt included); the model is left in eval mode."""
    import torch

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
    context = len(cfg.prompt.encode("utf-8")) + 16 + cfg.max_new_tokens  # tokens: at most one per byte
    if cfg.checkpoint:
        model, tokenizer = load_gpt_checkpoint(cfg.checkpoint, device, cfg.num_samples, context)
        prompt = cfg.prompt or ("\n" if "\n" in tokenizer.string_to_index else tokenizer.chars[0])
    else:
        model, tokenizer = load_pretrained(cfg.pretrained, device, cfg.num_samples, context)
        prompt = cfg.prompt or "<|endoftext|>"
    samples = generate(model, tokenizer, prompt, cfg.num_samples, cfg.max_new_tokens, cfg.temperature,
                       cfg.do_sample, cfg.top_k, cfg.top_p, cfg.seed)
    for i, text in enumerate(samples):
        print(f"--- sample {i + 1}/{len(samples)} ---")
        print(text)
    return 0
