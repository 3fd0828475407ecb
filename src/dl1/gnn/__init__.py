"""Graph neural networks in NumPy: runnable answers to the course's GNN questions (Q3.1–Q3.5).

Conventions: a graph with ``N`` nodes has a symmetric 0/1 adjacency matrix ``A`` (N, N) without self-loops; node
features are the rows of ``H`` (N, d); a weight ``W`` has shape (d_out, d_in), so a linear map of every node is
``H @ W.T``.  The course numbers nodes from 1; arrays index them from 0.

One job per module, every name importable from ``dl1.gnn``:

* ``graphs`` — the course's graphs, adjacency matrices, walks, relabelling.  Q3.1: :func:`adjacency_matrix`,
  :func:`walk_counts` (``Aⁿ``) and :func:`count_walks_brute_force` (enumeration).
* ``layers`` — the computations.  Q3.2/Q3.3: :func:`gcn_layer_index` (a loop over neighbours) and
  :func:`gcn_layer_matrix` (``σ(D⁻¹ A H Wᵀ + H Bᵀ)``); :func:`max_aggregation_layer`; :class:`GCN` and
  :class:`GraphMLP` (Q3.4); :class:`SelfAttention` and :func:`sinusoidal_positional_encoding` (Q3.5).
* ``claims`` — the course's claims made checkable: max aggregation has no matrix form
  (:func:`linearity_counterexample`, :func:`fit_aggregation_matrix`); a GCN is permutation-equivariant, the MLP is
  not (:func:`equivariance_gap`); self-attention is a GNN on the complete graph (:func:`attention_message_passing`),
  equivariant until positional encodings are added (:func:`attention_equivariance_gap`); :data:`TOL`.
* ``draw`` — :func:`circular_layout` and :func:`draw_graph` (takes a matplotlib ``Axes``; nothing here imports
  matplotlib).
"""

from __future__ import annotations

from dl1.gnn.claims import (
    TOL,
    attention_equivariance_gap,
    attention_message_passing,
    equivariance_gap,
    fit_aggregation_matrix,
    linearity_counterexample,
    self_attention,
)
from dl1.gnn.draw import circular_layout, draw_graph
from dl1.gnn.graphs import (
    COURSE_GRAPHS,
    CYCLE6_EDGES,
    STAR_EDGES,
    WHEEL_EDGES,
    adjacency_matrix,
    count_walks_brute_force,
    course_graph,
    cycle_square_formula,
    edges_of,
    enumerate_walks,
    neighbours,
    permutation_matrix,
    permute_graph,
    random_graph,
    random_permutation,
    total_walks,
    walk_counts,
)
from dl1.gnn.layers import (
    GCN,
    GraphMLP,
    SelfAttention,
    degree_inverse,
    gcn_layer_index,
    gcn_layer_matrix,
    gcn_parameter_count,
    identity,
    max_aggregate,
    max_aggregation_layer,
    mean_aggregate,
    mlp_parameter_count,
    relu,
    sinusoidal_positional_encoding,
    softmax,
)

__all__ = [
    "COURSE_GRAPHS", "CYCLE6_EDGES", "GCN", "STAR_EDGES", "TOL", "WHEEL_EDGES", "GraphMLP", "SelfAttention",
    "adjacency_matrix", "attention_equivariance_gap", "attention_message_passing", "circular_layout",
    "count_walks_brute_force", "course_graph", "cycle_square_formula", "degree_inverse", "draw_graph", "edges_of",
    "enumerate_walks", "equivariance_gap", "fit_aggregation_matrix", "gcn_layer_index", "gcn_layer_matrix",
    "gcn_parameter_count", "identity", "linearity_counterexample", "max_aggregate", "max_aggregation_layer",
    "mean_aggregate", "mlp_parameter_count", "neighbours", "permutation_matrix", "permute_graph", "random_graph",
    "random_permutation", "relu", "self_attention", "sinusoidal_positional_encoding", "softmax", "total_walks",
    "walk_counts",
]
