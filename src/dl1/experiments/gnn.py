"""GNN theory made checkable (Q3.1–Q3.5): walks, GCN index vs matrix form, max aggregation, permutations, attention.

Builds the course's three graphs (star, wheel, 6-cycle), checks ``Aⁿ`` against brute-force walk enumeration, checks the
graph-convolution layer's index form against its matrix form on random graphs, shows that max aggregation has no
matrix form, that a GCN is permutation-equivariant while an MLP on ``[A, X]`` is not, and that self-attention is
equivariant until positional encodings are added.  Writes ``report.md``, ``summary.json`` and ``figures/gnn_*.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dl1 import gnn
from dl1.config import arg
from dl1.errors import UsageError
from dl1.report import save_figure
from dl1.runtime import Run

TOL = 1e-9  # a "max abs difference" below this is float rounding: the two sides are equal


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = arg((4, 8, 16, 32, 64), "Numbers of nodes of the random graphs the claims are checked on.",
                                 min=3, max=500)
    edge_prob: float = arg(0.3, "Edge probability p of the random G(n, p) graphs.", min=0.0, max=1.0)
    features: int = arg(5, "Node feature dimension d_in of the random graphs.", min=1, max=512)
    hidden: int = arg(8, "Hidden/output width of the GCN, MLP and attention layers.", min=1, max=512)
    max_walk_length: int = arg(5, "Walk lengths 1..n compared between A^n and brute-force enumeration.", min=1, max=8)
    walk_budget: int = arg(200_000, "Largest number of walks enumerated one by one per graph and length "
                                    "(bigger random graphs skip the brute-force count).", min=1)
    permutations: int = arg(3, "Random relabellings tried per graph size.", min=1, max=100)
    tokens: int = arg(6, "Number of tokens in the self-attention drawing.", min=2, max=20)
    seed: int = arg(42, "Random seed (graphs, features, weights, permutations).")

    def check(self) -> None:
        if self.edge_prob == 0:
            raise UsageError("--edge_prob 0 gives graphs without edges; the checks need a node with two neighbours")


SMOKE = {"sizes": (4, 7), "max_walk_length": 3, "permutations": 1, "walk_budget": 5000}


# ---------------------------------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------------------------------

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
        power = gnn.walk_counts(A, n)
        if power.sum() > cfg.walk_budget:
            break
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
        return str(exc)
    raise AssertionError("the MLP accepted a graph of another size")


# ---------------------------------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------------------------------

def run(cfg: Config, run: Run) -> dict[str, Any]:
    rng = np.random.default_rng(cfg.seed)
    course = check_course_graphs(cfg, run)
    rows = {}
    for N in cfg.sizes:
        rows[N] = check_random_graph(cfg, N, rng)
        run.log(N, "check", rows[N], nodes=N)
    attention = attention_example(cfg, rng)
    wheel_example = gnn.linearity_counterexample(gnn.course_graph("wheel"))
    run.save_json("graphs.json", {"course": course, "attention": attention})
    sections = {
        "q3_1": {"all_walk_counts_agree": all(g["all_agree"] for g in course.values()),
                 "cycle6_A2_matches_formula": course["cycle6"]["A2_matches_formula"],
                 "random_walks_max_abs_diff": max(r["walks_max_abs_diff"] for r in rows.values()),
                 "walks": {name: {n: v["walks"] for n, v in g["lengths"].items()} for name, g in course.items()}},
        "q3_3": {"gcn_index_vs_matrix_max_abs_diff": max(r["gcn_index_vs_matrix"] for r in rows.values()),
                 "mean_lstsq_residual_max": max(r["mean_lstsq_residual"] for r in rows.values()),
                 "mean_lstsq_matrix_vs_DinvA_max_abs_diff": max(r["mean_lstsq_matrix_vs_DinvA"] for r in rows.values()),
                 "max_lstsq_residual_min": min(r["max_lstsq_residual"] for r in rows.values()),
                 "wheel_counterexample": {k: wheel_example[k] for k in ("node", "u1", "u2", "gap_at_node")}},
        "q3_4": {"gcn_equivariance_max_abs_diff": max(r["gcn_equivariance"] for r in rows.values()),
                 "gcn_readout_invariance_max_abs_diff": max(r["gcn_readout_invariance"] for r in rows.values()),
                 "mlp_equivariance_min_abs_diff": min(r["mlp_equivariance"] for r in rows.values()),
                 "mlp_readout_invariance_min_abs_diff": min(r["mlp_readout_invariance"] for r in rows.values()),
                 "parameters": parameter_table(cfg), "mlp_other_size_error": size_change_message(cfg, rng)},
        "q3_5": {"attention_equivariance_max_abs_diff": max(r["attention_equivariance"] for r in rows.values()),
                 "attention_pe_equivariance_min_abs_diff": min(r["attention_pe_equivariance"] for r in rows.values()),
                 "attention_vs_message_passing_max_abs_diff": max(r["attention_vs_message_passing"]
                                                                  for r in rows.values()),
                 "example_weights_max_abs_diff": {k: attention[k]["max_abs_diff"] for k in ("no_pe", "pe")}},
        "per_size": rows,
    }
    sections["all_claims_hold"] = claims_hold(sections)
    summary = run.finish(**sections)
    make_figures(run.dir)
    return summary


def claims_hold(s: dict[str, Any]) -> bool:
    """Every claim of the issue, from the summary numbers."""
    return bool(s["q3_1"]["all_walk_counts_agree"] and s["q3_1"]["cycle6_A2_matches_formula"]
                and s["q3_1"]["random_walks_max_abs_diff"] == 0
                and s["q3_3"]["gcn_index_vs_matrix_max_abs_diff"] < TOL and s["q3_3"]["mean_lstsq_residual_max"] < 1e-6
                and s["q3_3"]["mean_lstsq_matrix_vs_DinvA_max_abs_diff"] < 1e-6
                and s["q3_3"]["max_lstsq_residual_min"] > 1e-3
                and s["q3_4"]["gcn_equivariance_max_abs_diff"] < TOL
                and s["q3_4"]["gcn_readout_invariance_max_abs_diff"] < TOL
                and s["q3_4"]["mlp_equivariance_min_abs_diff"] > 1e-3
                and s["q3_5"]["attention_equivariance_max_abs_diff"] < TOL
                and s["q3_5"]["attention_pe_equivariance_min_abs_diff"] > 1e-3
                and s["q3_5"]["attention_vs_message_passing_max_abs_diff"] < TOL)


# ---------------------------------------------------------------------------------------------------------------------
# figures and report, from the run folder alone
# ---------------------------------------------------------------------------------------------------------------------

def make_figures(run_dir: Path) -> list[Path]:
    """Rebuild figures/gnn_*.png and report.md from summary.json and graphs.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    data = json.loads((run_dir / "graphs.json").read_text())
    (run_dir / "figures").mkdir(exist_ok=True)
    paths = [_figure_graphs(plt, data["course"], run_dir / "figures" / "gnn_graphs.png"),
             _figure_walks(plt, data["course"], run_dir / "figures" / "gnn_walks.png"),
             _figure_attention(plt, data["attention"], run_dir / "figures" / "gnn_attention.png"),
             _figure_graph_attention(plt, data["attention"], run_dir / "figures" / "gnn_graph_attention.png"),
             _figure_checks(plt, summary["per_size"], run_dir / "figures" / "gnn_checks.png")]
    (run_dir / "report.md").write_text(render_report(summary, data))
    return paths


