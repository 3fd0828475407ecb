"""The runner of ``dl1 run gnn`` (flags and description: :mod:`dl1.experiments.gnn`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dl1 import gnn
from dl1.errors import UsageError, first_line
from dl1.experiments.gnn import Config
from dl1.report.gnn import make_figures
from dl1.run.folder import Run


def check_course_graphs(cfg: Config, run: Run) -> dict[str, Any]:
    """Q3.1: adjacency matrices of the course's graphs, Aⁿ vs brute force, the 6-cycle's A² closed form."""
    out: dict[str, Any] = {}
    for name in gnn.COURSE_GRAPHS:
        A = gnn.course_graph(name)
        lengths = {}
        for n in range(1, cfg.max_walk_length + 1):
            power, brute = gnn.walk_counts(A, n), gnn.count_walks_brute_force(A, n)
            diff = int(np.abs(power - brute).max())
            lengths[n] = {"walks": int(brute.sum()), "max_abs_diff": diff, "agree": diff == 0}
            run.log(n, "walks", {"walks": int(brute.sum()), "max_abs_diff": diff}, graph=name)
        out[name] = {"adjacency": A.tolist(), "edges": gnn.edges_of(A), "symmetric": bool((A == A.T).all()),
                     "lengths": lengths, "all_agree": all(v["agree"] for v in lengths.values())}
    cycle = gnn.course_graph("cycle6")
    out["cycle6"]["A2"] = gnn.walk_counts(cycle, 2).tolist()
    out["cycle6"]["A2_matches_formula"] = bool((gnn.walk_counts(cycle, 2) == gnn.cycle_square_formula(6)).all())
    out["cycle6"]["walks_1_to_3_length_2"] = [[v + 1 for v in w] for w in gnn.enumerate_walks(cycle, 0, 2)
                                              if w[-1] == 2]
    return out


def check_random_graph(cfg: Config, N: int, rng: np.random.Generator) -> dict[str, Any]:
    """Q3.1/Q3.3/Q3.4/Q3.5 on one random graph of N nodes; every value is a max abs difference or a residual."""
    A = nontrivial_graph(N, cfg.edge_prob, rng)
    X = rng.standard_normal((N, cfg.features))                                 # (N, d_in)
    W, B = rng.standard_normal((cfg.hidden, cfg.features)), rng.standard_normal((cfg.hidden, cfg.features))
    row: dict[str, Any] = {"edges": int(A.sum() // 2)}
    row.update(_walk_check(A, cfg))
    row["gcn_index_vs_matrix"] = float(np.abs(gnn.gcn_layer_index(A, X, W, B) - gnn.gcn_layer_matrix(A, X, W, B)).max())
    n_samples = max(200, 10 * N)
    M, row["mean_lstsq_residual"] = gnn.fit_aggregation_matrix(gnn.mean_aggregate, A, n_samples, rng)
    row["mean_lstsq_matrix_vs_DinvA"] = float(np.abs(M - gnn.degree_inverse(A) @ A).max())
    _, row["max_lstsq_residual"] = gnn.fit_aggregation_matrix(gnn.max_aggregate, A, n_samples, rng)
    example = gnn.linearity_counterexample(A)
    row["max_linearity_gap"] = example["gap_at_node"] if example else 0.0
    row.update(_permutation_checks(cfg, A, X, rng))
    return row


def nontrivial_graph(N: int, p: float, rng: np.random.Generator, attempts: int = 1000) -> np.ndarray:
    """A G(N, p) graph in which some node has two neighbours (else max aggregation is trivially linear)."""
    for _ in range(attempts):
        A = gnn.random_graph(N, p, rng)
        if A.sum(axis=1).max() >= 2:
            return A
    raise UsageError(f"--edge_prob {p} gives no node with two neighbours in {attempts} graphs of {N} nodes; raise it")


def _walk_check(A: np.ndarray, cfg: Config) -> dict[str, Any]:
    """Aⁿ vs brute force for every length whose walk count fits the budget."""
    checked, worst = 0, 0
    for n in range(1, cfg.max_walk_length + 1):
        if gnn.total_walks(A, n) > cfg.walk_budget:                          # float64: no overflow
            break
        power = gnn.walk_counts(A, n)
        worst = max(worst, int(np.abs(power - gnn.count_walks_brute_force(A, n)).max()))
        checked = n
    return {"walk_lengths_checked": checked, "walks_max_abs_diff": worst}


def _permutation_checks(cfg: Config, A: np.ndarray, X: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Q3.4/Q3.5: worst equivariance gaps over random relabellings (GCN, MLP, attention with/without encodings)."""
    N = len(A)
    gcn = gnn.GCN(cfg.features, cfg.hidden, cfg.hidden, rng)
    mlp = gnn.GraphMLP(N, cfg.features, cfg.hidden, cfg.hidden, rng)
    attention = gnn.SelfAttention(cfg.features, rng, d_head=cfg.hidden)
    pe = gnn.sinusoidal_positional_encoding(N, cfg.features)
    gaps: dict[str, list[float]] = {k: [] for k in ("gcn_equivariance", "gcn_readout_invariance", "mlp_equivariance",
                                                    "mlp_readout_invariance", "attention_equivariance",
                                                    "attention_pe_equivariance")}
    for _ in range(cfg.permutations):
        perm = gnn.random_permutation(N, rng)
        Ap, Xp = gnn.permute_graph(A, X, perm)
        gaps["gcn_equivariance"].append(gnn.equivariance_gap(gcn, A, X, perm))
        gaps["gcn_readout_invariance"].append(float(np.abs(gcn.readout(Ap, Xp) - gcn.readout(A, X)).max()))
        gaps["mlp_equivariance"].append(gnn.equivariance_gap(mlp, A, X, perm))
        gaps["mlp_readout_invariance"].append(float(np.abs(mlp.readout(Ap, Xp) - mlp.readout(A, X)).max()))
        gaps["attention_equivariance"].append(gnn.attention_equivariance_gap(attention, X, perm))
        gaps["attention_pe_equivariance"].append(gnn.attention_equivariance_gap(attention, X, perm, pe))
    out = {k: max(v) if k.startswith(("gcn", "attention_equi")) else min(v) for k, v in gaps.items()}
    message_passing = gnn.attention_message_passing(X, attention)
    out["attention_vs_message_passing"] = float(np.abs(message_passing - attention(X)).max())
    return out


