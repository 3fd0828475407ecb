"""Model comparison: parameter counts, top-1 metadata, timing statistics, memory measurement, figures, timm skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from dl1.errors import UsageError
from dl1.experiments import execute, make_config
from dl1.experiments.runners import cnn_compare
from dl1.models import zoo
from dl1.report.cnn import FIGURES, make_report

# REFERENCE_RESULTS.md: ImageNet-1K top-1 and parameters from torchvision's weight metadata
REFERENCE = {"resnet18": (69.758, 11_689_512), "vgg11": (69.020, 132_863_336), "vgg11_bn": (70.370, 132_868_840),
             "densenet121": (74.434, 7_978_856), "mobilenet_v3_small": (67.668, 2_542_856),
             "vit_b_32": (75.912, 88_224_232)}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cnn")
    return execute("cnn-compare", ["--models", "resnet18", "mobilenet_v3_small"], smoke=True, out_dir=out,
                   quiet=True)


def test_top1_comes_from_torchvision_metadata_offline():
    for name, (top1, _) in REFERENCE.items():
        assert zoo.imagenet_top1(name)[0] == pytest.approx(top1)
    assert zoo.imagenet_top1("vit_s_8")[1].startswith("approximate")


def test_smoke_run_table_figures_and_device(smoke_run):
    table = smoke_run["table"]
    assert list(table) == ["resnet18", "mobilenet_v3_small"]
    for name, row in table.items():
        assert row["params"] == REFERENCE[name][1]  # count_params of the real architecture
        assert row["top1"] == pytest.approx(REFERENCE[name][0])
        assert row["ms_per_image_no_grad"] > 0 and row["ms_per_image_grad"] > 0
        assert row["memory_mb_grad"] > 10 * row["memory_mb_no_grad"] > 0  # saved activations vs output only
    assert smoke_run["device"] == "cpu" and smoke_run["device_name"].startswith("CPU")
    assert "random" in smoke_run["weights"]
    run_dir = Path(smoke_run["run_dir"])
    for f in FIGURES:
        assert (run_dir / "figures" / f).stat().st_size > 5000
    report = (run_dir / "report.md").read_text()
    assert "ResNet-18" in report and "MobileNet-v3-S" in report and "saved for backward" in report


def test_make_figures_rebuilds_from_the_run_folder(smoke_run):
    run_dir = Path(smoke_run["run_dir"])
    for f in FIGURES:
        (run_dir / "figures" / f).unlink()
    (run_dir / "table.md").unlink()
    paths = make_report(run_dir)
    assert all(p.exists() for p in paths) and len(paths) == len(FIGURES) + 1


def test_timing_records_are_in_metrics_jsonl(smoke_run):
    recs = [json.loads(line) for line in (Path(smoke_run["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    models = [r for r in recs if r["split"] == "model"]
    assert [r["model"] for r in models] == ["resnet18", "mobilenet_v3_small"]
    cfg = make_config("cnn-compare", smoke=True)
    details = smoke_run["details"]["resnet18"]["timing"]
    assert details["no_grad"]["repeats"] == details["grad"]["repeats"] == cfg.repeats
    for r in models:
        for mode in ("no_grad", "grad"):
            assert r[f"q1_ms_per_image_{mode}"] <= r[f"ms_per_image_{mode}"] <= r[f"q3_ms_per_image_{mode}"]


def test_saved_tensor_memory_is_exact_on_a_tiny_network():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(5, 4)
    grad = zoo.measure_memory(model, x, no_grad=False)
    # ReLU saves its output (5x8 floats), which the second Linear also saves: one storage; plus the 5x3 output.
    assert grad["saved_plus_output_mb"] * 2**20 == 5 * 8 * 4 + 5 * 3 * 4
    free = zoo.measure_memory(model, x, no_grad=True)
    assert free["saved_plus_output_mb"] * 2**20 == 5 * 3 * 4 == free["output_mb"] * 2**20
    assert "saved for backward" in free["method"]


def test_timing_keeps_the_model_in_eval_mode_and_summarizes():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model.train()
    out = zoo.measure_forward_ms(model, torch.rand(8, 4), repeats=4, warmup=1)
    assert not model.training
    assert set(out) == {"no_grad", "grad"} and out["grad"]["repeats"] == 4
    s = zoo.summarize_times([1.0, 2.0, 3.0, 4.0, 100.0], batch=2)
    assert s["median_ms"] == 3.0 and s["median_ms_per_image"] == 1.5
    assert (s["q1_ms"], s["q3_ms"]) == (2.0, 4.0)
    assert s["iqr_mean_ms"] == pytest.approx(2.5)  # 100 is an outlier beyond Q3 + 1.5 IQR


def test_vit_s_8_is_skipped_with_a_note_without_timm(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "timm_available", lambda: False)
    s = execute("cnn-compare", ["--models", "mobilenet_v3_small", "vit_s_8", "--repeats", "2", "--warmup", "0"],
                smoke=True, out_dir=tmp_path, quiet=True)
    assert list(s["table"]) == ["mobilenet_v3_small"] and "timm" in s["skipped"]["vit_s_8"]
    assert "timm" in (Path(s["run_dir"]) / "table.md").read_text()


@pytest.mark.slow  # building ViT-B/32's 88 M random weights takes seconds
def test_vit_builders_follow_the_image_size():
    model = zoo.build("vit_b_32", image_size=64).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    if zoo.timm_available():
        model = zoo.build("vit_s_8", image_size=32).eval()
        with torch.no_grad():
            assert model(torch.rand(1, 3, 32, 32)).shape[0] == 1


def test_bad_flags_are_usage_errors():
    with pytest.raises(UsageError, match="multiple of 32"):
        make_config("cnn-compare", ["--image_size", "100"])
    with pytest.raises(UsageError, match="invalid choice"):
        make_config("cnn-compare", ["--models", "resnet50"])
    with pytest.raises(UsageError, match="--device"):
        cnn_compare.run(make_config("cnn-compare", ["--device", "tpu7"], smoke=True), _quiet_run())


def _quiet_run():
    from dl1.run.folder import Run

    return Run("cnn-compare", enabled=False, quiet=True)


def test_tour_rows_compare_like_with_like(smoke_run):
    from dl1.report.cnn import tour_rows

    rows = tour_rows(smoke_run)  # a CPU run: the reference's GPU time is said to be not comparable
    assert [r[0].split(" ms/image")[0] for r in rows] == ["ResNet-18", "MobileNet-v3-S"]
    label, ours, reference = rows[0]
    assert "ms/image on CPU" in ours and f"{smoke_run['table']['resnet18']['ms_per_image_no_grad']:.3g}" in ours
    assert reference.startswith("1.05 ms/image on a GPU (8.4 ms per batch of 8") and "not comparable" in reference
    assert "batch 2 (reference: 8)" in ours  # the smoke batch differs from the reference's
    gpu = {"device": "cuda:0", "device_name": "NVIDIA H200", "batch_size": 8,
           "table": {"resnet18": {"label": "ResNet-18", "ms_per_image_no_grad": 0.362},
                     "vit_s_8": {"label": "ViT-S/8", "ms_per_image_no_grad": 1.5}},
           "details": {"resnet18": {"timing": {"no_grad": {"q1_ms_per_image": 0.30, "q3_ms_per_image": 0.45}}},
                       "vit_s_8": {"timing": {"no_grad": {"q1_ms_per_image": 1.49, "q3_ms_per_image": 1.51}}}}}
    (_, ours, reference), (_, vit, vit_ref) = tour_rows(gpu)
    assert "0.362 ms/image on NVIDIA H200 (0.34× the reference)" in ours and "not comparable" not in reference
    assert "⚠ spread 41% across repeats (> 20%)" in ours  # (0.45 - 0.30) / 0.362
    assert "⚠" not in vit and vit_ref.startswith("12.9 ms/image")


def test_a_wide_timing_spread_is_flagged_in_the_table():
    from dl1.report.cnn import report_markdown, spread

    assert spread(1.0, 0.9, 1.1) == pytest.approx(0.2) and spread(0.0, 0.0, 0.0) is None
    row = {"label": "ResNet-18", "params": 11_689_512, "top1": 69.76, "ms_per_image_no_grad": 1.0,
           "q1_ms_per_image_no_grad": 0.8, "q3_ms_per_image_no_grad": 1.3, "ms_per_image_grad": 1.0,
           "q1_ms_per_image_grad": 0.95, "q3_ms_per_image_grad": 1.05, "memory_mb_no_grad": 0.2,
           "memory_mb_grad": 100.0}
    text = report_markdown({"resnet18": row}, {"device_name": "CPU"})
    assert "ResNet-18 (no_grad): spread 50% across repeats (> 20%)" in text and "(grad): spread" not in text
