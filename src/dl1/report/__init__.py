"""Figures and reports computed from run folders.

Figures are ``matplotlib.figure.Figure`` objects drawn without pyplot, so dl1 never switches the global matplotlib
backend (a notebook user's inline backend stays as it is) and needs no display."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.0, 4.0), squeeze: bool = True,
               **subplot_kw: Any) -> tuple[Any, Any]:
    """A ``(Figure, axes)`` pair like ``plt.subplots``, built on ``matplotlib.figure.Figure`` (no pyplot, no
    global backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)
    return fig, axes


def save_figure(fig: Any, path: str | Path, dpi: int = 110, root: str | Path | None = None) -> Path:
    """Write ``fig`` to ``path`` (creating its folder) atomically, never through a symbolic link at ``path`` or at a
    folder below ``root`` (default: the folder above the figure's, ``RUN`` of ``RUN/figures/x.png``); returns the
    path.  A pyplot figure is also closed."""
    from dl1.run.files import make_folder, near_root, write_file

    path = Path(path)
    root = near_root(path) if root is None else Path(root)
    make_folder(path.parent, root if root is not None and path.parent != root else None)
    write_file(path, lambda fh: fig.savefig(fh, dpi=dpi, format=path.suffix[1:].lower() or "png"), root)
    if "matplotlib.pyplot" in sys.modules:  # a figure made with pyplot by a caller: release it
        sys.modules["matplotlib.pyplot"].close(fig)
    return path
