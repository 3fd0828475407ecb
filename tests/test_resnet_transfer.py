"""ResNet-18 linear probe: frozen backbone, fc init, cached = uncached, noise placement, augmentations, weights."""

from __future__ import annotations

import pytest
import torch

from dl1.config import config_to_dict
from dl1.data.augment import AUGMENTATIONS, build_transform, parse_names
from dl1.data.vision import AddGaussianNoise
from dl1.errors import DL1Error, UsageError
from dl1.experiments import execute, make_config
from dl1.experiments.runners import resnet_transfer as rt
from dl1.hub import torchvision as tv_hub
from dl1.models import resnet_probe
from dl1.report.transfer import make_figures
from dl1.run.folder import Run
from dl1.train import load_checkpoint


def _cfg(**overrides):
    return make_config("resnet-transfer", smoke=True, overrides=overrides)


def _run(tmp_path, name="r"):
    return Run("resnet-transfer", {}, directory=tmp_path / name, quiet=True)


# -- the model --------------------------------------------------------------------------------------------------------
def test_get_model_freezes_everything_but_a_fresh_fc():
    torch.manual_seed(0)
    model = resnet_probe.get_model(100)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    assert model.fc.weight.shape == (100, 512)
    assert torch.all(model.fc.bias == 0)
    assert abs(model.fc.weight.std().item() - 0.01) < 0.0005  # 51 200 draws of N(0, 0.01^2)
    assert abs(model.fc.weight.mean().item()) < 0.0005
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    assert torch.allclose(model.fc(resnet_probe.features(model, x)), model(x), atol=1e-6)


