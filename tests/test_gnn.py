"""dl1.gnn and `dl1 run gnn`: each claim of the course's GNN questions (Q3.1–Q3.5) on graphs of several sizes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dl1 import gnn
from dl1.errors import UsageError

SIZES = [3, 5, 8, 13, 30]


def graph_with_features(n, seed, p=0.4, d=4):
    """A random graph in which some node has two neighbours, with random features (N, d)."""
    rng = np.random.default_rng(seed)
    while True:
        A = gnn.random_graph(n, p, rng)
        if A.sum(axis=1).max() >= 2:
            return A, rng.standard_normal((n, d)), rng


# ---------------------------------------------------------------------------------------------------------------------
# Q3.1
# ---------------------------------------------------------------------------------------------------------------------

def test_course_adjacency_matrices():
    star, wheel, cycle = (gnn.course_graph(n).tolist() for n in ("star", "wheel", "cycle6"))
    assert star == [[0, 1, 1, 1, 1, 1, 1]] + [[1, 0, 0, 0, 0, 0, 0] for _ in range(6)]
    assert wheel == [[0, 1, 1, 1, 1, 1, 1],
                     [1, 0, 1, 0, 0, 0, 1],
                     [1, 1, 0, 1, 0, 0, 0],
                     [1, 0, 1, 0, 1, 0, 0],
                     [1, 0, 0, 1, 0, 1, 0],
                     [1, 0, 0, 0, 1, 0, 1],
                     [1, 1, 0, 0, 0, 1, 0]]
    assert cycle == [[0, 1, 0, 0, 0, 1],
                     [1, 0, 1, 0, 0, 0],
                     [0, 1, 0, 1, 0, 0],
                     [0, 0, 1, 0, 1, 0],
                     [0, 0, 0, 1, 0, 1],
                     [1, 0, 0, 0, 1, 0]]
    for name, (_, edges, _) in gnn.COURSE_GRAPHS.items():
        A = gnn.course_graph(name)
        assert (A == A.T).all() and (np.diag(A) == 0).all()
        assert sorted(gnn.edges_of(A)) == sorted((min(e), max(e)) for e in edges)


def test_adjacency_matrix_rejects_bad_edges():
    with pytest.raises(ValueError, match="outside 1..3"):
        gnn.adjacency_matrix([(1, 4)], 3)
    with pytest.raises(ValueError, match="self-loop"):
        gnn.adjacency_matrix([(2, 2)], 3)
    with pytest.raises(ValueError, match="unknown graph"):
        gnn.course_graph("square")
    assert gnn.adjacency_matrix([(0, 2)], 3, one_based=False).tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]


@pytest.mark.parametrize("name", list(gnn.COURSE_GRAPHS))
def test_walk_counts_match_brute_force_on_course_graphs(name):
    A = gnn.course_graph(name)
    for n in range(0, 6):
        assert (gnn.walk_counts(A, n) == gnn.count_walks_brute_force(A, n)).all(), n


@pytest.mark.parametrize("n_nodes", [3, 5, 8, 11])
def test_walk_counts_match_brute_force_on_random_graphs(n_nodes):
    A, _, _ = graph_with_features(n_nodes, seed=n_nodes, p=0.5)
    for n in range(1, 5):
        assert (gnn.walk_counts(A, n) == gnn.count_walks_brute_force(A, n)).all(), n


def test_enumerated_walks_are_walks():
    cycle = gnn.course_graph("cycle6")
    walks = {tuple(v + 1 for v in w) for w in gnn.enumerate_walks(cycle, 0, 2)}
    assert walks == {(1, 2, 1), (1, 2, 3), (1, 6, 1), (1, 6, 5)}
    A, _, _ = graph_with_features(8, seed=1)
    for w in gnn.enumerate_walks(A, 3, 4):
        assert len(w) == 5 and all(A[a, b] for a, b in zip(w, w[1:]))


@pytest.mark.parametrize("n", [4, 5, 6, 9])
def test_cycle_square_closed_form(n):
    A = gnn.adjacency_matrix([(v, v % n + 1) for v in range(1, n + 1)], n)
    assert (gnn.walk_counts(A, 2) == gnn.cycle_square_formula(n)).all()
    if n == 6:
        assert gnn.walk_counts(A, 2)[0].tolist() == [2, 0, 1, 0, 1, 0]


# ---------------------------------------------------------------------------------------------------------------------
# Q3.2/Q3.3
# ---------------------------------------------------------------------------------------------------------------------

def test_gcn_layer_by_hand_on_a_path():
    A = gnn.adjacency_matrix([(1, 2), (2, 3)], 3)                     # 1 - 2 - 3
    H = np.array([[1.0], [2.0], [6.0]])
    W, B = np.array([[1.0]]), np.array([[10.0]])
    expected = [[2.0 + 10.0], [(1.0 + 6.0) / 2 + 20.0], [2.0 + 60.0]]
    for layer in (gnn.gcn_layer_index, gnn.gcn_layer_matrix):
        assert np.allclose(layer(A, H, W, B, gnn.identity), expected)


@pytest.mark.parametrize("n", SIZES)
def test_gcn_index_form_equals_matrix_form(n):
    A, H, rng = graph_with_features(n, seed=n)
    for activation in (gnn.relu, gnn.identity, np.tanh):
        W, B = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
        index, matrix = gnn.gcn_layer_index(A, H, W, B, activation), gnn.gcn_layer_matrix(A, H, W, B, activation)
        assert index.shape == (n, 6)
        np.testing.assert_allclose(index, matrix, rtol=0, atol=1e-12)


def test_gcn_isolated_node_keeps_only_its_own_term():
    A = gnn.adjacency_matrix([(1, 2)], 3)                             # node 3 is isolated
    H = np.arange(6.0).reshape(3, 2)
    W, B = np.ones((1, 2)), np.eye(2)[:1]
    out = gnn.gcn_layer_matrix(A, H, W, B, gnn.identity)
    assert out[2, 0] == H[2, 0]
    assert np.allclose(out, gnn.gcn_layer_index(A, H, W, B, gnn.identity))


def test_max_aggregation_by_hand():
    star = gnn.course_graph("star")
    H = np.arange(7.0)[:, None] * np.array([[1.0, -1.0]])              # node v has features (v-1, 1-v)
    agg = gnn.max_aggregate(star, H)
    assert agg[0].tolist() == [6.0, -1.0]                                # hub: max over leaves 2..7
    assert (agg[1:] == H[0]).all()                                       # leaves: their only neighbour, the hub
    W, B = np.eye(2), np.zeros((2, 2))
    assert np.allclose(gnn.max_aggregation_layer(star, H, W, B, gnn.identity), agg)


@pytest.mark.parametrize("n", SIZES)
def test_max_aggregation_has_no_matrix_form(n):
    A, _, rng = graph_with_features(n, seed=100 + n)
    example = gnn.linearity_counterexample(A)
    assert example is not None and example["gap_at_node"] == 1.0
    assert not np.allclose(example["f(x+y)"], example["f(x)+f(y)"])
    M_mean, res_mean = gnn.fit_aggregation_matrix(gnn.mean_aggregate, A, 300, rng)
    assert res_mean < 1e-10
    np.testing.assert_allclose(M_mean, gnn.degree_inverse(A) @ A, atol=1e-10)
    _, res_max = gnn.fit_aggregation_matrix(gnn.max_aggregate, A, 300, rng)
    assert res_max > 0.05


def test_max_aggregation_is_linear_when_every_node_has_one_neighbour():
    matching = gnn.adjacency_matrix([(1, 2), (3, 4), (5, 6)], 6)
    assert gnn.linearity_counterexample(matching) is None
    _, res = gnn.fit_aggregation_matrix(gnn.max_aggregate, matching, 100, np.random.default_rng(0))
    assert res < 1e-10


# ---------------------------------------------------------------------------------------------------------------------
# Q3.4
# ---------------------------------------------------------------------------------------------------------------------

def test_permutation_helpers_agree_with_matrices():
    A, X, rng = graph_with_features(7, seed=3)
    perm = gnn.random_permutation(7, rng)
    assert (perm != np.arange(7)).any()
    P = gnn.permutation_matrix(perm)
    Ap, Xp = gnn.permute_graph(A, X, perm)
    assert np.allclose(Ap, P @ A @ P.T) and np.allclose(Xp, P @ X)


@pytest.mark.parametrize("n", SIZES)
def test_gcn_is_permutation_equivariant_mlp_is_not(n):
    A, X, rng = graph_with_features(n, seed=200 + n)
    gcn, mlp = gnn.GCN(4, 8, 3, rng), gnn.GraphMLP(n, 4, 8, 3, rng)
    for _ in range(3):
        perm = gnn.random_permutation(n, rng)
        Ap, Xp = gnn.permute_graph(A, X, perm)
        assert gnn.equivariance_gap(gcn, A, X, perm) < 1e-12
        assert np.abs(gcn.readout(Ap, Xp) - gcn.readout(A, X)).max() < 1e-12
        assert gnn.equivariance_gap(mlp, A, X, perm) > 1e-3
        assert np.abs(mlp.readout(Ap, Xp) - mlp.readout(A, X)).max() > 1e-6


def test_mlp_is_tied_to_one_graph_size_gcn_is_not():
    rng = np.random.default_rng(0)
    gcn, mlp = gnn.GCN(3, 4, 2, rng), gnn.GraphMLP(6, 3, 4, 2, rng)
    for name in gnn.COURSE_GRAPHS:
        A = gnn.course_graph(name)
        assert gcn(A, rng.standard_normal((len(A), 3))).shape == (len(A), 2)
    with pytest.raises(ValueError, match="exactly 6 nodes"):
        mlp(gnn.course_graph("wheel"), rng.standard_normal((7, 3)))
    assert mlp.n_parameters == gnn.mlp_parameter_count(6, 3, 4, 2)
    assert gcn.n_parameters == gnn.gcn_parameter_count(3, 4, 2)
    assert gnn.mlp_parameter_count(200, 3, 4, 2) > 3 * gnn.mlp_parameter_count(100, 3, 4, 2)  # O(N²)


# ---------------------------------------------------------------------------------------------------------------------
# Q3.5
# ---------------------------------------------------------------------------------------------------------------------

def test_self_attention_matches_torch_sdpa():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 5))
    attention = gnn.SelfAttention(5, rng, d_head=3)
    out, weights = gnn.self_attention(X, attention)
    Q, K, V = (torch.from_numpy(X @ W.T)[None] for W in (attention.Wq, attention.Wk, attention.Wv))
    ref = torch.nn.functional.scaled_dot_product_attention(Q, K, V)[0].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-12)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)


@pytest.mark.parametrize("n", SIZES)
def test_self_attention_is_equivariant_until_positional_encodings(n):
    rng = np.random.default_rng(300 + n)
    X = rng.standard_normal((n, 6))
    attention = gnn.SelfAttention(6, rng)
    np.testing.assert_allclose(gnn.attention_message_passing(X, attention), attention(X), atol=1e-12)
    pe = gnn.sinusoidal_positional_encoding(n, 6)
    for _ in range(3):
        perm = gnn.random_permutation(n, rng)
        assert gnn.attention_equivariance_gap(attention, X, perm) < 1e-12
        weights, weights_perm = attention.weights(X), attention.weights(X[perm])
        np.testing.assert_allclose(weights_perm, weights[np.ix_(perm, perm)], atol=1e-12)   # α(PX) = P α(X) Pᵀ
        assert gnn.attention_equivariance_gap(attention, X, perm, pe) > 1e-3


def test_sinusoidal_positional_encoding_values():
    pe = gnn.sinusoidal_positional_encoding(5, 7)                           # odd width works too
    assert pe.shape == (5, 7)
    pos, i = 3, 2
    assert np.isclose(pe[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 7)))
    assert np.isclose(pe[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 7)))
    assert (pe[0, 0::2] == 0).all() and (pe[0, 1::2] == 1).all()
    assert len({tuple(r) for r in pe.round(8)}) == 5                       # every position is distinct


def test_masked_attention_uses_only_graph_edges():
    rng = np.random.default_rng(1)
    wheel = gnn.course_graph("wheel")
    attention = gnn.SelfAttention(4, rng)
    weights = attention.weights(rng.standard_normal((7, 4)), mask=wheel + np.eye(7))
    assert (weights[(wheel + np.eye(7)) == 0] == 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="self-loops"):
        attention.weights(rng.standard_normal((3, 4)), mask=np.zeros((3, 3)))


# ---------------------------------------------------------------------------------------------------------------------
# drawing, module hygiene and the experiment
# ---------------------------------------------------------------------------------------------------------------------

def test_draw_graph_draws_every_edge():
    from dl1.report import new_figure

    pos = gnn.circular_layout(7, centre=[0])
    assert np.allclose(pos[0], 0) and np.allclose(np.linalg.norm(pos[1:], axis=1), 1)
    _, (ax1, ax2) = new_figure(1, 2)
    gnn.draw_graph(ax1, gnn.course_graph("wheel"), pos)
    assert len(ax1.lines) == 12
    weights = np.random.default_rng(0).random((4, 4))
    gnn.draw_graph(ax2, np.ones((4, 4)) - np.eye(4), weights=weights)
    widths = [line.get_linewidth() for line in ax2.lines]
    assert len(widths) == 6 and max(widths) == pytest.approx(5.5)


def test_gnn_module_does_not_import_torch_or_matplotlib():
    code = "import sys, dl1.gnn; assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gnn_experiment_smoke(tmp_path):
    from dl1 import experiments
    from dl1.report.gnn import make_figures

    summary = experiments.execute("gnn", smoke=True, out_dir=tmp_path, quiet=True)
    assert summary["all_claims_hold"] is True
    assert summary["q3_1"]["walks"]["cycle6"]["2"] == 24
    assert summary["q3_4"]["mlp_equivariance_min_abs_diff"] > 1e-3
    run_dir = tmp_path / "gnn" / next(p.name for p in (tmp_path / "gnn").iterdir())
    names = ["gnn_graphs.png", "gnn_walks.png", "gnn_attention.png", "gnn_graph_attention.png", "gnn_checks.png"]
    assert json.loads((run_dir / "summary.json").read_text())["all_claims_hold"] is True
    report = (run_dir / "report.md").read_text()
    for q in ("Q3.1", "Q3.2", "Q3.3", "Q3.4", "Q3.5"):
        assert q in report
    for name in names:                                                # rebuilt from the run folder alone
        (run_dir / "figures" / name).unlink()
    (run_dir / "report.md").unlink()
    make_figures(run_dir)
    assert all((run_dir / "figures" / n).stat().st_size > 10_000 for n in names)
    assert (run_dir / "report.md").read_text() == report


def test_gnn_experiment_is_deterministic():
    from dl1 import experiments
    from dl1.experiments.runners import gnn as experiment

    cfg = experiments.make_config("gnn", smoke=True)
    rows = [experiment.check_random_graph(cfg, 6, np.random.default_rng(cfg.seed)) for _ in range(2)]
    assert rows[0] == rows[1]


def test_gnn_experiment_bad_flags(tmp_path):
    from dl1 import experiments

    with pytest.raises(UsageError, match="edge_prob"):
        experiments.execute("gnn", ["--edge_prob", "1.5"], out_dir=tmp_path, quiet=True)
    with pytest.raises(UsageError, match="without edges"):
        experiments.execute("gnn", ["--edge_prob", "0"], out_dir=tmp_path, quiet=True)
    with pytest.raises(UsageError, match="no node with two neighbours"):
        experiments.execute("gnn", ["--edge_prob", "1e-9", "--sizes", "5"], out_dir=tmp_path, quiet=True)
    assert not (tmp_path / "gnn").exists() or not any((tmp_path / "gnn").glob("*/summary.json"))


def test_total_walks_is_the_sum_of_the_power_and_never_overflows():
    A = gnn.course_graph("wheel")
    assert [gnn.total_walks(A, n) for n in range(5)] == [float(gnn.walk_counts(A, n).sum()) for n in range(5)]
    complete = np.ones((500, 500), dtype=np.int64) - np.eye(500, dtype=np.int64)
    assert gnn.total_walks(complete, 8) == pytest.approx(500 * 499.0 ** 8)  # int64 Aⁿ would wrap around


def test_gnn_flags_out_of_range_or_too_big_are_refused_at_parse_time():
    from dl1 import experiments

    with pytest.raises(UsageError, match="--seed: -1 is out of range"):
        experiments.make_config("gnn", ["--seed", "-1"])
    with pytest.raises(UsageError, match="--walk_budget"):
        experiments.make_config("gnn", ["--walk_budget", str(10**12)])
    with pytest.raises(UsageError, match=r"the MLP on \[A, X\] would have .* GiB"):
        experiments.make_config("gnn", ["--sizes", "500", "--features", "512", "--hidden", "512"])


def test_gnn_report_of_a_damaged_run_folder_is_one_line(tmp_path):
    from dl1 import experiments
    from dl1.errors import DL1Error
    from dl1.report.gnn import make_figures

    summary = experiments.execute("gnn", smoke=True, out_dir=tmp_path, quiet=True)
    graphs = tmp_path / "gnn" / Path(summary["run_dir"]).name / "graphs.json"
    graphs.write_text(graphs.read_text()[:100])
    with pytest.raises(DL1Error, match="graphs.json"):
        make_figures(graphs.parent)
