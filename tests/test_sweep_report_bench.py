"""dl1 sweep (grid product, skip finished runs), dl1 report (rebuild, compare) and dl1 bench."""

import json

import pytest

from dl1.bench import main as bench_main
from dl1.bench import print_table, ratio_rows
from dl1.errors import UsageError
from dl1.report.cli import main as report_main
from dl1.sweep import combinations, parse_grid
from dl1.sweep import main as sweep_main


def test_grid_parsing_and_product():
    grid = parse_grid(["injection_layer=0,2,4", "dataset=cifar10,cifar100"], ["injection_layer", "dataset"])
    combos = combinations(grid)
    assert len(combos) == 6 and combos[0] == {"injection_layer": "0", "dataset": "cifar10"}
    with pytest.raises(UsageError, match="did you mean injection_layer"):
        parse_grid(["injection_layr=1"], ["injection_layer", "dataset"])


def test_sweep_runs_skips_finished_and_reports(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    args = ["gnn", "--grid", "seed=1,2", "--sweep_dir", str(sweep_dir), "--", "--sizes", "4", "6",
            "--max_walk_length", "2", "--permutations", "1"]
    assert sweep_main(args) == 0
    assert (sweep_dir / "seed=1" / "summary.json").exists() and (sweep_dir / "seed=2" / "summary.json").exists()
    table = (sweep_dir / "report.md").read_text()
    assert "| seed=1 | 1 |" in table and "| seed=2 | 2 |" in table
    capsys.readouterr()
    assert sweep_main(args) == 0
    assert "2 already done, 0 to run" in capsys.readouterr().out


def test_sweep_rejects_bad_value_before_running(tmp_path):
    with pytest.raises(UsageError):
        sweep_main(["gnn", "--grid", "edge_prob=0.5,7", "--sweep_dir", str(tmp_path / "s")])
    assert not (tmp_path / "s").exists()


def test_report_rebuilds_from_folder_alone(tmp_path):
    from dl1.experiments import execute

    summary = execute("gnn", ["--sizes", "4", "--max_walk_length", "2"], out_dir=tmp_path, quiet=True)
    run_dir = tmp_path / "gnn" / summary["run_dir"].split("/")[-1]
    for png in (run_dir / "figures").glob("*.png"):
        png.unlink()
    assert report_main([str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert sorted(p.name for p in (run_dir / "figures").glob("*.png")) == [
        "gnn_attention.png", "gnn_checks.png", "gnn_graph_attention.png", "gnn_graphs.png", "gnn_walks.png"]
    assert "## Q3.1 Adjacency matrices and walks" in report and "All claims hold: **True**" in report


def test_report_on_missing_folder_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a folder"):
        report_main([str(tmp_path / "nope")])


def test_bench_table_collects_ratio_rows(capsys):
    data = {"threads": 1, "rows": [{"case": "cifar10", "threads": 1, "ours": 2.0, "floor": 1.5, "ratio": 1.33},
                                   {"nested": {"case": "x", "ratio": 0.9, "threads": 2}}]}
    rows = ratio_rows(json.loads(json.dumps(data)))
    assert [r["ratio"] for r in rows] == [1.33, 0.9]
    print_table({"demo": rows})
    out = capsys.readouterr().out
    assert "ratio" in out.splitlines()[0] and "1.33" in out


def test_bench_unknown_name():
    with pytest.raises(UsageError, match="unknown benchmark"):
        bench_main(["no_such_bench"])
