"""clip-prompt and clip-cross-dataset end to end on a tiny random CLIP and tiny fake CIFAR files."""

import json
import math
from pathlib import Path

import pytest
import torch

from dl1.errors import UsageError
from dl1.experiments import execute

QUIET = {"visualize_prompt": False, "test_noise": False}


@pytest.fixture(scope="module")
def vp_run(tmp_path_factory):
    """The smoke run: padding prompt, figures and noisy test set on."""
    out = tmp_path_factory.mktemp("runs")
    return execute("clip-prompt", [], smoke=True, out_dir=out, quiet=True)


def prompt_state(run_dir, name="last.pt"):
    from dl1.train import load_checkpoint

    return load_checkpoint(Path(run_dir) / "checkpoints" / name)["modules"]["prompt"]


def test_schedule_values_at_step_0_warmup_end_and_last_step():
    from dl1.experiments.clip_prompt import Config
    from dl1.experiments.runners.clip_prompt import make_optimizer

    class Model:  # the optimiser only needs the trainable parameters
        def trainable_parameters(self):
            return [("prompt_learner.p", torch.nn.Parameter(torch.zeros(3)))]

    cfg = Config(learning_rate=40.0, warmup=10, epochs=3)
    opt, sched = make_optimizer(cfg, Model(), steps_per_epoch=10)  # 30 steps in all
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # the course's cosine_lr: base*(step+1)/warmup, then 0.5*(1+cos(pi*(step-warmup)/(total-warmup)))*base
    assert lrs[0] == pytest.approx(4.0)
    assert lrs[9] == pytest.approx(40.0)
    assert lrs[10] == pytest.approx(40.0)
    assert lrs[29] == pytest.approx(0.5 * (1 + math.cos(math.pi * 19 / 20)) * 40.0)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 0.0


def test_defaults_are_the_course_recipe():
    from dl1.experiments.clip_prompt import Config

    cfg = Config()
    assert (cfg.learning_rate, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.warmup) == (40.0, 0.9, 0.0, 128,
                                                                                                 1000)
    assert (cfg.prompt_size, cfg.image_size, cfg.prompt_num, cfg.val_size) == (30, 224, 4, 10_000)


def test_training_loss_falls_on_a_fixed_batch_with_the_course_optimiser():
    from dl1.experiments.clip_prompt import Config
    from dl1.experiments.runners.clip_prompt import make_optimizer
    from dl1.models.clip import tiny_clip
    from dl1.models.prompt_clip import DeepPromptCLIP, VisualPromptCLIP
    from dl1.models.prompters import PadPrompter

    clip = tiny_clip(image_size=32)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 4, (8,), generator=g)
    text = torch.randn(4, 32, generator=g)
    for model in (VisualPromptCLIP(clip.model, text, PadPrompter(6, 32)), DeepPromptCLIP(clip.model, text, 4, 1)):
        opt, sched = make_optimizer(Config(warmup=5, epochs=1), model, steps_per_epoch=25)  # lr 40, momentum 0.9
        losses = []
        for _ in range(25):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5, (type(model).__name__, losses)


def test_smoke_run_reports_best_checkpoint_accuracies_and_writes_figures(vp_run):
    run_dir = Path(vp_run["run_dir"])
    assert vp_run["clip"]["random_weights"] and vp_run["data"]["synthetic"]
    assert set(vp_run["results"]) == {"val", "test", "test_noisy"}
    assert vp_run["data"]["sizes"] == {"train": 32, "val": 16, "test": 24, "test_noisy": 24}
    assert vp_run["params"]["trainable"] == 2 * 3 * 8 * 64 + 2 * 3 * 48 * 8
    for name in ("init.pt", "last.pt", "best.pt"):
        assert (run_dir / "checkpoints" / name).exists()
    for name in ("prompt_before.png", "prompt_after.png", "prompt_curves.png"):
        assert (run_dir / "figures" / name).stat().st_size > 1000
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = {r["epoch"]: r["top1"] for r in records if r["split"] == "val"}
    # the reported validation accuracy is the best epoch's, re-measured with the best checkpoint
    assert summary["results"]["val"]["top1"] == pytest.approx(val[summary["best_epoch"]])
    assert summary["results"]["val"]["top1"] == pytest.approx(max(val.values()))
    best, init = prompt_state(run_dir, "best.pt"), prompt_state(run_dir, "init.pt")
    assert any(not torch.equal(best[k], init[k]) for k in best)
    # the checkpoint holds only the prompt
    assert set(best) == {"pad_up", "pad_down", "pad_left", "pad_right"}


