"""Character-level text data: reading any text file, a character tokenizer, a contiguous split and random windows.

``read_text`` decodes UTF-8 (a byte-order mark is dropped) and falls back to Latin-1 with a note, or uses the encoding
asked for; ``CharTokenizer`` maps the sorted set of characters to ids and is saved inside the GPT checkpoint so that
generation needs no corpus; ``CharCorpus`` holds the encoded text split contiguously (first 90 % train, last 10 %
validation) and draws batches of random windows, ``x = data[i:i+T]``, ``y = data[i+1:i+T+1]``.

``resolve_text_file('shakespeare')`` is tiny Shakespeare as shipped inside the package (``dl1/data/corpora/``, see its
README for the source): no network, no data folder, the same bytes everywhere (its SHA-256 is checked).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dl1.errors import DL1Error

if TYPE_CHECKING:
    import torch

CORPORA_DIR = Path(__file__).resolve().parent / "corpora"  # package data (see corpora/README.md)
SHAKESPEARE_URL = "https://github.com/karpathy/char-rnn/blob/master/data/tinyshakespeare/input.txt"
# named corpus -> (shipped file, its SHA-256): Karpathy's char-rnn input.txt, unchanged
NAMED_CORPORA = {"shakespeare": ("tiny_shakespeare.txt",
                                 "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")}
SYNTHETIC = "synthetic"  # a generated text for smoke runs only (never a result)


def synthetic_text(n_chars: int = 20_000, seed: int = 0) -> str:
    """A deterministic made-up text (random words of a small vocabulary) for smoke runs; labelled as synthetic."""
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "big", "red", "house", "of", "it"]
    out, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choice(words, size=int(rng.integers(3, 9)))).capitalize() + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:n_chars]


def resolve_text_file(name_or_path: str, data_dir: str | Path | None = None, download: bool = False) -> Path:
    """A path to an existing text file: the path itself, or a named corpus (``shakespeare``) shipped with the package.

    ``data_dir`` and ``download`` are accepted for compatibility and not used: a named corpus is always the shipped
    file, checked against its SHA-256 (a damaged installation is one clear line)."""
    path = Path(name_or_path).expanduser()
    if name_or_path == SYNTHETIC:
        raise DL1Error("the synthetic corpus has no file; use load_corpus")
    if path.is_file():
        return path
    if name_or_path not in NAMED_CORPORA:
        known = ", ".join(NAMED_CORPORA)
        raise DL1Error(f"text file not found: {name_or_path} (give a path to a text file, or a named corpus: {known})")
    return shipped_corpus(name_or_path)


def shipped_corpus(name: str) -> Path:
    """The file of a named corpus inside the installed package, its SHA-256 checked."""
    filename, sha256 = NAMED_CORPORA[name]
    path = CORPORA_DIR / filename
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise DL1Error(f"the {name} corpus shipped with dl1 is missing ({path}: {exc.strerror or exc}); reinstall dl1 "
                       f"or pass --txt_file PATH (the file: {SHAKESPEARE_URL})") from None
    if digest != sha256:
        raise DL1Error(f"the {name} corpus shipped with dl1 is damaged ({path}: SHA-256 {digest[:12]}..., expected "
                       f"{sha256[:12]}...); reinstall dl1")
    return path


def read_text(path: str | Path, encoding: str = "auto") -> tuple[str, str]:
    """The text of ``path`` and the encoding used.

    ``auto``: UTF-8 (a leading byte-order mark is dropped); if the bytes are not valid UTF-8, Latin-1 (which decodes
    any byte) with a printed note.  Any other value is passed to Python's codec; a decode error is one clear line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DL1Error(f"cannot read {path}: {exc.strerror or exc}") from None
    if encoding == "auto":
        try:
            return raw.decode("utf-8-sig"), "utf-8"
        except UnicodeDecodeError as exc:
            print(f"note: {path} is not valid UTF-8 (byte {exc.start}); decoding it as Latin-1 "
                  "(pass --encoding to choose another)", flush=True)
            return raw.decode("latin-1"), "latin-1"
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise DL1Error(f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        raise DL1Error(f"{path} is not valid {encoding} (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                       "try --encoding auto or latin-1") from None
    return text.removeprefix("\ufeff"), encoding


class CharTokenizer:
    """Characters <-> ids over a fixed vocabulary (the course's ``string_to_index`` / ``index_to_string``)."""

    def __init__(self, chars: list[str] | str):
        self.chars = sorted(set(chars))
        if not self.chars:
            raise DL1Error("cannot build a vocabulary from an empty text")
        self.string_to_index = {c: i for i, c in enumerate(self.chars)}
        self.index_to_string = dict(enumerate(self.chars))
        self._lut = np.array(self.chars, dtype=object)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` outside the vocabulary."""
        return sorted(set(text) - set(self.string_to_index))

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; characters outside the vocabulary are one clear error."""
        missing = self.unknown(text)
        if missing:
            shown = "".join(missing[:20])
            raise DL1Error(f"text contains {len(missing)} character(s) not in the vocabulary: {shown!r}")
        return [self.string_to_index[c] for c in text]

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of a long text as an int64 array (vectorised through the code points)."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        ids = np.searchsorted(codes, points)
        if ids.size and (ids.max() >= len(codes) or (codes[np.minimum(ids, len(codes) - 1)] != points).any()):
            self.encode(text)  # raises with the offending characters
        return ids.astype(np.int64)

    def decode(self, ids: Any) -> str:
        if hasattr(ids, "tolist"):  # a tensor or an array
            ids = ids.tolist()
        return "".join(self.index_to_string[int(i)] for i in ids)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "char", "chars": list(self.chars)}

    @classmethod
    def from_state_dict(cls, state: Any) -> CharTokenizer:
        """The tokenizer saved by :meth:`state_dict`; anything else (not a list of distinct single characters) is
        one-line :class:`DL1Error`."""
        chars = state.get("chars") if isinstance(state, dict) else None
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars) \
                or len(set(chars)) != len(chars):
            raise DL1Error("the stored tokenizer is not a list of distinct single characters")
        return cls(chars)


@dataclass
class CharCorpus:
    """An encoded text with a contiguous train/validation split and random-window batches."""

    tokenizer: CharTokenizer
    train: torch.Tensor  # (N_train,) int64
    val: torch.Tensor  # (N_val,) int64
    path: str = ""
    encoding: str = "utf-8"

    @classmethod
    def from_file(cls, path: str | Path, val_fraction: float = 0.1, encoding: str = "auto",
                  block_size: int | None = None) -> CharCorpus:
        text, used = read_text(path, encoding)
        return cls.from_text(text, val_fraction, block_size, path=str(path), encoding=used)

    @classmethod
    def from_text(cls, text: str, val_fraction: float = 0.1, block_size: int | None = None, path: str = "",
                  encoding: str = "utf-8") -> CharCorpus:
        if not 0.0 <= val_fraction < 1.0:
            raise DL1Error(f"val_fraction must be in [0, 1), got {val_fraction}")
        import torch

        tokenizer = CharTokenizer.from_text(text)
        data = torch.from_numpy(tokenizer.encode_array(text))
        n_train = int(len(data) * (1.0 - val_fraction))
        corpus = cls(tokenizer, data[:n_train], data[n_train:], path, encoding)
        if block_size is not None:
            corpus.check(block_size)
        return corpus

    def check(self, block_size: int) -> None:
        """A clear error when the training split is shorter than one window of ``block_size + 1`` characters, or
        a non-empty validation split has no (character, next character) pair."""
        if len(self.train) < block_size + 1:
            raise DL1Error(f"the train split of {self.path or 'the text'} has {len(self.train)} characters, fewer than "
                           f"block_size + 1 = {block_size + 1}; use a longer text or a smaller --block_size")
        if len(self.val) == 1:
            raise DL1Error(f"the validation split of {self.path or 'the text'} has 1 character; use a larger "
                           "--val_fraction (or 0 for none)")

    def describe(self) -> dict[str, Any]:
        """The corpus in a run's summary: file, encoding, vocabulary and split sizes."""
        return {"txt_file": self.path, "encoding": self.encoding, "vocab_size": self.tokenizer.vocab_size,
                "train_chars": len(self.train), "val_chars": len(self.val), "synthetic": self.path == SYNTHETIC}

    def to(self, device: Any) -> CharCorpus:
        """Move both splits to ``device`` (batches are then cut on the device; the generator stays on the CPU)."""
        self.train, self.val = self.train.to(device), self.val.to(device)
        return self

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "val": self.val}[name]

    def get_batch(self, split: str, batch_size: int, block_size: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` random windows of the split: x (B, T) and the next characters y (B, T)."""
        import torch

        start = torch.randint(len(self.split(split)) - block_size, (batch_size,), generator=generator)  # (B,)
        return self.windows(split, start, block_size)

    def windows(self, split: str, start: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows of the split beginning at ``start`` (B,): x (B, T) and the next characters y (B, T)."""
        import torch

        data = self.split(split)
        idx = start[:, None] + torch.arange(block_size + 1)  # (B, T+1)
        window = data[idx.to(data.device)]  # (B, T+1)
        return window[:, :-1], window[:, 1:]

    def _eval_extent(self, split: str, block_size: int, max_windows: int | None) -> tuple[int, int]:
        """(pairs scored, full windows) of :meth:`eval_windows`."""
        n = max(len(self.split(split)) - 1, 0)  # number of (input, next) pairs
        full = n // block_size
        if max_windows is not None and max_windows <= full:
            full, n = max_windows, max_windows * block_size
        return n, full

    def count_eval_windows(self, split: str, block_size: int, max_windows: int | None = None) -> int:
        """How many windows :meth:`eval_windows` has (the shorter tail window included)."""
        n, full = self._eval_extent(split, block_size, max_windows)
        return full + (n > full * block_size)

    def eval_windows(self, split: str, block_size: int, batch_size: int, max_windows: int | None = None,
                     part: slice | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole split (or its first ``max_windows`` windows) as consecutive non-overlapping windows, every
        character predicted once, batched; ``part`` (a slice of the :meth:`count_eval_windows` windows, e.g. one
        rank's share) keeps only those windows.

        Yields (x, y) of shape (b, T); the tail that does not fill a window becomes one shorter window.
        """
        data = self.split(split)
        n, full = self._eval_extent(split, block_size, max_windows)
        first, stop, _ = (part or slice(None)).indices(full + (n > full * block_size))
        xs = data[:full * block_size].view(full, block_size)  # (W, T)
        ys = data[1:full * block_size + 1].view(full, block_size)  # (W, T)
        for i in range(first, min(stop, full), batch_size):
            yield xs[i:min(i + batch_size, stop)], ys[i:min(i + batch_size, stop)]
        if n > full * block_size and first <= full < stop:
            yield data[None, full * block_size:n], data[None, full * block_size + 1:n + 1]


def load_corpus(name_or_path: str, data_dir: str | Path | None = None, val_fraction: float = 0.1,
                encoding: str = "auto", block_size: int | None = None) -> CharCorpus:
    """A text file, a named corpus (``shakespeare``) or ``synthetic`` (smoke runs), encoded and split."""
    if name_or_path == SYNTHETIC:
        return CharCorpus.from_text(synthetic_text(), val_fraction, block_size, path=SYNTHETIC)
    return CharCorpus.from_file(resolve_text_file(name_or_path, data_dir), val_fraction, encoding, block_size)


def random_batches(corpus: CharCorpus, n_batches: int, batch_size: int, block_size: int, seed: int, *,
                   rank: int = 0, world_size: int = 1) -> _Batches:
    """``n_batches`` batches of ``batch_size`` random training windows drawn from a generator seeded with ``seed``
    (a resumed run draws the same ones).

    Data parallel (``world_size`` > 1), ``batch_size`` is the global batch: every rank draws the step's whole batch
    of window starts from the one seeded stream, exactly as one process draws it, and keeps rows
    ``[rank·b, (rank+1)·b)``, ``b = batch_size / world_size``.  So each rank trains on windows of its own (the
    per-rank stream the ranks need), the ranks' windows together are exactly the single process's batch (N ranks
    compute what one process computes, up to float summation order, when nothing else is random), and resume stays
    exact.  Drawing B start offsets costs nothing beside a training step; only the rank's own windows are cut.
    """
    if batch_size % world_size:
        raise DL1Error(f"a global batch of {batch_size} windows cannot be shared by {world_size} ranks")
    return _Batches(corpus, n_batches, batch_size, block_size, seed, rank, world_size)


class _Batches:
    def __init__(self, corpus: CharCorpus, n: int, batch_size: int, block_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        self.corpus, self.n, self.batch_size, self.block_size = corpus, n, batch_size, block_size
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        g = torch.Generator().manual_seed(self.seed)
        high = len(self.corpus.train) - self.block_size
        b = self.batch_size // self.world_size
        for _ in range(self.n):
            start = torch.randint(high, (self.batch_size,), generator=g)  # (B,) the whole step's draw
            yield self.corpus.windows("train", start[self.rank * b:(self.rank + 1) * b], self.block_size)  # (b, T)
