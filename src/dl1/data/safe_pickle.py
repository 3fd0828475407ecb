"""Pickled dataset files read without running code: only plain containers and NumPy arrays are admitted.

``pickle.load`` calls whatever function a file names, so a dataset file could run any command while it is read.
:func:`load_pickle` reads with an unpickler that resolves exactly the names the real files use and refuses every
other one before it is looked up:

* dicts, lists, tuples, strings, bytes, ints, floats, booleans and ``None`` (built into the pickle format, no name);
* NumPy arrays, as NumPy pickles them: ``numpy.core.multiarray._reconstruct`` (NumPy 1 and the Python 2 originals of
  CIFAR) or ``numpy._core.multiarray._reconstruct`` (NumPy 2), ``numpy.ndarray``, and ``numpy.dtype`` for numeric
  dtypes only (booleans, integers, floats);
* ``_codecs.encode(text, "latin1")``, which is how Python 3 writes ``bytes`` at pickle protocol 2.

Anything else (``os.system``, ``builtins.eval``, any class) is refused with one line naming it.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1
    from numpy.core.multiarray import _reconstruct

from dl1.errors import DL1Error, first_line


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a function or class that dataset files never hold."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` restricted to the one use protocol 2 makes of it: ``bytes`` stored as latin-1 text."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise RefusedGlobal(f"_codecs.encode with {encoding!r}")
    return codecs.encode(text, "latin1")


def _numeric_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    """``numpy.dtype`` restricted to booleans, integers and floats (no object or structured dtypes)."""
    if not isinstance(spec, str):
        raise RefusedGlobal(f"numpy.dtype({type(spec).__name__})")
    dtype = np.dtype(spec, bool(align), bool(copy))
    if dtype.kind not in "biuf":
        raise RefusedGlobal(f"numpy.dtype({spec!r})")
    return dtype


ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def load_pickle(path: str | Path, encoding: str = "latin1") -> Any:
    """The object pickled in ``path`` if it holds only plain containers and numeric NumPy arrays; one-line
    :class:`DL1Error` otherwise (a refused name, or a truncated or corrupt file)."""
    try:
        with open(path, "rb") as fh:
            return _DataUnpickler(fh, encoding=encoding).load()
    except RefusedGlobal as exc:
        raise DL1Error(f"refused to read {path}: it calls {exc}, which a dataset file never holds (reading it could "
                       f"run code); replace it with the original file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            MemoryError, UnicodeError, OSError) as exc:
        raise DL1Error(f"cannot read {path}: {type(exc).__name__}: {first_line(exc)} (truncated or corrupt file? "
                       f"delete it and fetch it again)") from None

