"""The course's GNN claims made checkable (Q3.3–Q3.5): each function measures one side of a claim against the other.

* Q3.3 — max aggregation has no matrix form: :func:`linearity_counterexample`, :func:`fit_aggregation_matrix`;
* Q3.4 — :func:`equivariance_gap` is 0 for a permutation-equivariant model (a GCN), not for an MLP;
* Q3.5 — self-attention is message passing on the complete graph (:func:`attention_message_passing`), and
  permutation-equivariant until positional encodings are added (:func:`attention_equivariance_gap`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dl1.gnn.graphs import neighbours, permute_graph
from dl1.gnn.layers import SelfAttention, max_aggregate

TOL = 1e-9  # a "max abs difference" below this is float rounding: the two sides of a claim are equal


# ---------------------------------------------------------------------------------------------------------------------
# Q3.3: max aggregation is not linear
# ---------------------------------------------------------------------------------------------------------------------

def linearity_counterexample(A: np.ndarray) -> dict | None:
    """An explicit pair x, y with ``max_agg(x + y) ≠ max_agg(x) + max_agg(y)`` on graph ``A`` (one feature).

    Any matrix M satisfies ``M(x + y) = Mx + My``, so no M reproduces max aggregation on a graph where some node v has
    two neighbours u1, u2: with x = e_{u1}, y = e_{u2}, the max at v is 1, 1 and 1 (not 1 + 1).  Returns None when
    every node has at most one neighbour (then the max *is* linear: it copies that neighbour).
    """
    for v, nbrs in enumerate(neighbours(A)):
        if len(nbrs) >= 2:
            n = len(A)
            x, y = np.eye(n)[nbrs[0]], np.eye(n)[nbrs[1]]
            fx, fy = max_aggregate(A, x[:, None])[:, 0], max_aggregate(A, y[:, None])[:, 0]
            fxy = max_aggregate(A, (x + y)[:, None])[:, 0]
            return {"node": v, "u1": int(nbrs[0]), "u2": int(nbrs[1]), "x": x, "y": y,
                    "f(x)": fx, "f(y)": fy, "f(x+y)": fxy, "f(x)+f(y)": fx + fy,
                    "gap_at_node": float(fx[v] + fy[v] - fxy[v])}
    return None


def fit_aggregation_matrix(aggregate: Callable[[np.ndarray, np.ndarray], np.ndarray], A: np.ndarray,
                           n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Least-squares matrix M (N, N) with ``aggregate(A, X) ≈ M X`` over random X (N, n_samples).

    Returns ``(M, relative residual ||MX - f(X)|| / ||f(X)||)``.  Mean aggregation is fitted exactly (M = D⁻¹A, residual
    ~1e-15); for max aggregation even the best matrix leaves a large residual: no matrix form exists.
    """
    X = rng.standard_normal((len(A), n_samples))                # each column is one scalar feature over the nodes
    Y = aggregate(A, X)                                         # (N, n_samples)
    Mt, *_ = np.linalg.lstsq(X.T, Y.T, rcond=None)              # solves X^T M^T = Y^T
    M = Mt.T
    residual = np.linalg.norm(M @ X - Y) / max(np.linalg.norm(Y), 1e-300)
    return M, float(residual)


# ---------------------------------------------------------------------------------------------------------------------
# Q3.4 and Q3.5: equivariance, and attention as message passing
# ---------------------------------------------------------------------------------------------------------------------

def equivariance_gap(model: Callable[[np.ndarray, np.ndarray], np.ndarray], A: np.ndarray, X: np.ndarray,
                     perm: Sequence[int]) -> float:
    """``max |f(PAPᵀ, PX) - P f(A, X)|``: 0 for a permutation-equivariant model."""
    Ap, Xp = permute_graph(A, X, perm)
    return float(np.abs(model(Ap, Xp) - model(A, X)[np.asarray(perm)]).max())


# ---------------------------------------------------------------------------------------------------------------------
def self_attention(X: np.ndarray, attention: SelfAttention) -> tuple[np.ndarray, np.ndarray]:
    """(outputs (N, d_head), weights (N, N)) of ``attention`` on the tokens X (N, d_model)."""
    return attention(X), attention.weights(X)


def attention_message_passing(X: np.ndarray, attention: SelfAttention) -> np.ndarray:
    """Self-attention written as message passing on the complete graph (self-loops included), node by node.

    Every token v receives from every token u the message ``α_vu W_v x_u`` with the learned, soft edge weight
    ``α_vu = exp(q_v·k_u/√d) / Σ_w exp(q_v·k_w/√d)``; aggregation is a sum.  Equals :class:`SelfAttention` (Q3.5a).
    """
    n = len(X)
    out = np.zeros((n, attention.Wv.shape[0]))
    for v in range(n):
        q = attention.Wq @ X[v]
        scores = np.array([q @ (attention.Wk @ X[u]) for u in range(n)]) / np.sqrt(len(q))
        alpha = np.exp(scores - scores.max())
        alpha /= alpha.sum()
        for u in range(n):                                                 # complete graph: every u is a neighbour
            out[v] += alpha[u] * (attention.Wv @ X[u])
    return out


def attention_equivariance_gap(attention: SelfAttention, X: np.ndarray, perm: Sequence[int],
                               positional: np.ndarray | None = None) -> float:
    """``max |attn(PX + PE) - P attn(X + PE)|``: the encodings stay with the positions while tokens move."""
    perm = np.asarray(perm)
    pe = 0.0 if positional is None else positional
    return float(np.abs(attention(X[perm] + pe) - attention(X + pe)[perm]).max())
