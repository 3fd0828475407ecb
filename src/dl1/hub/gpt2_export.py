"""dl1's GPT -> a Hugging Face ``GPT2LMHeadModel`` folder (``save_pretrained``): the inverse of the GPT-2 import.

The state-dict names are GPT-2's already; what differs is the layout of the four projections (``c_attn``,
``c_proj``, ``c_fc``, ``mlp.c_proj``), which GPT-2 stores as ``Conv1D`` weights of shape ``(in, out)``: they are
transposed back.  The head is not tied to the token embedding (dl1 trains them apart), the activation is GPT-2's
``gelu_new`` or the exact ``gelu``, the LayerNorms' epsilon is PyTorch's 1e-5 (GPT-2's too).

The character tokenizer is saved beside the weights twice: ``char_tokenizer.json`` (dl1's form:
``{"kind": "char", "chars": [...]}``, token id = position in ``chars``) and ``tokenizer.json`` (a ``tokenizers``
word-level model over single characters, so ``AutoTokenizer.from_pretrained(folder)`` encodes and decodes exactly as
dl1 does).  transformers and tokenizers are imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dl1.errors import DL1Error, first_line
from dl1.models.gpt_config import GPTConfig

if TYPE_CHECKING:
    import torch

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
CHAR_TOKENIZER = "char_tokenizer.json"


def hf_config(config: GPTConfig) -> Any:
    """The ``transformers.GPT2Config`` of a (resolved) dl1 GPT config."""
    from transformers import GPT2Config

    c = config.resolved()
    return GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                      n_head=c.n_head, activation_function=HF_ACTIVATIONS[c.activation], resid_pdrop=c.resid_pdrop,
                      embd_pdrop=c.embd_pdrop, attn_pdrop=c.attn_pdrop, layer_norm_epsilon=1e-5,
                      tie_word_embeddings=False, bos_token_id=None, eos_token_id=None,
                      architectures=["GPT2LMHeadModel"])


def hf_state_dict(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """dl1 GPT weights in GPT-2's layout: the Conv1D projections transposed to ``(in, out)``, all contiguous."""
    return {k: (v.t() if k.endswith(CONV1D) else v).float().contiguous() for k, v in weights.items()}


def to_hf(config: GPTConfig, weights: dict[str, torch.Tensor]) -> Any:
    """A ``GPT2LMHeadModel`` (eval mode) holding dl1's weights; every weight is checked to land somewhere."""
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        raise DL1Error("exporting to the Hugging Face format needs transformers: pip install 'dl1[hf]'") from None
    model = GPT2LMHeadModel(hf_config(config))
    result = model.load_state_dict(hf_state_dict(weights), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or result.unexpected_keys:
        raise DL1Error(f"GPT weights do not map onto GPT2LMHeadModel (missing {missing[:3]}, unexpected "
                       f"{result.unexpected_keys[:3]})")
    return model.eval()


def char_tokenizer_files(chars: list[str], folder: Path) -> list[Path]:
    """Write ``char_tokenizer.json`` and a ``transformers`` fast tokenizer of the same characters into ``folder``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = folder / CHAR_TOKENIZER
    path.write_text(json.dumps({"kind": "char", "chars": list(chars)}, ensure_ascii=False, indent=1) + "\n")
    backend = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    backend.decoder = decoders.Fuse()  # ids -> the characters joined, nothing between them
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False,
                                        model_max_length=10**30)
    return [path, *map(Path, tokenizer.save_pretrained(str(folder)))]


def save_hf(config: GPTConfig, weights: dict[str, torch.Tensor], chars: list[str], folder: Path) -> list[Path]:
    """``save_pretrained`` of the GPT2LMHeadModel (``config.json``, ``model.safetensors``) and the tokenizer files."""
    from transformers.utils import logging

    model = to_hf(config, weights)
    folder.mkdir(parents=True, exist_ok=True)
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # one file of a few MB: no "writing shards" bar
    try:
        model.save_pretrained(str(folder), safe_serialization=True)
        return [folder / "config.json", folder / "model.safetensors", *char_tokenizer_files(chars, folder)]
    except OSError as exc:
        raise DL1Error(f"cannot write {folder}: {first_line(exc)}") from None
    finally:
        if bars:
            logging.enable_progress_bar()
