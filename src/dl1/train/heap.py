"""Keep freed memory in the process for the next training step (glibc's allocator), instead of handing it back.

A CPU training step allocates and frees the same tensors every step.  glibc serves a block above its mmap threshold
(128 KiB at start, raised as such blocks are freed, up to 32 MiB) with a fresh ``mmap``, and gives the top of its heap
back to the system once more than the trim threshold lies free there: a step then faults its tensors' pages in again,
the kernel zeroing every page.  :func:`keep_freed_memory` fixes the mmap threshold at 32 MiB (the most glibc's own rule
reaches) and the trim threshold at 256 MiB with ``mallopt``, so that freed memory is reused.  Measured on the 2-core
AMD EPYC Zen 4 (default 2 threads, one epoch on Fashion-MNIST, whole ``dl1 run``): the VAE spent a fifth of its CPU
time in the kernel (15.5 of 79 s), the AAE a thirteenth; figures in ``docs/performance.md`` ("Memory allocator").

It is the training engine's, for CPU runs; results are unchanged (only where the memory comes from), the peak
memory a little higher.  It does nothing where the C library is not glibc, where another allocator is preloaded
(jemalloc, tcmalloc, mimalloc: their own rules), or where glibc's own settings are given (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or ``GLIBC_TUNABLES``, even empty): those win, and are the way to
turn it off.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TRIM_THRESHOLD = 256 << 20  # free memory above this at the heap's top goes back to the system
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
_DONE: dict[str, str] = {}  # what the first call found: later calls return it


def keep_freed_memory() -> str:
    """Set glibc's two thresholds, once per process; returns "set", or why nothing was set."""
    if not _DONE:
        _DONE["result"] = _set()
    return _DONE["result"]


def _set() -> str:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    if any(name in os.environ.get("LD_PRELOAD", "") for name in OTHER_ALLOCATORS):
        return "another allocator is preloaded"
    given = [k for k in USER_SETTINGS if k in os.environ]
    if given:
        return f"left to {given[0]}"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "no mallopt"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "mallopt refused"
    return "set"