def attention_example(cfg: Config, rng: np.random.Generator) -> dict[str, Any]:
    """Q3.5: attention weights on a few tokens, before/after a relabelling, with and without positional encodings."""
    X = rng.standard_normal((cfg.tokens, cfg.hidden))                          # (T, d)
    attention = gnn.SelfAttention(cfg.hidden, rng)
    perm = gnn.random_permutation(cfg.tokens, rng)
    inverse = np.argsort(perm)
    pe = gnn.sinusoidal_positional_encoding(cfg.tokens, cfg.hidden)
    out: dict[str, Any] = {"perm": perm.tolist()}
    for key, enc in (("no_pe", 0.0), ("pe", pe)):
        alpha = attention.weights(X + enc)                                     # (T, T)
        alpha_perm = attention.weights(X[perm] + enc)                          # tokens relabelled, encodings stay
        back = alpha_perm[np.ix_(inverse, inverse)]                            # Pᵀ α(PX) P: back in the old labels
        out[key] = {"alpha": alpha.tolist(), "alpha_permuted_back": back.tolist(),
                    "max_abs_diff": float(np.abs(back - alpha).max())}
    out["on_course_graphs"] = {}                                               # attention masked to A + I (GAT-like)
    for name in gnn.COURSE_GRAPHS:
        A = gnn.course_graph(name)
        alpha = attention.weights(rng.standard_normal((len(A), cfg.hidden)), mask=A + np.eye(len(A)))
        out["on_course_graphs"][name] = alpha.tolist()
    return out


def parameter_table(cfg: Config, sizes: tuple[int, ...] = (7, 100, 10_000, 1_000_000)) -> list[dict[str, int]]:
    """Q3.4: parameters of the MLP on [A, X] (O(N²)) vs the GCN (independent of N)."""
    return [{"nodes": n, "mlp": gnn.mlp_parameter_count(n, cfg.features, cfg.hidden, cfg.hidden),
             "gcn": gnn.gcn_parameter_count(cfg.features, cfg.hidden, cfg.hidden)} for n in sizes]


def size_change_message(cfg: Config, rng: np.random.Generator) -> str:
    """Q3.4: the MLP built for 6 nodes refuses a 7-node graph (the GCN takes it)."""
    mlp = gnn.GraphMLP(6, cfg.features, cfg.hidden, cfg.hidden, rng)
    try:
        mlp(gnn.course_graph("wheel"), rng.standard_normal((7, cfg.features)))
    except ValueError as exc:
        return first_line(exc)
    raise AssertionError("the MLP accepted a graph of another size")