def test_training_changes_only_fc_and_leaves_the_backbone_state_dict_unchanged(tmp_path):
    cfg = _cfg(cache_features="off", epochs=1)
    run = _run(tmp_path)
    data = rt.build_data(cfg, run)
    model = resnet_probe.get_model(data.num_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rt.train_model(model, data, cfg, run, torch.device("cpu"))
    after = model.state_dict()
    backbone = [k for k in before if not k.startswith("fc.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # weights and BN running statistics
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0  # fc received gradients


def test_bn_mode_train_moves_the_running_statistics_but_no_weight(tmp_path):
    cfg = _cfg(cache_features="off", epochs=1, bn_mode="train")
    run = _run(tmp_path)
    data = rt.build_data(cfg, run)
    model = resnet_probe.get_model(data.num_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rt.train_model(model, data, cfg, run, torch.device("cpu"))
    after = model.state_dict()
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])
    assert all(torch.equal(before[k], after[k]) for k, p in model.named_parameters() if not k.startswith("fc."))


def test_cached_and_uncached_training_agree(tmp_path):
    runs = {}
    for mode in ("on", "off"):
        runs[mode] = execute("resnet-transfer", ["--cache_features", mode], smoke=True, out_dir=tmp_path / mode,
                             quiet=True)
    on, off = runs["on"], runs["off"]
    assert on["fit"]["cached_features"] and not off["fit"]["cached_features"]
    assert on["best_epoch"] == off["best_epoch"]
    assert on["best_val_acc"] == pytest.approx(off["best_val_acc"])
    assert on["test"]["acc"] == pytest.approx(off["test"]["acc"])
    fc = [load_checkpoint(f"{r['run_dir']}/checkpoints/best.pt")["modules"]["fc"] for r in (on, off)]
    for k in ("weight", "bias"):
        torch.testing.assert_close(fc[0][k], fc[1][k], atol=1e-5, rtol=1e-4)
    assert on["fit"]["feature_cache_s"] > 0 and off["fit"]["feature_cache_s"] == 0


def test_auto_cache_only_without_augmentation_and_with_eval_bn():
    assert _cfg().use_cache()
    assert not _cfg(augmentation_name="random_hflip").use_cache()
    assert not _cfg(bn_mode="train").use_cache()
    with pytest.raises(UsageError, match="cannot be cached"):
        _cfg(cache_features="on", augmentation_name="auto_augment")
    with pytest.raises(UsageError, match="unknown augmentation"):
        _cfg(augmentation_name="flip")


def test_resume_gives_the_same_fc_as_an_uninterrupted_run(tmp_path):
    full = execute("resnet-transfer", ["--epochs", "2"], smoke=True, out_dir=tmp_path / "full", quiet=True)
    part = execute("resnet-transfer", ["--epochs", "1"], smoke=True, out_dir=tmp_path / "part", quiet=True)
    resumed = execute("resnet-transfer", ["--epochs", "2", "--resume", part["run_dir"]], smoke=True,
                      out_dir=tmp_path / "part", quiet=True)
    assert resumed["run_dir"] == part["run_dir"]
    a = load_checkpoint(f"{full['run_dir']}/checkpoints/last.pt")["modules"]["fc"]
    b = load_checkpoint(f"{resumed['run_dir']}/checkpoints/last.pt")["modules"]["fc"]
    torch.testing.assert_close(a["weight"], b["weight"], atol=1e-6, rtol=1e-5)
    assert full["test"]["acc"] == pytest.approx(resumed["test"]["acc"])


# -- data: noise and augmentation placement ---------------------------------------------------------------------------
def test_noise_is_added_to_the_test_images_only(tmp_path):
    cfg = _cfg(test_noise=True)
    data = rt.build_data(cfg, _run(tmp_path))
    for ds in (data.train.dataset, data.val.dataset, data.test):
        assert not any(isinstance(t, AddGaussianNoise) for t in ds.transform.transforms)
    noisy_steps = data.test_noisy.transform.transforms
    assert isinstance(noisy_steps[-1], AddGaussianNoise) and type(noisy_steps[-2]).__name__ == "Normalize"
    assert torch.equal(data.val[0][0], data.val[0][0]) and torch.equal(data.test[0][0], data.test[0][0])
    diff = torch.stack([data.test_noisy[i][0] - data.test[i][0] for i in range(8)])
    assert diff.std().item() == pytest.approx(0.1, rel=0.05)
    assert set(data.train.indices).isdisjoint(data.val.indices)


def test_summary_reports_clean_and_noisy_test_accuracy(tmp_path):
    s = execute("resnet-transfer", ["--test_noise"], smoke=True, out_dir=tmp_path, quiet=True)
    assert 0 <= s["test"]["acc"] <= 1 and 0 <= s["test_noise"]["acc"] <= 1
    assert s["data"]["synthetic"] and s["weights"] == "random"
    assert make_figures(s["run_dir"])[0].exists()


def test_augmentations_are_placed_where_they_belong():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    for name, aug in AUGMENTATIONS.items():
        names = [type(t).__name__ for t in build_transform(224, mean, std, augmentation=name).transforms]
        stage_end = names.index("ToTensor") if aug.stage == "pil" else names.index("Normalize")
        made = type(aug.make()).__name__
        assert made in names[:stage_end], (name, names)
        if aug.stage == "tensor":
            assert names.index("ToTensor") < names.index(made)
    for name in ("random_hflip", "auto_augment", "rand_augment", "trivial_augment"):
        assert name in AUGMENTATIONS
    steps = build_transform(32, mean, std, augmentation="random_hflip,auto_augment").transforms
    assert [type(t).__name__ for t in steps[:2]] == ["RandomHorizontalFlip", "AutoAugment"]
    assert parse_names(None) == () and parse_names("none") == ()
    with pytest.raises(UsageError, match="--test_noise"):
        parse_names("test_noise")


def test_augmented_training_runs_the_full_forward(tmp_path):
    s = execute("resnet-transfer", ["--augmentation_name", "auto_augment", "--epochs", "1"], smoke=True,
                out_dir=tmp_path, quiet=True)
    assert not s["fit"]["cached_features"]


# -- weights -----------------------------------------------------------------------------------------------------------
def test_missing_weights_offline_fail_fast_with_the_file_and_folder(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("DL1_OFFLINE", "1")
    with pytest.raises(DL1Error) as info:
        tv_hub.resnet18_state_dict("imagenet")
    assert no_network == []  # fails at once: no download attempt
    msg = str(info.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "torch_home" / "hub" / "checkpoints") in msg
    assert "--weights PATH" in msg and "\n" not in msg
    with pytest.raises(DL1Error, match="resnet18-f37072fd.pth"):
        execute("resnet-transfer", ["--weights", "imagenet"], smoke=True, out_dir=tmp_path / "runs", quiet=True)


def test_weights_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    source = resnet_probe.build_resnet18()
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    model = resnet_probe.get_model(10, tv_hub.resnet18_state_dict(str(path)))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 10
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(DL1Error, match="not a torchvision ResNet-18"):
        resnet_probe.get_model(10, tv_hub.resnet18_state_dict(str(tmp_path / "bad.pth")))
    with pytest.raises(DL1Error, match="file not found"):
        tv_hub.check_weights(str(tmp_path / "missing.pth"))


def test_weights_found_in_the_torch_hub_cache_are_used_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("DL1_OFFLINE", "1")
    torch.manual_seed(2)
    source = resnet_probe.build_resnet18()
    tv_hub.weights_file().parent.mkdir(parents=True)
    torch.save(source.state_dict(), tv_hub.weights_file())
    model = resnet_probe.get_model(100, tv_hub.resnet18_state_dict("imagenet"))
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_config_round_trip_has_the_course_flags():
    d = config_to_dict(make_config("resnet-transfer"))
    assert (d["lr"], d["batch_size"], d["epochs"], d["seed"], d["dataset"]) == (0.001, 128, 30, 123, "cifar100")
    assert d["augmentation_name"] is None and d["test_noise"] is False and d["bn_mode"] == "eval"


# -- data parallel and precision --------------------------------------------------------------------------------------
def test_bf16_smoke_trains_like_fp32_tests_in_bf16_and_fp16_needs_cuda(tmp_path, monkeypatch):
    from pathlib import Path

    from dl1.cli import main
    from dl1.run.files import read_jsonl

    calls = []
    accuracy = rt.accuracy

    def recording(model, dataset, cfg, device):
        calls.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return accuracy(model, dataset, cfg, device)

    monkeypatch.setattr(rt, "accuracy", recording)
    runs = {p: execute("resnet-transfer", ["--precision", p, "--test_noise"], smoke=True, out_dir=tmp_path / p,
                       quiet=True) for p in ("fp32", "bf16")}
    assert calls == [False, False, True, True]  # cached features: accuracy() only scores test and noisy test
    bf16 = runs["bf16"]
    losses = {p: [r["loss"] for r in read_jsonl(Path(s["run_dir"]) / "metrics.jsonl") if r["split"] == "train"]
              for p, s in runs.items()}
    assert len(losses["bf16"]) == 2 and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.01)  # measured 1e-4
    assert bf16["test"] == runs["fp32"]["test"] and bf16["fit"]["cached_features"]
    if not torch.cuda.is_available():
        assert main(["run", "resnet-transfer", "--smoke", "--precision", "fp16", "--out_dir", str(tmp_path / "h")]) == 2
