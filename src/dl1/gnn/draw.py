"""Drawing a graph on a matplotlib ``Axes`` the caller passes in (this module does not import matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def circular_layout(n_nodes: int, centre: Sequence[int] = ()) -> np.ndarray:
    """Positions (N, 2): the ``centre`` nodes (0-based) at the origin, the others evenly on the unit circle."""
    pos = np.zeros((n_nodes, 2))
    rim = [v for v in range(n_nodes) if v not in set(centre)]
    angles = np.pi / 2 - 2 * np.pi * np.arange(len(rim)) / max(len(rim), 1)  # clockwise from the top
    pos[rim] = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return pos


def draw_graph(ax, A: np.ndarray, pos: np.ndarray | None = None, labels: Sequence[str] | None = None,
               weights: np.ndarray | None = None, title: str = "", node_color: str = "#9ecae1",
               edge_color: str = "#444444") -> None:
    """Draw an undirected graph on ``ax``; with ``weights`` (N, N) the edge width and opacity follow the weight.

    Edges are the nonzero entries of ``A`` (or of ``weights`` when given; the weight of {u, v} is the mean of
    w_uv and w_vu, i.e. how much u and v attend to each other).
    """
    n = len(A)
    pos = circular_layout(n) if pos is None else pos
    labels = [str(v + 1) for v in range(n)] if labels is None else labels
    if weights is not None:
        sym = (weights + weights.T) / 2 * (1 - np.eye(n))                  # self-loops are not drawn
        top = sym.max() if sym.max() > 0 else 1.0                            # the strongest edge is drawn widest
        for u, v in zip(*np.nonzero(np.triu(sym, 1))):
            w = sym[u, v] / top
            ax.plot(*pos[[u, v]].T, color=edge_color, lw=0.5 + 5 * w, alpha=0.15 + 0.85 * w, zorder=1,
                    solid_capstyle="round")
    else:
        for u, v in zip(*np.nonzero(np.triu(A, 1))):
            ax.plot(*pos[[u, v]].T, color=edge_color, lw=1.5, zorder=1)
    ax.scatter(pos[:, 0], pos[:, 1], s=420, c=node_color, edgecolors="black", linewidths=1, zorder=2)
    for v in range(n):
        ax.text(pos[v, 0], pos[v, 1], labels[v], ha="center", va="center", fontsize=10, zorder=3)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
