"""`dl1 run clip-zeroshot` end to end on tiny CIFAR files in the real format with the tiny random CLIP, plus the
figure helpers and the flag checks."""

import json

import numpy as np
import pytest
import torch

from dl1.errors import DL1Error, UsageError
from dl1.experiments import execute
from dl1.report import clip as R


def test_smoke_run_writes_metrics_and_figure_and_rebuilds_it(tmp_path):
    summary = execute("clip-zeroshot", [], smoke=True, out_dir=tmp_path, quiet=True)
    assert summary["model"]["random_weights"] and summary["data"]["synthetic"]
    train = summary["train"]
    assert train["n"] == summary["data"]["size"] == 40 and train["full_split"]
    assert 0.0 <= train["top1"] <= train["top5"] <= 100.0
    run_dir = tmp_path / "clip-zeroshot"
    figures = list(run_dir.glob("*/figures/cifar10-train_default_*.png"))
    assert len(figures) == 1 and figures[0].stat().st_size > 10_000
    records = [json.loads(line) for line in next(run_dir.glob("*/metrics.jsonl")).read_text().splitlines()]
    assert records[0]["split"] == "train" and records[0]["top1"] == train["top1"]
    per_class = json.loads(next(run_dir.glob("*/per_class.json")).read_text())
    assert list(per_class)[:2] == ["airplane", "automobile"]
    # `dl1 report` rebuilds the figure from the run folder alone
    from dl1.report.clip import zeroshot_figures as make_figures

    figures[0].unlink()
    assert make_figures(figures[0].parents[1]) == [figures[0]] and figures[0].exists()
    # a predictions.npz without one of its arrays, or a cut one, is one line naming the file (no KeyError)
    saved = figures[0].parents[1] / "predictions.npz"
    with np.load(saved) as data:
        kept = {k: data[k] for k in data.files if k != "logits"}
    np.savez(saved, **kept)
    with pytest.raises(DL1Error, match=r"predictions\.npz: no logits array"):
        make_figures(figures[0].parents[1])
    saved.write_bytes(saved.read_bytes()[:200])
    with pytest.raises(DL1Error, match="not a readable prediction file"):
        make_figures(figures[0].parents[1])


def test_top1_top5_are_sample_weighted_over_the_whole_split(tmp_path):
    """Batch size 7 over 24 test images (last batch of 3): the counts must equal a per-image recount."""
    from dl1.data.clip import load_clip_dataset
    from dl1.data.fake import write_cifar
    from dl1.experiments.runners.clip_zeroshot import evaluate
    from dl1.models.clip import ZeroshotCLIP, tiny_clip

    write_cifar(tmp_path, "cifar10", n_train=10, n_test=24, seed=3)
    clip = tiny_clip()
    ds = load_clip_dataset("cifar10", "test", clip.preprocess, tmp_path)
    model = ZeroshotCLIP(clip, ds.classes)
    loader = torch.utils.data.DataLoader(ds, batch_size=7)
    got = evaluate(model, loader, torch.device("cpu"), 10)
    with torch.no_grad():
        logits = torch.cat([model(torch.stack([ds[i][0]])) for i in range(len(ds))])
    targets = torch.tensor([ds[i][1] for i in range(len(ds))])
    top1 = 100.0 * (logits.argmax(1) == targets).float().mean().item()
    top5 = 100.0 * (logits.topk(5, 1).indices == targets[:, None]).any(1).float().mean().item()
    assert got["n"] == 24
    assert got["top1"] == pytest.approx(top1) and got["top5"] == pytest.approx(top5)


def test_batch_preprocessing_gives_the_same_numbers_as_pil(tmp_path):
    argv = ["--split", "test", "--no-visualize_predictions", "--batch_size", "7"]
    pil = execute("clip-zeroshot", [*argv, "--preprocess", "pil"], smoke=True, out_dir=tmp_path, quiet=True)
    batch = execute("clip-zeroshot", [*argv, "--preprocess", "batch"], smoke=True, out_dir=tmp_path, quiet=True)
    assert pil["test"]["preprocess"] == "pil" and batch["test"]["preprocess"] == "batch"
    for key in ("top1", "top5", "n"):
        assert pil["test"][key] == batch["test"][key]
    per_class = [json.loads(p.read_text()) for p in sorted((tmp_path / "clip-zeroshot").glob("*/per_class.json"))]
    assert per_class[0] == per_class[1]