def run(cfg: Config, run: Run) -> dict[str, Any]:
    rng = np.random.default_rng(cfg.seed)
    course = check_course_graphs(cfg, run)
    rows = {}
    for N in cfg.sizes:
        rows[N] = check_random_graph(cfg, N, rng)
        run.log(N, "check", rows[N], nodes=N)
    attention = attention_example(cfg, rng)
    run.save_json("graphs.json", {"course": course, "attention": attention})
    summary = run.finish(**summarize(cfg, course, rows, attention, rng))
    make_figures(run.dir)
    return summary


def summarize(cfg: Config, course: dict[str, Any], rows: dict[int, dict[str, Any]], attention: dict[str, Any],
              rng: np.random.Generator) -> dict[str, Any]:
    """The summary, one section per question: worst cases over the random graphs (the largest difference where a
    claim says "equal", the smallest where it says "different"), then ``all_claims_hold``."""
    def worst(key: str, pick=max) -> float:
        return pick(r[key] for r in rows.values())

    wheel = gnn.linearity_counterexample(gnn.course_graph("wheel"))
    sections = {
        "q3_1": {"all_walk_counts_agree": all(g["all_agree"] for g in course.values()),
                 "cycle6_A2_matches_formula": course["cycle6"]["A2_matches_formula"],
                 "random_walks_max_abs_diff": worst("walks_max_abs_diff"),
                 "walks": {name: {n: v["walks"] for n, v in g["lengths"].items()} for name, g in course.items()}},
        "q3_3": {"gcn_index_vs_matrix_max_abs_diff": worst("gcn_index_vs_matrix"),
                 "mean_lstsq_residual_max": worst("mean_lstsq_residual"),
                 "mean_lstsq_matrix_vs_DinvA_max_abs_diff": worst("mean_lstsq_matrix_vs_DinvA"),
                 "max_lstsq_residual_min": worst("max_lstsq_residual", min),
                 "wheel_counterexample": {k: wheel[k] for k in ("node", "u1", "u2", "gap_at_node")}},
        "q3_4": {"gcn_equivariance_max_abs_diff": worst("gcn_equivariance"),
                 "gcn_readout_invariance_max_abs_diff": worst("gcn_readout_invariance"),
                 "mlp_equivariance_min_abs_diff": worst("mlp_equivariance", min),
                 "mlp_readout_invariance_min_abs_diff": worst("mlp_readout_invariance", min),
                 "parameters": parameter_table(cfg), "mlp_other_size_error": size_change_message(cfg, rng)},
        "q3_5": {"attention_equivariance_max_abs_diff": worst("attention_equivariance"),
                 "attention_pe_equivariance_min_abs_diff": worst("attention_pe_equivariance", min),
                 "attention_vs_message_passing_max_abs_diff": worst("attention_vs_message_passing"),
                 "example_weights_max_abs_diff": {k: attention[k]["max_abs_diff"] for k in ("no_pe", "pe")}},
        "per_size": rows,
    }
    sections["all_claims_hold"] = claims_hold(sections)
    return sections


def claims_hold(s: dict[str, Any]) -> bool:
    """Every claim of the course's questions, from the summary numbers."""
    q1, q3, q4, q5 = s["q3_1"], s["q3_3"], s["q3_4"], s["q3_5"]
    rounding = (q3["gcn_index_vs_matrix_max_abs_diff"], q4["gcn_equivariance_max_abs_diff"],
                q4["gcn_readout_invariance_max_abs_diff"], q5["attention_equivariance_max_abs_diff"],
                q5["attention_vs_message_passing_max_abs_diff"])
    different = (q3["max_lstsq_residual_min"], q4["mlp_equivariance_min_abs_diff"],
                 q5["attention_pe_equivariance_min_abs_diff"])
    return bool(q1["all_walk_counts_agree"] and q1["cycle6_A2_matches_formula"] and q1["random_walks_max_abs_diff"] == 0
                and q3["mean_lstsq_residual_max"] < 1e-6 and q3["mean_lstsq_matrix_vs_DinvA_max_abs_diff"] < 1e-6
                and all(v < gnn.TOL for v in rounding) and all(v > 1e-3 for v in different))
