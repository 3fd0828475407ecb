"""The GNN layers and models in NumPy (Q3.2–Q3.5): graph convolution in index and matrix form, mean and max
aggregation, a two-layer :class:`GCN`, an MLP on the flattened graph (:class:`GraphMLP`), single-head
:class:`SelfAttention` and the sinusoidal positional encodings.

Node features are the rows of ``H`` (N, d); a weight ``W`` has shape (d_out, d_in), so a linear map of every node is
``H @ W.T``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dl1.gnn.graphs import neighbours

# ---------------------------------------------------------------------------------------------------------------------
# Q3.2/Q3.3: the graph-convolution layer in index form and matrix form; max aggregation
# ---------------------------------------------------------------------------------------------------------------------

def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def identity(x: np.ndarray) -> np.ndarray:
    return x


def gcn_layer_index(A: np.ndarray, H: np.ndarray, W: np.ndarray, B: np.ndarray,
                    activation: Callable[[np.ndarray], np.ndarray] = relu) -> np.ndarray:
    """``h_v' = σ(Σ_{u∈𝒩(v)} W h_u / |𝒩(v)| + B h_v)``, one node and one neighbour at a time.

    Read as an MPNN (Q3.2b): message ``W h_u / |𝒩(v)|``, sum aggregation, update ``σ(m_v + B h_v)``.  A node without
    neighbours receives the empty sum 0.
    """
    out = np.zeros((len(H), W.shape[0]))                       # (N, d_out)
    for v, nbrs in enumerate(neighbours(A)):
        message = np.zeros(W.shape[0])
        for u in nbrs:
            message += W @ H[u] / len(nbrs)
        out[v] = activation(message + B @ H[v])
    return out


def degree_inverse(A: np.ndarray) -> np.ndarray:
    """``D⁻¹`` (N, N), with 1/0 taken as 0 for isolated nodes (their row of A is zero anyway)."""
    deg = A.sum(axis=1).astype(float)
    return np.diag(np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0))


def gcn_layer_matrix(A: np.ndarray, H: np.ndarray, W: np.ndarray, B: np.ndarray,
                     activation: Callable[[np.ndarray], np.ndarray] = relu) -> np.ndarray:
    """``H' = σ(D⁻¹ A H Wᵀ + H Bᵀ)`` (Q3.3a); rows are nodes, (N, d_in) -> (N, d_out)."""
    return activation(degree_inverse(A) @ A @ H @ W.T + H @ B.T)