def test_custom_class_names_only_visualise(tmp_path):
    summary = execute("clip-zeroshot", ["--class_names", "red", "green", "blue", "--split", "test",
                                        "--prompt_template", "The dominant color of the image is {}"],
                      smoke=True, out_dir=tmp_path, quiet=True)
    assert "test" not in summary and "top1" not in json.dumps(summary)
    assert summary["prompts"]["first_prompt"] == "The dominant color of the image is red"
    assert "red,green,blue" in summary["figure"]
    with np.load(next((tmp_path / "clip-zeroshot").glob("*/predictions.npz"))) as data:
        assert data["logits"].shape == (8, 3) and (data["labels"] == -1).all()


def test_ensemble_and_cifar100_and_noise(tmp_path):
    summary = execute("clip-zeroshot", ["--dataset", "cifar100", "--split", "test", "--ensemble", "cifar18",
                                        "--test_noise", "--no-visualize_predictions", "--batch_size", "5",
                                        "--max_batches", "2"],
                      smoke=True, out_dir=tmp_path, quiet=True)
    assert summary["prompts"]["templates"] == 18 and summary["prompts"]["classes"] == 100
    assert summary["data"]["test_noise"] and "figure" not in summary
    assert summary["test"]["n"] == 10 and not summary["test"]["full_split"]


@pytest.mark.parametrize("argv, message", [
    (["--prompt_template", "a photo"], "exactly once"),
    (["--class_names", "a", "a"], "distinct"),
    (["--ensemble", "imagenet81"], "invalid choice"),
    (["--dataset", "mnist"], "invalid choice"),
    (["--prompt_templat", "{}"], "did you mean --prompt_template"),
])
def test_bad_flags(tmp_path, argv, message):
    with pytest.raises(UsageError, match=message):
        execute("clip-zeroshot", argv, smoke=True, out_dir=tmp_path, quiet=True)


def test_missing_weights_and_data_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DL1Error, match="weights file not found"):
        execute("clip-zeroshot", ["--arch", "ViT-B/32", "--clip_weights", str(tmp_path / "missing.pt")],
                out_dir=tmp_path, quiet=True)
    with pytest.raises(DL1Error, match="cifar10 not found"):
        execute("clip-zeroshot", ["--arch", "tiny-test", "--data_dir", str(tmp_path / "empty")],
                out_dir=tmp_path, quiet=True)
    with pytest.raises(UsageError, match="takes no --clip_weights"):
        execute("clip-zeroshot", ["--arch", "tiny-test", "--clip_weights", "x.pt"], out_dir=tmp_path, quiet=True)


def test_top_k_probabilities_softmax_over_top_k_only():
    logits = np.array([[1.0, 5.0, 3.0, 0.0, 2.0, 4.0, -1.0]])
    probs, idx = R.top_k_probabilities(logits, 5)
    assert idx.tolist() == [[1, 5, 2, 4, 0]]
    e = np.exp(np.array([5.0, 4.0, 3.0, 2.0, 1.0]))
    assert np.allclose(probs, e / e.sum())
    probs3, idx3 = R.top_k_probabilities(logits[:, :3], 5)  # fewer classes than k
    assert probs3.shape == (1, 3) and np.isclose(probs3.sum(), 1.0)


def test_unnormalize_inverts_clip_normalisation():
    from dl1.models.clip import OPENAI_MEAN, OPENAI_STD

    assert R.OPENAI_MEAN == OPENAI_MEAN and R.OPENAI_STD == OPENAI_STD
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 3, 4, 4)).astype(np.float32)
    x = (rgb / 255.0 - np.array(OPENAI_MEAN).reshape(1, 3, 1, 1)) / np.array(OPENAI_STD).reshape(1, 3, 1, 1)
    assert np.array_equal(R.unnormalize(x), rgb.astype(np.uint8).transpose(0, 2, 3, 1))


def test_plot_predictions_writes_png(tmp_path):
    images = np.zeros((8, 16, 16, 3), dtype=np.uint8)
    logits = np.random.default_rng(0).normal(size=(8, 10))
    path = R.plot_predictions(images, logits, [f"class_{i}" for i in range(10)], tmp_path / "f.png",
                              labels=list(range(8)), title="t")
    assert path.exists() and path.stat().st_size > 5_000
