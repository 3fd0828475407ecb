"""Graph neural networks in NumPy: runnable answers to the course's GNN questions (Q3.1–Q3.5).

Conventions: a graph with ``N`` nodes has a symmetric 0/1 adjacency matrix ``A`` (N, N) without self-loops; node
features are the rows of ``H`` (N, d); a weight ``W`` has shape (d_out, d_in), so a linear map of every node is
``H @ W.T``.  The course numbers nodes from 1; arrays index them from 0.

* Q3.1 — :func:`adjacency_matrix`, :func:`walk_counts` (``Aⁿ``) and :func:`count_walks_brute_force` (enumeration).
* Q3.2/Q3.3 — :func:`gcn_layer_index` (a loop over neighbours) and :func:`gcn_layer_matrix`
  (``σ(D⁻¹ A H Wᵀ + H Bᵀ)``); :func:`max_aggregation_layer`, which has no matrix form
  (:func:`linearity_counterexample`, :func:`fit_aggregation_matrix`).
* Q3.4 — :class:`GCN` is permutation-equivariant, :class:`GraphMLP` on the flattened ``[A, X]`` is not.
* Q3.5 — :func:`self_attention` is a GNN on the complete graph (:func:`attention_message_passing`); it is
  permutation-equivariant until :func:`sinusoidal_positional_encoding` is added.
* Drawing — :func:`circular_layout` and :func:`draw_graph` (takes a matplotlib ``Axes``; this module never imports
  matplotlib).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

TOL = 1e-9  # a "max abs difference" below this is float rounding: the two sides of a claim are equal

# ---------------------------------------------------------------------------------------------------------------------
# Q3.1: the course's graphs (Figure 4), adjacency matrices and walks
# ---------------------------------------------------------------------------------------------------------------------

STAR_EDGES = [(1, v) for v in range(2, 8)]                                  # node 1 joined to 2..7
WHEEL_EDGES = STAR_EDGES + [(v, v + 1) for v in range(2, 7)] + [(7, 2)]     # star + rim 2-3-4-5-6-7-2
CYCLE6_EDGES = [(v, v + 1) for v in range(1, 6)] + [(6, 1)]                 # 1-2-3-4-5-6-1

COURSE_GRAPHS = {  # name -> (number of nodes, 1-based edge list, hub nodes drawn in the centre)
    "star": (7, STAR_EDGES, (1,)),
    "wheel": (7, WHEEL_EDGES, (1,)),
    "cycle6": (6, CYCLE6_EDGES, ()),
}


def adjacency_matrix(edges: Sequence[tuple[int, int]], n_nodes: int, one_based: bool = True) -> np.ndarray:
    """Symmetric 0/1 adjacency matrix (N, N) of an undirected simple graph given by its edge list."""
    A = np.zeros((n_nodes, n_nodes), dtype=np.int64)
    offset = 1 if one_based else 0
    for u, v in edges:
        i, j = u - offset, v - offset
        if not (0 <= i < n_nodes and 0 <= j < n_nodes):
            raise ValueError(f"edge ({u}, {v}) names a node outside 1..{n_nodes}" if one_based
                             else f"edge ({u}, {v}) names a node outside 0..{n_nodes - 1}")
        if i == j:
            raise ValueError(f"edge ({u}, {v}) is a self-loop; the course's graphs have none")
        A[i, j] = A[j, i] = 1
    return A


def course_graph(name: str) -> np.ndarray:
    """Adjacency matrix of one of the course's graphs: ``star``, ``wheel`` or ``cycle6``."""
    if name not in COURSE_GRAPHS:
        raise ValueError(f"unknown graph {name!r}; known: {', '.join(COURSE_GRAPHS)}")
    n, edges, _ = COURSE_GRAPHS[name]
    return adjacency_matrix(edges, n)


def edges_of(A: np.ndarray, one_based: bool = True) -> list[tuple[int, int]]:
    """The undirected edge list (u < v) of an adjacency matrix."""
    offset = 1 if one_based else 0
    return [(int(u) + offset, int(v) + offset) for u, v in zip(*np.nonzero(np.triu(A, 1)))]


def neighbours(A: np.ndarray) -> list[list[int]]:
    """𝒩(v) for every node v (0-based), from the adjacency matrix."""
    return [list(np.flatnonzero(row)) for row in A]


def walk_counts(A: np.ndarray, length: int) -> np.ndarray:
    """``Aⁿ``: entry (u, v) is the number of walks of ``length`` edges from u to v (Q3.1c)."""
    return np.linalg.matrix_power(np.asarray(A, dtype=np.int64), length)