def mean_aggregate(A: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Mean of the neighbours' features, ``D⁻¹ A H`` (N, d): a matrix product."""
    return degree_inverse(A) @ A @ H


def max_aggregate(A: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Element-wise max of the neighbours' features (N, d); 0 for a node without neighbours."""
    out = np.zeros_like(H, dtype=float)
    for v, nbrs in enumerate(neighbours(A)):
        if nbrs:
            out[v] = H[nbrs].max(axis=0)
    return out


def max_aggregation_layer(A: np.ndarray, H: np.ndarray, W: np.ndarray, B: np.ndarray,
                          activation: Callable[[np.ndarray], np.ndarray] = relu) -> np.ndarray:
    """``h_v' = σ(max_{u∈𝒩(v)} W h_u + B h_v)`` with an element-wise max: it has no matrix form (Q3.3c)."""
    return activation(max_aggregate(A, H @ W.T) + H @ B.T)


# ---------------------------------------------------------------------------------------------------------------------
# Q3.4: a GCN does not depend on the number of nodes, an MLP on the flattened [A, X] does
# ---------------------------------------------------------------------------------------------------------------------

def _init(rng: np.random.Generator, d_out: int, d_in: int) -> np.ndarray:
    return rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)


class GCN:
    """Two graph-convolution layers (mean aggregation, ReLU between) and a sum readout for a graph-level output.

    Its parameters do not depend on the number of nodes: ``2 d_in d_hidden + 2 d_hidden d_out``.
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, rng: np.random.Generator):
        self.W1, self.B1 = _init(rng, d_hidden, d_in), _init(rng, d_hidden, d_in)
        self.W2, self.B2 = _init(rng, d_out, d_hidden), _init(rng, d_out, d_hidden)

    def __call__(self, A: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Node outputs (N, d_out) for any N."""
        H = gcn_layer_matrix(A, X, self.W1, self.B1, relu)                 # (N, d_hidden)
        return gcn_layer_matrix(A, H, self.W2, self.B2, identity)          # (N, d_out)

    def readout(self, A: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Graph-level output (d_out,): sum over nodes, permutation-invariant."""
        return self(A, X).sum(axis=0)

    @property
    def n_parameters(self) -> int:
        return sum(p.size for p in (self.W1, self.B1, self.W2, self.B2))


class GraphMLP:
    """An MLP on the flattened ``[A, X]`` (N·N + N·d inputs) with N·d_out outputs, one row per node.

    It is tied to one graph size N and ordering: its first layer alone has O(N²) weights.
    """

    def __init__(self, n_nodes: int, d_in: int, d_hidden: int, d_out: int, rng: np.random.Generator):
        self.n_nodes, self.d_in, self.d_out = n_nodes, d_in, d_out
        n_inputs = n_nodes * n_nodes + n_nodes * d_in
        self.W1, self.b1 = _init(rng, d_hidden, n_inputs), np.zeros(d_hidden)
        self.W2, self.b2 = _init(rng, n_nodes * d_out, d_hidden), np.zeros(n_nodes * d_out)

    def __call__(self, A: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Node outputs (N, d_out); raises ValueError for a graph of another size."""
        if A.shape != (self.n_nodes, self.n_nodes) or X.shape != (self.n_nodes, self.d_in):
            raise ValueError(f"this MLP takes graphs of exactly {self.n_nodes} nodes with {self.d_in} features; "
                             f"got A {A.shape}, X {X.shape}")
        z = np.concatenate([A.ravel(), X.ravel()])                         # (N·N + N·d,)
        h = relu(self.W1 @ z + self.b1)                                    # (d_hidden,)
        return (self.W2 @ h + self.b2).reshape(self.n_nodes, self.d_out)   # (N, d_out)

    def readout(self, A: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self(A, X).sum(axis=0)

    @property
    def n_parameters(self) -> int:
        return sum(p.size for p in (self.W1, self.b1, self.W2, self.b2))


def mlp_parameter_count(n_nodes: int, d_in: int, d_hidden: int, d_out: int) -> int:
    """Parameters of :class:`GraphMLP` without building it: grows as O(N²)."""
    n_inputs = n_nodes * n_nodes + n_nodes * d_in
    return n_inputs * d_hidden + d_hidden + d_hidden * n_nodes * d_out + n_nodes * d_out


def gcn_parameter_count(d_in: int, d_hidden: int, d_out: int) -> int:
    """Parameters of :class:`GCN`: independent of the number of nodes."""
    return 2 * d_in * d_hidden + 2 * d_hidden * d_out


# ---------------------------------------------------------------------------------------------------------------------
# Q3.5: self-attention
# ---------------------------------------------------------------------------------------------------------------------

def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class SelfAttention:
    """Single-head self-attention ``softmax(Q Kᵀ / √d) V`` with Q = X W_qᵀ, K = X W_kᵀ, V = X W_vᵀ."""

    def __init__(self, d_model: int, rng: np.random.Generator, d_head: int | None = None):
        d_head = d_head or d_model
        self.Wq, self.Wk, self.Wv = (_init(rng, d_head, d_model) for _ in range(3))

    def weights(self, X: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Attention weights α (N, N), rows sum to 1; ``mask`` (N, N) of 0/1 restricts attention to edges."""
        Q, K = X @ self.Wq.T, X @ self.Wk.T                                # (N, d_head)
        scores = Q @ K.T / np.sqrt(Q.shape[1])                             # (N, N)
        if mask is not None:
            if not (mask > 0).any(axis=1).all():
                raise ValueError("every row of the attention mask needs at least one allowed entry (add self-loops)")
            scores = np.where(mask > 0, scores, -np.inf)
        return softmax(scores, axis=1)

    def __call__(self, X: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return self.weights(X, mask) @ (X @ self.Wv.T)                     # (N, d_head)


def sinusoidal_positional_encoding(n_positions: int, d_model: int) -> np.ndarray:
    """The transformer's sinusoidal encodings (n_positions, d_model): sin on even, cos on odd dimensions."""
    pos = np.arange(n_positions)[:, None]                                 # (N, 1)
    freq = 1.0 / 10000 ** (np.arange(0, d_model, 2) / d_model)            # (ceil(d/2),)
    pe = np.zeros((n_positions, d_model))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq[: d_model // 2])
    return pe
