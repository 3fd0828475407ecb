"""NumPy arrays written whole or not at all (through :func:`dl1.run.files.write_atomic`), and read back only after
every member's header is checked against the file (:func:`read_npz`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dl1.errors import DL1Error, first_line
from dl1.run.files import write_atomic


def save_npz(path: Path, **arrays: Any) -> Path:
    """``np.savez`` of ``arrays`` to ``path`` atomically; a failed write (a full disk) keeps the previous file and
    raises one-line :class:`DL1Error`."""
    try:
        write_atomic(path, lambda fh: np.savez(fh, **arrays))
    except OSError as exc:
        raise DL1Error(f"cannot write {path} (the previous file is kept): {first_line(exc)}") from None
    return path


DEFLATE_MAX_RATIO = 1032  # the most a deflate stream expands (zlib's technical details: 1032:1)


def read_npz(path: str | Path, what: str = "snapshot") -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, with every member checked before anything is read into memory: an ``.npy``
    array of plain numbers (``allow_pickle=False``) whose header's shape and dtype take exactly the member's size,
    a size its compressed bytes can hold (deflate expands at most :data:`DEFLATE_MAX_RATIO` times) inside the file.
    A file that declares a 745 GiB array in a few bytes, or a cut or corrupt one, is one-line :class:`DL1Error`."""
    import zipfile
    import zlib

    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_npy_member(archive, info, size)
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError, NotImplementedError, zipfile.BadZipFile, zlib.error,
            MemoryError) as exc:
        raise DL1Error(f"{path}: not a readable {what} ({first_line(exc)})") from None


def _check_npy_member(archive, info, file_size: int) -> None:
    """Raise ValueError unless zip member ``info`` is an array whose declared size is what it holds."""
    import zipfile

    name = info.filename
    if not name.endswith(".npy"):
        raise ValueError(f"{name} is not an array (.npy)")
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO
    if info.compress_size > file_size or info.file_size > info.compress_size * ratio + 1024:
        raise ValueError(f"{name} declares {_size(info.file_size)}, more than its {_size(info.compress_size)} of "
                         f"compressed data can hold")
    with archive.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"{name}: .npy format version {version} is not one numpy writes for plain arrays")
        header = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"{name} holds Python objects (refused: loading them could run code)")
    declared = dtype.itemsize
    for n in shape:
        declared *= int(n)
    if declared != info.file_size - header:
        raise ValueError(f"{name} declares an array of shape {tuple(shape)} {dtype} ({_size(declared)}) but holds "
                         f"{_size(info.file_size - header)}")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"