def test_evaluate_reports_clean_and_noisy_test_accuracy(vp_run, tmp_path):
    ckpt = str(Path(vp_run["run_dir"]) / "checkpoints" / "best.pt")
    out = execute("clip-prompt", ["--evaluate", "--resume", ckpt, "--test_noise", "--method", "fixed_patch"],
                  smoke=True, out_dir=tmp_path, quiet=True)
    assert out["results"]["test"]["top1"] == pytest.approx(vp_run["results"]["test"]["top1"])
    assert out["results"]["test_noisy"]["top1"] == pytest.approx(vp_run["results"]["test_noisy"]["top1"])
    assert out["results"]["noise_drop"] == pytest.approx(out["results"]["test"]["top1"]
                                                         - out["results"]["test_noisy"]["top1"])
    assert out["params"]["trainable"] == vp_run["params"]["trainable"]  # structure from the checkpoint


def test_batch_preprocessing_evaluates_exactly_like_pil_and_trains(vp_run, tmp_path):
    ckpt = str(Path(vp_run["run_dir"]) / "checkpoints" / "best.pt")
    out = execute("clip-prompt", ["--evaluate", "--resume", ckpt, "--preprocess", "batch", "--no-test_noise"],
                  smoke=True, out_dir=tmp_path, quiet=True)
    assert out["data"]["preprocess"] == "batch" and vp_run["data"]["preprocess"] == "pil"
    assert out["results"]["test"]["top1"] == pytest.approx(vp_run["results"]["test"]["top1"])
    assert out["results"]["test"]["loss"] == pytest.approx(vp_run["results"]["test"]["loss"], rel=1e-5)
    # training from raw uint8 batches (its own seeded shuffle order, so not the PIL run's numbers)
    trained = execute("clip-prompt", ["--preprocess", "batch", "--no-visualize_prompt"], smoke=True,
                      out_dir=tmp_path, quiet=True)
    assert trained["data"]["preprocess"] == "batch" and trained["steps"] == vp_run["steps"]
    assert set(trained["results"]) == {"val", "test", "test_noisy"}
    assert all(math.isfinite(trained["results"][s]["loss"]) for s in trained["results"])


def test_evaluate_needs_a_checkpoint_file(tmp_path):
    with pytest.raises(UsageError, match="needs --resume"):
        execute("clip-prompt", ["--evaluate"], smoke=True, out_dir=tmp_path, quiet=True)
    with pytest.raises(UsageError, match="checkpoint file, not a run folder"):
        execute("clip-prompt", ["--evaluate", "--resume", str(tmp_path)], smoke=True, out_dir=tmp_path, quiet=True)


def test_injection_layer_past_the_last_block_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"injection_layer must be in \[0, 1\]"):
        execute("clip-prompt", ["--prompt_type", "deep_prompt", "--injection_layer", "2"], smoke=True,
                out_dir=tmp_path, quiet=True, overrides=QUIET)


