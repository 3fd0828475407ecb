"""GPT-2 weights and tokenizer through ``transformers``: a hub name (gpt2, gpt2-medium, gpt2-large, gpt2-xl) or a
local folder written by ``save_pretrained`` (``dl1 export RUN --format hf`` writes one, with dl1's character tokenizer
beside the weights), copied into dl1's :class:`~dl1.models.gpt.GPT`.

What a folder's weights may be, in the order dl1 prefers them:

1. ``model.safetensors``: tensors only, nothing in the file can run (hub names always load this file);
2. ``pytorch_model.bin`` (a ``torch.save`` pickle), only when there is no safetensors file: dl1 first reads it itself
   with ``torch.load(weights_only=True)`` (tensors mapped, not copied), which admits tensors and plain containers only,
   so a pickle that asks for anything else (code to run) is refused with one line before ``transformers`` opens it.

The folder's ``config.json`` is checked (every size a whole number, width divisible by heads) before any weight is
allocated.  Offline (see :mod:`dl1.hub`), a hub name is looked up in the local cache only and fails at once.
transformers (an optional extra) is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dl1.data.text import CharTokenizer
from dl1.errors import DL1Error, first_line
from dl1.hub import online
from dl1.hub.gpt2_export import CHAR_TOKENIZER
from dl1.models.gpt import GPT
from dl1.models.gpt_config import PRETRAINED, GPTConfig
from dl1.run.files import read_json
from dl1.train.checkpoint import torch_load  # torch.load(weights_only=True), without its TorchScript warning

SAFETENSORS = "model.safetensors"
HUB = "https://huggingface.co/"


def local_files_only(local: bool = False) -> bool:
    """True when the Hugging Face hub cannot be reached (or a local folder is read): then only local files are used,
    failing in about a second instead of retrying for half a minute."""
    return local or not online(HUB)


@contextmanager
def _transformers() -> Iterator[Any]:
    """The transformers module, its warnings and progress bars silenced meanwhile (dl1 checks what they warn about
    and says it in one line); a missing package is one line."""
    try:
        import transformers
    except ImportError:
        raise DL1Error("GPT-2 weights need the transformers package: pip install 'dl1[hf]'") from None
    logging = transformers.utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()  # a few files read from disk: no "Loading weights" bar on stderr
    try:
        yield transformers
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _source(name_or_path: str) -> tuple[bool, Path]:
    """(is a local folder, its path); an unknown name that is no folder is one line."""
    path = Path(name_or_path)
    if path.is_dir():
        return True, path
    if name_or_path not in PRETRAINED:
        raise DL1Error(f"unknown pretrained model {name_or_path!r}: use one of {', '.join(PRETRAINED)} "
                       "or a folder written by save_pretrained")
    return False, path


def _cannot_load(name_or_path: str, exc: BaseException) -> DL1Error:
    return DL1Error(f"cannot load GPT-2 weights {name_or_path!r} ({first_line(exc, 160)}); they download from the "
                    "Hugging Face hub on first use (needs network, unset HF_HUB_OFFLINE) into ~/.cache/huggingface, "
                    "or pass a local folder written by GPT2LMHeadModel.save_pretrained")


def read_config(name_or_path: str) -> GPTConfig:
    """The checked :class:`GPTConfig` of a GPT-2 (its ``config.json``), before any weight is read or allocated."""
    local, _ = _source(name_or_path)
    with _transformers() as transformers:
        try:
            hf_config = transformers.GPT2Config.from_pretrained(name_or_path, local_files_only=local_files_only(local))
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a missing or broken file
            raise _cannot_load(name_or_path, exc) from None
    config = GPT.config_from_hf(hf_config)
    try:
        return config.resolved()
    except ValueError as exc:
        raise DL1Error(f"GPT-2 config of {name_or_path!r} is not usable: {first_line(exc)}") from None


def check_pickled_weights(folder: Path) -> None:
    """Read every ``pytorch_model*.bin`` of ``folder`` with ``torch.load(weights_only=True)`` (mapped, not copied);
    a file that holds anything but tensors and plain containers is refused with one line."""
    for path in sorted(folder.glob("pytorch_model*.bin")):
        try:
            try:
                torch_load(path, map_location="cpu", mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                torch_load(path, map_location="cpu")  # the legacy (non-zip) format
        except Exception as exc:  # noqa: BLE001 - torch reports a refused or broken pickle in several ways
            raise DL1Error(f"cannot read GPT-2 weights {path}: {first_line(exc)}") from None


def load_hf_gpt2(name_or_path: str) -> Any:
    """``transformers.GPT2LMHeadModel`` in eval mode from a hub name or a local folder (see the module docstring)."""
    read_config(name_or_path)
    local, folder = _source(name_or_path)
    safetensors = not local or (folder / SAFETENSORS).is_file()
    if not safetensors:
        check_pickled_weights(folder)
    with _transformers() as transformers:
        try:
            model = transformers.GPT2LMHeadModel.from_pretrained(
                name_or_path, local_files_only=local_files_only(local), use_safetensors=True if safetensors else None)
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a missing or broken file
            raise _cannot_load(name_or_path, exc) from None
    return model.eval()


def from_pretrained(name_or_path: str = "gpt2") -> GPT:
    """dl1's GPT with GPT-2 weights: a hub name (``gpt2``, ...) or a local ``save_pretrained`` folder."""
    return GPT.from_hf(load_hf_gpt2(name_or_path))


def read_char_tokenizer(folder: Path) -> CharTokenizer | None:
    """The character tokenizer of a folder that ``dl1 export RUN --format hf`` wrote (its ``char_tokenizer.json``:
    token id = position in ``chars``), checked; None for a folder without one (a GPT-2 folder)."""
    path = folder / CHAR_TOKENIZER
    if not path.is_file():
        return None
    try:
        state = read_json(path)
        tokenizer = CharTokenizer.from_state_dict(state)
    except DL1Error as exc:
        raise DL1Error(f"{path}: {exc}") from None
    if tokenizer.chars != state["chars"]:  # ids are positions in the file's list: dl1 writes it sorted
        raise DL1Error(f"{path}: the characters are not in dl1's (sorted) order, so their ids are not dl1's")
    return tokenizer


def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer of a hub name or a local folder: dl1's own character tokenizer for a folder that ``dl1 export
    --format hf`` wrote (:func:`read_char_tokenizer`), else ``transformers.AutoTokenizer`` (no remote code)."""
    local, folder = _source(name_or_path)
    char = read_char_tokenizer(folder) if local else None
    if char is not None:
        return char
    with _transformers() as transformers:
        try:
            return transformers.AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_files_only(local))
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a missing or broken file
            raise DL1Error(f"cannot load the GPT-2 tokenizer {name_or_path!r} ({first_line(exc, 160)}); it downloads "
                           "with the weights on first use, or save it into the same folder with "
                           "GPT2Tokenizer.save_pretrained") from None