def _annotated_matrix(ax, M: np.ndarray, title: str, cmap: str = "Blues", fmt: str = "{:d}",
                      vmax: float | None = None) -> None:
    vmax = M.max() if vmax is None else vmax
    ax.imshow(M, cmap=cmap, vmin=min(M.min(), 0), vmax=vmax)
    n = len(M)
    for i in range(n):
        for j in range(n):
            value = M[i, j]
            dark = value > (vmax + min(M.min(), 0)) / 2
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    ax.set_xticks(range(n), [str(v + 1) for v in range(n)], fontsize=7)
    ax.set_yticks(range(n), [str(v + 1) for v in range(n)], fontsize=7)
    ax.set_title(title, fontsize=10)


def _figure_graphs(plt, course: dict[str, Any], path: Path) -> Path:
    """The three course graphs (circular layout, hubs in the centre) above their adjacency matrices."""
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.6))
    for k, (name, (n, _, hubs)) in enumerate(gnn.COURSE_GRAPHS.items()):
        A = np.array(course[name]["adjacency"])
        pos = gnn.circular_layout(n, [h - 1 for h in hubs])
        gnn.draw_graph(axes[0, k], A, pos, title=f"{name} ({n} nodes, {int(A.sum() // 2)} edges)")
        _annotated_matrix(axes[1, k], A, f"adjacency matrix A ({name})")
    fig.suptitle("Q3.1a: the course's graphs (Figure 4) and their adjacency matrices")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _figure_walks(plt, course: dict[str, Any], path: Path) -> Path:
    """A² and A³ of each graph: entry (u, v) = number of walks u -> v, equal to the brute-force count."""
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.6))
    for k, name in enumerate(gnn.COURSE_GRAPHS):
        A = np.array(course[name]["adjacency"])
        for r, n in enumerate((2, 3)):
            ok = "= brute force" if course[name]["lengths"].get(str(n), {}).get("agree") else ""
            _annotated_matrix(axes[r, k], gnn.walk_counts(A, n), f"{name}: A^{n} {ok}", cmap="Oranges")
    fig.suptitle("Q3.1b/c: (Aⁿ)_uv counts the walks of length n from u to v")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _figure_attention(plt, attention: dict[str, Any], path: Path) -> Path:
    """Attention weights as edge weights on the complete graph, and the relabelling test, without and with PE."""
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.2))
    for r, (key, label) in enumerate((("no_pe", "no positional encoding"), ("pe", "with positional encoding"))):
        alpha = np.array(attention[key]["alpha"])
        back = np.array(attention[key]["alpha_permuted_back"])
        n = len(alpha)
        gnn.draw_graph(axes[r, 0], np.ones((n, n)) - np.eye(n), weights=alpha, node_color="#fdd0a2",
                       edge_color="#a63603", title=f"{label}:\nattention as edge weights, width ∝ (α_uv + α_vu)/2")
        _annotated_matrix(axes[r, 1], alpha, "α(X)  (row v attends to column u)", cmap="Greens", fmt="{:.2f}")
        diff = np.abs(back - alpha)
        _annotated_matrix(axes[r, 2], diff, f"|Pᵀα(PX)P − α(X)|, max {diff.max():.1e}", cmap="Reds", fmt="{:.0e}",
                          vmax=max(diff.max(), 0.05))
    fig.suptitle(f"Q3.5: self-attention is a GNN on the complete graph. Relabelling the tokens (new order "
                 f"{[p + 1 for p in attention['perm']]})\nmoves α with them (right column = 0) only without positional "
                 f"encodings")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _figure_graph_attention(plt, attention: dict[str, Any], path: Path) -> Path:
    """Attention restricted to each course graph's edges (and self-loops): the learned weights drawn as edge widths."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    for k, (name, (n, _, hubs)) in enumerate(gnn.COURSE_GRAPHS.items()):
        alpha = np.array(attention["on_course_graphs"][name])
        pos = gnn.circular_layout(n, [h - 1 for h in hubs])
        gnn.draw_graph(axes[k], (alpha > 0).astype(int) - np.eye(n, dtype=int), pos, weights=alpha,
                       node_color="#fdd0a2", edge_color="#a63603", title=name)
    fig.suptitle(r"Q3.5: attention masked to the graph (softmax over $\mathcal{N}(v) \cup \{v\}$); "
                 "width ∝ (α_uv + α_vu)/2")
    fig.tight_layout()
    save_figure(fig, path)
    return path


CHECKS = [  # (summary key, label, should be zero)
    ("gcn_index_vs_matrix", "GCN index vs matrix form", True),
    ("gcn_equivariance", "GCN: f(PX) vs P f(X)", True),
    ("attention_equivariance", "attention, no PE", True),
    ("attention_vs_message_passing", "attention vs message passing", True),
    ("mean_lstsq_residual", "best matrix for mean agg. (residual)", True),
    ("max_lstsq_residual", "best matrix for max agg. (residual)", False),
    ("mlp_equivariance", "MLP on [A,X]: f(PX) vs P f(X)", False),
    ("attention_pe_equivariance", "attention + PE", False),
]


def _figure_checks(plt, per_size: dict[str, Any], path: Path) -> Path:
    """Max abs differences (log scale) of every check on the random graphs, by number of nodes."""
    sizes = list(per_size)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(sizes)
    for k, size in enumerate(sizes):
        values = [max(per_size[size][key], 1e-17) for key, _, _ in CHECKS]
        ax.bar(np.arange(len(CHECKS)) + (k - (len(sizes) - 1) / 2) * width, values, width, label=f"N={size}")
    ax.set_yscale("log")
    ax.axhline(TOL, color="black", ls="--", lw=1)
    ax.text(-0.45, TOL * 2, "equal up to rounding below this line", ha="left", fontsize=8)
    ax.set_xticks(range(len(CHECKS)), [("= " if zero else "≠ ") + label for _, label, zero in CHECKS],
                  rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("max abs difference / relative residual")
    ax.set_title("Checks on random G(N, p) graphs: '=' claims sit at rounding level, '≠' claims are O(1)")
    ax.legend(fontsize=8, ncol=len(sizes))
    fig.tight_layout()
    save_figure(fig, path)
    return path


def render_report(summary: dict[str, Any], data: dict[str, Any]) -> str:
    """report.md: each course question with its short answer and the measured numbers."""
    q1, q3, q4, q5 = summary["q3_1"], summary["q3_3"], summary["q3_4"], summary["q3_5"]
    course = data["course"]
    lines = [f"# GNN theory, checked in code (run {Path(summary['run_dir']).name})", "",
             f"All claims hold: **{summary['all_claims_hold']}**. Numbers are max abs differences over random "
             f"G(N, p) graphs (N = {', '.join(summary['per_size'])}; each has a node with two neighbours) unless "
             "stated. The course asks Q3.1–Q3.5 as theory questions; the code (`dl1.gnn`) makes each answer "
             "checkable.", "",
             "## Q3.1 Adjacency matrices and walks", ""]
    for name in gnn.COURSE_GRAPHS:
        lines.append(f"- a) `{name}` = `{course[name]['adjacency']}`")
    cyc = course["cycle6"]
    lines += ["", f"- b) A² of the 6-cycle = `{cyc['A2']}`: 2 on the diagonal (go to a neighbour and back), 1 where "
              f"v = u ± 2 (mod 6), else 0. Matches the closed form: **{q1['cycle6_A2_matches_formula']}**.",
              f"  The walks of length 2 from 1 to 3 are {cyc['walks_1_to_3_length_2']}.",
              "- c) (Aⁿ)_uv is the number of walks of length n from u to v: (Aⁿ)_uv = Σ_w (Aⁿ⁻¹)_uw A_wv extends every "
              "walk of length n−1 that ends at a neighbour w of v by one step.",
              f"  Aⁿ equals the brute-force enumeration for every pair on all three graphs: "
              f"**{q1['all_walk_counts_agree']}**; on the random graphs the max abs difference is "
              f"{q1['random_walks_max_abs_diff']}.", "",
              "| graph | " + " | ".join(f"walks of length {n}" for n in q1["walks"]["star"]) + " |",
              "|---|" + "---|" * len(q1["walks"]["star"])]
    for name, counts in q1["walks"].items():
        lines.append(f"| {name} | " + " | ".join(str(c) for c in counts.values()) + " |")
    wheel = q3["wheel_counterexample"]
    lines += ["", "![graphs](figures/gnn_graphs.png)", "![walks](figures/gnn_walks.png)", "",
              "## Q3.2 Where the structure enters; MPNN form", "",
              "- a) Through the neighbourhood sum over 𝒩(v) (which nodes send messages) and the normaliser |𝒩(v)|.",
              "- b) It is an MPNN with message(h_v, h_u, e_uv) = W h_u / |𝒩(v)|, sum aggregation and update "
              "σ(m_v + B h_v) (`gcn_layer_index` is written exactly this way).", "",
              "## Q3.3 Matrix form and aggregations", "",
              "- a) H⁽ˡ⁺¹⁾ = σ(D⁻¹ A H⁽ˡ⁾ W⁽ˡ⁾ᵀ + H⁽ˡ⁾ B⁽ˡ⁾ᵀ), rows = nodes. Index form vs matrix form: max abs diff "
              f"**{q3['gcn_index_vs_matrix_max_abs_diff']:.1e}**.",
              f"- b) Mean aggregation. The least-squares matrix reproduces it exactly (relative residual ≤ "
              f"{q3['mean_lstsq_residual_max']:.1e}) and the fitted M is D⁻¹A (max abs diff "
              f"{q3['mean_lstsq_matrix_vs_DinvA_max_abs_diff']:.1e}).",
              "- c) Not for max (or min) aggregation: it is not linear, so no matrix M gives max_agg(X) = M X. "
              f"Even the best least-squares M leaves a relative residual ≥ **{q3['max_lstsq_residual_min']:.2f}**. "
              f"Counterexample on the wheel: node {wheel['node'] + 1} has neighbours {wheel['u1'] + 1} and "
              f"{wheel['u2'] + 1}; with x = e_{wheel['u1'] + 1}, y = e_{wheel['u2'] + 1} the max at node "
              f"{wheel['node'] + 1} is 1 for x, for y and for x + y, so f(x) + f(y) − f(x + y) = "
              f"{wheel['gap_at_node']:.0f} ≠ 0 (any matrix gives 0).", "",
              "## Q3.4 Why not an MLP on [A, X]", "",
              "1. Node order: relabelling the nodes permutes a GCN's output "
              f"(max |f(PAPᵀ, PX) − P f(A, X)| = {q4['gcn_equivariance_max_abs_diff']:.1e}; sum readout changes by "
              f"{q4['gcn_readout_invariance_max_abs_diff']:.1e}) but changes the MLP's "
              f"(≥ {q4['mlp_equivariance_min_abs_diff']:.2f}; its graph-level output by ≥ "
              f"{q4['mlp_readout_invariance_min_abs_diff']:.2f}).",
              "2. Fixed graph size: an MLP built for 6 nodes refuses the 7-node wheel: "
              f"\"{q4['mlp_other_size_error']}\"; "
              "the same GCN runs on every size (molecules of any size).",
              "3. Parameters grow as O(N²) and do not transfer to unseen or huge graphs (social networks):", "",
              "| nodes N | MLP on [A, X] parameters | GCN parameters |", "|---|---|---|"]
    lines += [f"| {p['nodes']:,} | {p['mlp']:,} | {p['gcn']:,} |" for p in q4["parameters"]]
    lines += ["", "## Q3.5 Transformers are GNNs", "",
              "- a) Self-attention is message passing on the complete graph: tokens are nodes and the attention "
              "weights α_vu are soft, learned, input-dependent edge weights. Node-by-node message passing vs the "
              f"matrix form: max abs diff {q5['attention_vs_message_passing_max_abs_diff']:.1e}.",
              "- b) Order enters only through positional encodings added to the token features; the architecture "
              f"itself is permutation-equivariant: without encodings max abs diff "
              f"**{q5['attention_equivariance_max_abs_diff']:.1e}**, with sinusoidal encodings ≥ "
              f"**{q5['attention_pe_equivariance_min_abs_diff']:.2f}**.", "",
              "- Restricting the softmax to 𝒩(v) ∪ {v} gives attention on any graph (a graph attention layer): the "
              "weights become learned edge weights of the course graphs (figure below).", "",
              "![attention](figures/gnn_attention.png)", "![graph attention](figures/gnn_graph_attention.png)",
              "![checks](figures/gnn_checks.png)", "",
              "## Per graph size", "",
              "| N | edges | walk lengths checked | index vs matrix | mean-agg residual | max-agg residual "
              "| GCN equiv. | MLP equiv. | attn | attn + PE |", "|---|---|---|---|---|---|---|---|---|---|"]
    for size, r in summary["per_size"].items():
        lines.append(f"| {size} | {r['edges']} | {r['walk_lengths_checked']} | {r['gcn_index_vs_matrix']:.1e} | "
                     f"{r['mean_lstsq_residual']:.1e} | {r['max_lstsq_residual']:.2f} | {r['gcn_equivariance']:.1e} | "
                     f"{r['mlp_equivariance']:.2f} | {r['attention_equivariance']:.1e} | "
                     f"{r['attention_pe_equivariance']:.2f} |")
    return "\n".join(lines) + "\n"


