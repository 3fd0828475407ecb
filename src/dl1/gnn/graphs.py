"""The course's graphs and what is computed from the adjacency matrix alone (Q3.1): edge lists, walks, random graphs,
relabelling the nodes (Q3.4).

A graph with ``N`` nodes has a symmetric 0/1 adjacency matrix ``A`` (N, N) without self-loops.  The course numbers
nodes from 1; arrays index them from 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

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
# Q3.4: relabelling the nodes
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
