"""IDX files (MNIST, Fashion-MNIST): header checks and gzip decompression that never leaves a partial file.

An IDX file starts with a magic number ``00 00 TT NN`` (``TT`` = element type, ``0x08`` for unsigned bytes; ``NN`` =
number of dimensions), then ``NN`` big-endian 32-bit sizes, then the elements.  MNIST-style datasets hold images
``(N, 28, 28)`` and labels ``(N,)`` in [0, 10), all unsigned bytes.  :func:`check_split` verifies exactly that
before torchvision's reader sees the files, so a wrong magic number, element type, size or label is one line.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from dl1.errors import DL1Error, first_line
from dl1.run.files import write_atomic

UBYTE = 0x08
IMAGE_SIDE = 28
NUM_CLASSES = 10
MAX_DECOMPRESSED = 1 << 30  # an IDX file of MNIST size is 47 MB; more than 1 GiB is not one


def read_header(path: Path, ndim: int) -> tuple[int, ...]:
    """The sizes in ``path``'s header after checking its magic number (unsigned bytes, ``ndim`` dimensions) and
    that the file holds exactly that many elements."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4 + 4 * ndim)
        size = path.stat().st_size
    except OSError as exc:
        raise DL1Error(f"cannot read {path}: {first_line(exc)}") from None
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] != UBYTE or head[3] != ndim:
        found = head[:4].hex(" ") if len(head) >= 4 else f"{len(head)} bytes"
        raise DL1Error(f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s): magic number "
                       f"{found}, expected 00 00 08 {ndim:02x}")
    if len(head) < 4 + 4 * ndim:
        raise DL1Error(f"{path}: IDX header truncated (delete it and fetch it again)")
    dims = struct.unpack(f">{ndim}I", head[4:])
    expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
    if size != expected:
        raise DL1Error(f"{path}: header says {'x'.join(map(str, dims))} bytes of data, the file has "
                       f"{size - 4 - 4 * ndim} (truncated or corrupt; delete it and fetch it again)")
    return dims


def check_split(images: Path, labels: Path) -> None:
    """One split's image and label files: shapes ``(N, 28, 28)`` and ``(N,)``, labels in [0, 10)."""
    n, rows, cols = read_header(images, 3)
    if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
        raise DL1Error(f"{images}: images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    (m,) = read_header(labels, 1)
    if m != n:
        raise DL1Error(f"{labels} holds {m} labels for the {n} images of {images.name}")
    values = np.fromfile(labels, dtype=np.uint8, offset=8)
    if values.size and int(values.max()) >= NUM_CLASSES:
        raise DL1Error(f"{labels}: label {int(values.max())} is outside [0, {NUM_CLASSES})")


def gunzip(gz: Path, plain: Path) -> None:
    """Decompress ``gz`` into ``plain``; a corrupt or truncated archive leaves no partial ``plain`` (see
    :func:`dl1.run.files.write_atomic`)."""
    try:
        with gzip.open(gz, "rb") as src:
            write_atomic(plain, lambda dst: _copy_limited(src, dst, MAX_DECOMPRESSED))
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DL1Error(f"cannot decompress {gz}: {first_line(exc)} (truncated or corrupt; delete it and fetch it "
                       "again)") from None


def _copy_limited(src: BinaryIO, dst: BinaryIO, limit: int) -> None:
    copied = 0
    while chunk := src.read(1 << 20):
        copied += len(chunk)
        if copied > limit:
            raise ValueError(f"more than {limit >> 20} MiB of decompressed data: not an IDX file of this dataset")
        dst.write(chunk)