def test_deep_prompt_run_trains_only_the_tokens(tmp_path):
    out = execute("clip-prompt", ["--prompt_type", "deep_prompt", "--injection_layer", "1", "--prompt_num", "3"],
                  smoke=True, out_dir=tmp_path, quiet=True, overrides={"test_noise": False})
    assert out["params"]["trainable"] == 3 * 64
    state = prompt_state(out["run_dir"], "best.pt")
    assert set(state) == {"deep_prompt"} and state["deep_prompt"].shape == (3, 1, 64)
    assert (Path(out["run_dir"]) / "figures" / "prompt_after.png").exists()


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    import dl1.models.prompt_clip as cp  # the evaluation loop the run calls

    args = ["--method", "random_patch", "--prompt_size", "4", "--epochs", "3"]
    full = execute("clip-prompt", args, smoke=True, out_dir=tmp_path / "full", quiet=True, overrides=QUIET)

    calls = {"n": 0}
    real = cp.evaluate

    def interrupt_in_epoch_3(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # the validation of epoch 3: epochs 1 and 2 are checkpointed
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(cp, "evaluate", interrupt_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        execute("clip-prompt", args, smoke=True, out_dir=tmp_path / "cut", quiet=True, overrides=QUIET)
    monkeypatch.setattr(cp, "evaluate", real)
    cut_dir = next((tmp_path / "cut" / "clip-prompt").iterdir())
    from dl1.train import load_checkpoint

    assert load_checkpoint(cut_dir / "checkpoints" / "last.pt")["epoch"] == 2
    resumed = execute("clip-prompt", [*args, "--resume", str(cut_dir)], smoke=True, out_dir=tmp_path / "cut",
                      quiet=True, overrides=QUIET)
    assert resumed["run_dir"] == str(cut_dir) and resumed["epochs_run"] == 3 and resumed["steps"] == full["steps"]
    a, b = prompt_state(full["run_dir"]), prompt_state(cut_dir)
    assert torch.equal(a["patch"], b["patch"])
    assert torch.equal(a["_extra_state"], b["_extra_state"])  # the random-patch generator went on where it stopped
    epochs = [r["epoch"] for r in map(json.loads, (cut_dir / "metrics.jsonl").read_text().splitlines())
              if r["split"] == "train"]
    assert epochs == [1, 2, 3]
    assert resumed["results"]["test"]["top1"] == pytest.approx(full["results"]["test"]["top1"])


def test_resume_with_another_prompt_is_refused(vp_run, tmp_path):
    from dl1.errors import DL1Error

    with pytest.raises(DL1Error, match="--method padding"):
        execute("clip-prompt", ["--method", "fixed_patch", "--resume", vp_run["run_dir"] + "/checkpoints/last.pt"],
                smoke=True, out_dir=tmp_path, quiet=True, overrides=QUIET)


def test_cross_dataset_offsets_cifar100_labels_by_10(vp_run, tmp_path):
    from dl1.data.clip import OffsetTargets
    from dl1.experiments.clip_cross_dataset import weighted_total

    base = [(torch.zeros(1), k) for k in (0, 5, 99)]
    assert [t for _, t in OffsetTargets(base, 10)] == [10, 15, 109]
    total = weighted_total({"a": {"top1": 50.0, "loss": 1.0, "n": 10}, "b": {"top1": 80.0, "loss": 2.0, "n": 30}})
    assert total == {"top1": 72.5, "loss": 1.75, "n": 40}

    ckpt = str(Path(vp_run["run_dir"]) / "checkpoints" / "best.pt")
    out = execute("clip-cross-dataset", ["--resume", ckpt], smoke=True, out_dir=tmp_path, quiet=True)
    assert out["num_classes"] == 110 and out["trained_on"] == "cifar10" and out["synthetic"]
    r = out["results"]
    assert r["cifar10"]["n"] == r["cifar100"]["n"] == 24
    assert r["total"]["top1"] == pytest.approx((r["cifar10"]["top1"] * 24 + r["cifar100"]["top1"] * 24) / 48)


def test_cross_dataset_labels_and_class_names_line_up(tmp_path):
    from dl1.data.fake import write_cifar
    from dl1.experiments.clip_cross_dataset import Config
    from dl1.experiments.runners.clip_cross_dataset import load_parts
    from dl1.run.folder import Run

    for name in ("cifar10", "cifar100"):
        write_cifar(tmp_path / "data", name, n_train=5, n_test=12)
    run = Run("x", root=tmp_path / "runs", quiet=True)
    cfg = Config(resume="x", data_dir=str(tmp_path / "data"))
    parts, classes = load_parts(cfg, lambda img: torch.zeros(1), run)
    assert len(classes) == 110 and classes[0] == "airplane" and classes[10] == "class_00"
    raw = parts["cifar100"].dataset.targets
    assert [parts["cifar100"][i][1] for i in range(12)] == [t + 10 for t in raw]
    assert [parts["cifar10"][i][1] for i in range(12)] == parts["cifar10"].dataset.targets
    # batch preprocessing on the device: the same offsets on the raw label tensors
    batch_parts, _ = load_parts(cfg, lambda img: torch.zeros(1), run, batch=(torch.nn.Identity(), None))
    assert batch_parts["cifar100"].targets.tolist() == [t + 10 for t in raw]
    assert batch_parts["cifar10"].targets.tolist() == parts["cifar10"].dataset.targets


def test_cross_dataset_needs_a_checkpoint(tmp_path):
    with pytest.raises(UsageError, match="--resume CKPT is required"):
        execute("clip-cross-dataset", [], out_dir=tmp_path, quiet=True)
    with pytest.raises(UsageError, match="checkpoint file, not a run folder"):
        execute("clip-cross-dataset", ["--resume", str(tmp_path)], out_dir=tmp_path, quiet=True)


def test_bf16_smoke_run_on_cpu_trains_a_float32_prompt_near_fp32(vp_run, tmp_path):
    """dl1 run clip-prompt --smoke --precision bf16: trains, validates and tests under bfloat16 autocast (the CLIP
    stays float32 on the CPU); the prompt stays float32 and the losses stay near the fp32 smoke run's."""
    out = execute("clip-prompt", ["--precision", "bf16"], smoke=True, out_dir=tmp_path, quiet=True)
    config = json.loads((Path(out["run_dir"]) / "config.json").read_text())
    assert config["precision"] == "bf16" and "amp" not in config
    assert set(out["results"]) == {"val", "test", "test_noisy"} and out["steps"] == vp_run["steps"]
    for split in out["results"]:
        assert abs(out["results"][split]["loss"] - vp_run["results"][split]["loss"]) < 0.05, split
    assert all(t.dtype == torch.float32 for t in prompt_state(out["run_dir"], "best.pt").values()
               if t.is_floating_point())


def test_fp16_without_cuda_is_refused_before_any_run_folder(tmp_path):
    with pytest.raises(UsageError, match="--precision fp16 needs a CUDA device"):
        execute("clip-prompt", ["--precision", "fp16", "--device", "cpu"], smoke=True, out_dir=tmp_path, quiet=True)
    with pytest.raises(UsageError, match="--precision fp16 needs a CUDA device"):
        execute("clip-cross-dataset", ["--precision", "fp16", "--device", "cpu"], smoke=True, out_dir=tmp_path,
                quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_evaluate_under_torchrun_is_refused(vp_run, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; refused before the process group is joined
    ckpt = str(Path(vp_run["run_dir"]) / "checkpoints" / "best.pt")
    with pytest.raises(UsageError, match="--evaluate scores a checkpoint in one process"):
        execute("clip-prompt", ["--evaluate", "--resume", ckpt], smoke=True, out_dir=tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_of_an_older_run_with_amp_still_evaluates(vp_run, tmp_path, capsys):
    from dl1.train import load_checkpoint, save_checkpoint

    state = load_checkpoint(Path(vp_run["run_dir"]) / "checkpoints" / "best.pt")
    config = state["extra"]["config"]
    config.pop("precision")
    config["amp"] = True  # what runs before --precision saved
    save_checkpoint(tmp_path / "old.pt", state)
    out = execute("clip-prompt", ["--evaluate", "--resume", str(tmp_path / "old.pt"), "--test_noise"], smoke=True,
                  out_dir=tmp_path / "runs", quiet=True)
    assert out["results"]["test"]["top1"] == pytest.approx(vp_run["results"]["test"]["top1"])
    assert out["results"]["test"]["loss"] == pytest.approx(vp_run["results"]["test"]["loss"], rel=1e-6)
    assert "ignoring amp" in capsys.readouterr().err
