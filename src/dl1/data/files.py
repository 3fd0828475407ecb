"""NumPy arrays written whole or not at all (through :func:`dl1.run.files.write_atomic`)."""

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