def enumerate_walks(A: np.ndarray, start: int, length: int) -> Iterator[tuple[int, ...]]:
    """Every walk (v0=start, v1, ..., v_length) that follows edges, by depth-first search (0-based nodes)."""
    adj = neighbours(A)
    stack: list[tuple[int, ...]] = [(start,)]
    while stack:
        walk = stack.pop()
        if len(walk) == length + 1:
            yield walk
            continue
        stack.extend(walk + (u,) for u in adj[walk[-1]])


def total_walks(A: np.ndarray, length: int) -> float:
    """``1ᵀ Aⁿ 1``, the number of walks of ``length`` edges in the whole graph, in float64 (never overflows)."""
    A, v = np.asarray(A, dtype=np.float64), np.ones(len(A))
    for _ in range(length):
        v = A @ v                                                               # v_u = walks of this length from u
    return float(v.sum())


def count_walks_brute_force(A: np.ndarray, length: int) -> np.ndarray:
    """Number of walks of ``length`` edges between every pair, counted one walk at a time (no matrix products)."""
    n = len(A)
    counts = np.zeros((n, n), dtype=np.int64)
    for start in range(n):
        for walk in enumerate_walks(A, start, length):
            counts[start, walk[-1]] += 1
    return counts


def cycle_square_formula(n: int) -> np.ndarray:
    """The course's closed form of ``A²`` for the n-cycle: 2 on the diagonal, 1 where v = u ± 2 (mod n), else 0."""
    u, v = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    out = np.where(u == v, 2, 0) + ((v - u) % n == 2) + ((u - v) % n == 2)
    return out.astype(np.int64)


def random_graph(n_nodes: int, edge_prob: float, rng: np.random.Generator) -> np.ndarray:
    """Erdős–Rényi G(n, p) adjacency matrix (symmetric, no self-loops; isolated nodes are possible)."""
    upper = np.triu(rng.random((n_nodes, n_nodes)) < edge_prob, 1)
    return (upper | upper.T).astype(np.int64)


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
# Q3.4: permutations; a GCN is equivariant, an MLP on the flattened [A, X] is not
# ---------------------------------------------------------------------------------------------------------------------

def permutation_matrix(perm: Sequence[int]) -> np.ndarray:
    """P with ``(P X)[i] = X[perm[i]]``: new node i is old node perm[i]."""
    n = len(perm)
    return np.eye(n)[np.asarray(perm)]


def random_permutation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of 0..n-1 that is not the identity (for n >= 2), so a relabelling really happens."""
    while True:
        perm = rng.permutation(n)
        if n < 2 or (perm != np.arange(n)).any():
            return perm


def permute_graph(A: np.ndarray, X: np.ndarray, perm: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Relabel the nodes: ``(P A Pᵀ, P X)``."""
    perm = np.asarray(perm)
    return A[np.ix_(perm, perm)], X[perm]


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


def equivariance_gap(model: Callable[[np.ndarray, np.ndarray], np.ndarray], A: np.ndarray, X: np.ndarray,
                     perm: Sequence[int]) -> float:
    """``max |f(PAPᵀ, PX) - P f(A, X)|``: 0 for a permutation-equivariant model."""
    Ap, Xp = permute_graph(A, X, perm)
    return float(np.abs(model(Ap, Xp) - model(A, X)[np.asarray(perm)]).max())


# ---------------------------------------------------------------------------------------------------------------------
# Q3.5: self-attention is a GNN on the complete graph; positional encodings break the symmetry
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


def sinusoidal_positional_encoding(n_positions: int, d_model: int) -> np.ndarray:
    """The transformer's sinusoidal encodings (n_positions, d_model): sin on even, cos on odd dimensions."""
    pos = np.arange(n_positions)[:, None]                                 # (N, 1)
    freq = 1.0 / 10000 ** (np.arange(0, d_model, 2) / d_model)            # (ceil(d/2),)
    pe = np.zeros((n_positions, d_model))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq[: d_model // 2])
    return pe


def attention_equivariance_gap(attention: SelfAttention, X: np.ndarray, perm: Sequence[int],
                               positional: np.ndarray | None = None) -> float:
    """``max |attn(PX + PE) - P attn(X + PE)|``: the encodings stay with the positions while tokens move."""
    perm = np.asarray(perm)
    pe = 0.0 if positional is None else positional
    return float(np.abs(attention(X[perm] + pe) - attention(X + pe)[perm]).max())


# ---------------------------------------------------------------------------------------------------------------------
# Drawing (matplotlib Axes passed in; this module does not import matplotlib)
# ---------------------------------------------------------------------------------------------------------------------

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
