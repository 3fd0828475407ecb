"""The CLIP prompting analysis: evaluation on the checkpoint's own data, the robustness table, the visual- and
deep-prompt figures, the cross-dataset table, the comparison table's columns and sweeps passing flags through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dl1.errors import UsageError
from dl1.experiments import execute
from dl1.report.cli import main as report_main

QUIET = ["--epochs", "1", "--no-visualize_prompt"]


@pytest.fixture(scope="module")
def cifar10_prompt(tmp_path_factory):
    """A smoke padding prompt learnt on (fake) CIFAR-10, test set evaluated clean and noisy."""
    return execute("clip-prompt", QUIET, smoke=True, out_dir=tmp_path_factory.mktemp("train"), quiet=True)


def _ckpt(summary) -> str:
    return str(Path(summary["run_dir"]) / "checkpoints" / "best.pt")


# -- item 1: an evaluation uses the data the checkpoint was trained on -----------------------------------------------
def test_evaluate_scores_the_prompt_on_the_dataset_it_was_trained_on(cifar10_prompt, tmp_path):
    """The README's robustness command without --smoke: before, it scored the CIFAR-10 prompt on CIFAR-100."""
    out = execute("clip-prompt", ["--evaluate", "--resume", _ckpt(cifar10_prompt), "--test_noise", "--num_workers",
                                  "0"], out_dir=tmp_path, quiet=True)
    assert out["data"]["dataset"] == "cifar10" and out["data"]["classes"] == 10 and out["data"]["synthetic"]
    assert out["trained_on"] == "cifar10" and "transfer" not in out
    assert out["results"]["test"]["top1"] == pytest.approx(cifar10_prompt["results"]["test"]["top1"])
    assert out["results"]["test"]["loss"] == pytest.approx(cifar10_prompt["results"]["test"]["loss"], rel=1e-5)
    assert out["results"]["test_noisy"]["loss"] == pytest.approx(cifar10_prompt["results"]["test_noisy"]["loss"],
                                                                 rel=1e-5)
    config = json.loads((Path(out["run_dir"]) / "config.json").read_text())
    assert config["dataset"] == "cifar10" and config["synthetic_data"] is True and config["test_noise"] is True
    assert config["text_prompt_template"] == "This is a photo of a {}" and config["evaluate"] is True
    for unused in ("epochs", "learning_rate", "warmup", "val_size", "patience"):
        assert unused not in config  # training settings the evaluation never used


def test_smoke_evaluation_of_a_cifar100_prompt_stays_on_cifar100(tmp_path):
    trained = execute("clip-prompt", [*QUIET, "--dataset", "cifar100", "--no-test_noise"], smoke=True,
                      out_dir=tmp_path / "train", quiet=True)
    out = execute("clip-prompt", ["--evaluate", "--resume", _ckpt(trained)], smoke=True, out_dir=tmp_path / "eval",
                  quiet=True)
    assert out["data"]["dataset"] == "cifar100" and out["data"]["classes"] == 100
    assert out["results"]["test"]["loss"] == pytest.approx(trained["results"]["test"]["loss"], rel=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--synthetic_data", "--dataset", "cifar100"], r"--dataset cifar100 contradicts .* trained with --dataset "
                                                    r"cifar10: drop the flag, or add --transfer"),
    (["--synthetic_data", "--text_prompt_template", "a photo of {}"], "--text_prompt_template 'a photo of {}' "
                                                                       "contradicts"),
    (["--no-synthetic_data"], r"--no-synthetic_data contradicts .* trained with --synthetic_data"),
])
def test_a_flag_contradicting_the_checkpoint_is_one_line_and_leaves_no_folder(cifar10_prompt, tmp_path, flags,
                                                                              message):
    with pytest.raises(UsageError, match=message) as info:
        execute("clip-prompt", ["--evaluate", "--resume", _ckpt(cifar10_prompt), *flags], out_dir=tmp_path,
                quiet=True)
    assert "\n" not in str(info.value)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_transfer_scores_another_dataset_on_purpose_and_says_so(cifar10_prompt, tmp_path):
    out = execute("clip-prompt", ["--evaluate", "--resume", _ckpt(cifar10_prompt), "--dataset", "cifar100",
                                  "--transfer", "--synthetic_data", "--num_workers", "0"], out_dir=tmp_path,
                  quiet=True)
    assert out["transfer"] == {"trained_on": {"dataset": "cifar10"}, "evaluated_on": {"dataset": "cifar100"}}
    assert out["data"]["dataset"] == "cifar100" and out["data"]["classes"] == 100
    config = json.loads((Path(out["run_dir"]) / "config.json").read_text())
    assert config["dataset"] == "cifar100" and config["transfer"] is True
    with pytest.raises(UsageError, match="--transfer needs --dataset"):
        execute("clip-prompt", ["--evaluate", "--resume", _ckpt(cifar10_prompt), "--transfer"], smoke=True,
                out_dir=tmp_path, quiet=True)
    with pytest.raises(UsageError, match="--transfer only applies to --evaluate"):
        execute("clip-prompt", ["--transfer"], smoke=True, out_dir=tmp_path, quiet=True)


def test_training_defaults_are_written_to_config_json(cifar10_prompt):
    from dl1.experiments.clip_prompt import Config

    assert (Config().dataset, Config().synthetic_data) == ("cifar100", False)
    assert Config(synthetic_data=True).dataset == "cifar10"  # the smoke size
    assert Config(evaluate=True, resume="x").dataset is None  # taken from the checkpoint
    config = json.loads((Path(cifar10_prompt["run_dir"]) / "config.json").read_text())
    assert config["dataset"] == "cifar10" and config["text_prompt_template"] == "This is a photo of a {}"


# -- item 2: the comparison table keeps every column ------------------------------------------------------------------
def write_run(folder: Path, config: dict, summary: dict) -> Path:
    """A finished run folder (config.json + summary.json), as the experiments write them."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "summary.json").write_text(json.dumps({"experiment": config["experiment"], **summary}))
    return folder


def prompt_run(root: Path, name: str, dataset: str, clean: float, noisy: float | None, arch: str = "ViT-B/32",
               **config) -> Path:
    cfg = {"experiment": "clip-prompt", "prompt_type": "visual_prompt", "method": "padding", "prompt_size": 30,
           "prompt_num": 4, "injection_layer": 0, "arch": arch, "image_size": 224, "dataset": dataset,
           "synthetic_data": False, **config}
    results = {"val": {"top1": clean + 1, "loss": 0.5, "n": 10000}, "test": {"top1": clean, "loss": 0.6, "n": 10000}}
    if noisy is not None:
        results["test_noisy"] = {"top1": noisy, "loss": 0.9, "n": 10000}
    return write_run(root / name, cfg, {"results": results, "clip": {"arch": arch, "random_weights": False},
                                        "data": {"dataset": dataset, "synthetic": False}, "best_epoch": 3,
                                        "params": {"trainable": 69840, "frozen": 151277313}})


def test_comparison_of_resnet_and_clip_runs_keeps_every_column(tmp_path):
    from dl1.report.runs import compare_runs, flatten

    resnet = write_run(tmp_path / "resnet", {"experiment": "resnet-transfer", "dataset": "cifar100",
                                             "augmentation_name": None, "weights": "imagenet"},
                       {"test": {"acc": 0.58}, "test_noise": {"acc": 0.26}, "best_epoch": 7, "best_val_acc": 0.6,
                        "fit": {f"stat_{i}": float(i) for i in range(10)}, "num_classes": 100})
    clip = prompt_run(tmp_path, "clip", "cifar100", 72.0, 63.0)
    out = compare_runs([resnet, clip], tmp_path / "comparison.md")
    text = out.read_text()
    keys = {k for d in (resnet, clip) for k, v in flatten(json.loads((d / "summary.json").read_text())).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "wall_time_s"}
    assert len(keys) > 12
    for key in keys:  # before: only the first 12 numeric columns survived, results.test_noisy.top1 among the lost
        assert key in text, key
    assert "results.test_noisy.top1" in text and "test_noise.acc" in text


# -- items 2 and 3: the robustness table, the two figures, the cross-dataset table ------------------------------------
@pytest.fixture(scope="module")
def course_runs(tmp_path_factory):
    """Run folders with realistic numbers (CLIP ViT-B/32 on real data) for every kind of row."""
    root = tmp_path_factory.mktemp("course")
    zs = {"experiment": "clip-zeroshot", "arch": "ViT-B/32", "split": "test", "prompt_template":
          "This is a photo of a {}", "ensemble": None, "synthetic_data": False}
    for dataset, clean, noisy in (("cifar10", 88.9, 80.1), ("cifar100", 63.1, 50.2)):
        for noise, top1 in ((False, clean), (True, noisy)):
            write_run(root / f"zs-{dataset}-{noise}", {**zs, "dataset": dataset, "test_noise": noise},
                      {"test": {"top1": top1, "top5": 99.0, "n": 10000}, "model": {"random_weights": False}})
    write_run(root / "resnet", {"experiment": "resnet-transfer", "dataset": "cifar100", "augmentation_name": None,
                                "weights": "imagenet"}, {"test": {"acc": 0.5849}, "test_noise": {"acc": 0.2554}})
    for dataset, values in (("cifar10", {"padding": (93.0, 88.7), "fixed_patch": (89.5, 87.9),
                                         "random_patch": (90.1, 86.0)}),
                            ("cifar100", {"padding": (72.3, 63.6), "fixed_patch": (64.4, 60.5),
                                          "random_patch": (65.0, 58.1)})):
        for method, (clean, noisy) in values.items():
            prompt_run(root, f"vp-{method}-{dataset}", dataset, clean, noisy, method=method,
                       prompt_size=30 if method == "padding" else 1)
    for dataset, base in (("cifar10", 96.0), ("cifar100", 79.0)):
        for layer in (0, 2, 4, 6, 8, 10):
            prompt_run(root, f"dp-{layer}-{dataset}", dataset, base - 0.4 * layer, base - 0.4 * layer - 9,
                       prompt_type="deep_prompt", injection_layer=layer)
    # a training run without noise whose checkpoint was evaluated with noise: the evaluation stands for it
    trained = prompt_run(root, "dp-11-cifar10", "cifar10", 90.0, None, prompt_type="deep_prompt", injection_layer=11)
    prompt_run(root, "eval-11", "cifar10", 90.0, 81.0, prompt_type="deep_prompt", injection_layer=11, evaluate=True)
    summary = json.loads((root / "eval-11" / "summary.json").read_text())
    summary["checkpoint"] = str(trained / "checkpoints" / "best.pt")
    (root / "eval-11" / "summary.json").write_text(json.dumps(summary))
    for kind, key, trained_on, total in (("visual_prompt", ("padding", 30, 0), "cifar10", 67.0),
                                         ("visual_prompt", ("fixed_patch", 1, 0), "cifar100", 68.0),
                                         ("deep_prompt", ("padding", 30, 2), "cifar100", 77.5)):
        prompt = {"prompt_type": kind, "method": key[0], "prompt_size": key[1], "injection_layer": key[2],
                  "prompt_num": 4}
        write_run(root / f"cross-{kind}-{key[0]}-{trained_on}", {"experiment": "clip-cross-dataset",
                                                                "test_noise": False},
                  {"results": {"cifar10": {"top1": total + 5}, "cifar100": {"top1": total - 5},
                               "total": {"top1": total}}, "trained_on": trained_on, "prompt": prompt,
                   "synthetic": False, "clip": {"arch": "ViT-B/32", "random_weights": False}})
    return root


def test_robustness_table_pairs_runs_and_shows_the_reference_where_it_exists(course_runs):
    from dl1.report.robustness import robustness_rows, robustness_table
    from dl1.report.runs import read_run

    rows = robustness_rows([read_run(d) for d in sorted(course_runs.iterdir())])
    by = {(r.method, r.dataset): r for r in rows}
    zs = by["CLIP zero-shot (test split)", "cifar100"]
    assert (zs.clean, zs.noisy, zs.ref_clean, zs.ref_noisy) == (63.1, 50.2, 63.13, None)
    assert zs.drop == pytest.approx(12.9)
    resnet = by["ResNet-18 linear probe", "cifar100"]
    assert (resnet.clean, resnet.noisy) == pytest.approx((58.49, 25.54)) and resnet.ref_drop == pytest.approx(32.95)
    pad = by["visual prompt: padding 30", "cifar10"]
    assert (pad.ref_clean, pad.ref_noisy) == (93.02, 88.69)
    assert by["visual prompt: fixed patch 1", "cifar100"].ref_clean == 64.42
    assert by["visual prompt: random patch 1", "cifar10"].ref_clean is None  # the reference has no such run
    assert by["deep prompt: layer 4 (4 tokens)", "cifar100"].ref_clean == 79.79
    assert by["deep prompt: layer 4 (4 tokens)", "cifar100"].ref_noisy == "≈ 66–71"
    layer11 = [r for r in rows if r.layer == 11]
    assert len(layer11) == 1 and layer11[0].noisy == 81.0 and "evaluates dp-11-cifar10" in layer11[0].runs[0]
    assert [r.family for r in rows][:3] == ["zeroshot", "zeroshot", "resnet"]
    table = robustness_table(rows)
    assert "| visual prompt: padding 30 | CIFAR-10 | 93.00 | 88.70 | 4.30 | 93.02 | 88.69 | 4.33 |" in table
    assert len(table.splitlines()) >= len(rows) + 2


def test_smoke_rows_get_no_reference(tmp_path):
    from dl1.report.robustness import robustness_rows
    from dl1.report.runs import read_run

    run = prompt_run(tmp_path, "smoke", "cifar10", 10.0, 5.0, arch="tiny-test")
    (row,) = robustness_rows([read_run(run)])
    assert row.smoke and row.ref_clean is None


def test_report_writes_the_tables_and_both_figures(course_runs, tmp_path, capsys):
    out = tmp_path / "report.md"
    assert report_main([str(course_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## Robustness to noise" in printed and "| ResNet-18 linear probe | CIFAR-100 |" in printed
    text = out.read_text()
    assert "![visual prompts](figures/visual_prompts.png)" in text
    assert "![deep prompts by injection layer](figures/deep_prompts.png)" in text
    for name in ("visual_prompts.png", "deep_prompts.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 10_000
    cross = text[text.index("## Cross-dataset"):]
    assert "| visual prompt: padding 30 | CIFAR-10 | 72.00 | 62.00 | 67.00 | 67.58 |" in cross
    assert "| deep prompt: layer 2 (4 tokens) | CIFAR-100 | 82.50 | 72.50 | 77.50 | 77.81 |" in cross
    assert "fixed patch 1 | CIFAR-100 |" in cross


# -- the acceptance check: smoke runs of every prompt kind on both datasets, then dl1 report ---------------------------
def smoke_runs(root: Path) -> None:
    """Three visual prompts and two deep-prompt layers on both (fake) datasets; the visual prompts evaluate their
    test set clean and noisy themselves, the deep prompts are evaluated from their checkpoints with --test_noise."""
    for dataset in ("cifar10", "cifar100"):
        for method in ("padding", "fixed_patch", "random_patch"):
            execute("clip-prompt", [*QUIET, "--method", method, "--dataset", dataset], smoke=True,
                    run_dir=root / "vp" / f"{method}-{dataset}", quiet=True)
        for layer in (0, 1):
            trained = execute("clip-prompt", [*QUIET, "--prompt_type", "deep_prompt", "--injection_layer",
                                              str(layer), "--dataset", dataset, "--no-test_noise"], smoke=True,
                              run_dir=root / "dp" / f"layer{layer}-{dataset}", quiet=True)
            execute("clip-prompt", ["--evaluate", "--resume", _ckpt(trained), "--test_noise"], smoke=True,
                    run_dir=root / "evals" / f"layer{layer}-{dataset}", quiet=True)


def check_smoke_report(root: Path, out: Path) -> None:
    text = out.read_text()
    table = text[text.index("## Robustness"):text.index("## All runs")]
    rows = [line for line in table.splitlines() if line.startswith("| visual prompt") or
            line.startswith("| deep prompt")]
    assert len(rows) == 10 and all("(smoke)" in r for r in rows)
    assert all(r.split("|")[4].strip() != "—" for r in rows)  # every row has its noisy number
    assert sum("evaluates layer" in r for r in rows) == 4  # the evaluations replaced their training runs
    for name in ("visual_prompts.png", "deep_prompts.png"):
        assert (out.parent / "figures" / name).stat().st_size > 10_000


def test_smoke_prompts_on_both_datasets_then_report(tmp_path):
    smoke_runs(tmp_path)
    out = tmp_path / "analysis" / "report.md"
    assert report_main([str(tmp_path / d) for d in ("vp", "dp", "evals")] + ["--out", str(out)]) == 0
    check_smoke_report(tmp_path, out)


@pytest.mark.slow  # about ten fresh interpreters
def test_smoke_sweeps_through_the_command_line_then_report(tmp_path):
    from dl1.sweep import main as sweep_main

    assert sweep_main(["clip-prompt", "--grid", "method=padding,fixed_patch,random_patch", "--grid",
                       "dataset=cifar10,cifar100", "--sweep_dir", str(tmp_path / "vp"), "--jobs", "2", "--",
                       "--smoke", *QUIET]) == 0
    assert sweep_main(["clip-prompt", "--grid", "injection_layer=0,1", "--grid", "dataset=cifar10,cifar100",
                       "--sweep_dir", str(tmp_path / "dp"), "--jobs", "2", "--", "--smoke", "--prompt_type",
                       "deep_prompt", *QUIET]) == 0
    out = tmp_path / "analysis" / "report.md"
    assert report_main([str(tmp_path / "vp"), str(tmp_path / "dp"), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("(smoke) |") >= 10 and (out.parent / "figures" / "deep_prompts.png").exists()


# -- item 4: sweeps pass flags through --------------------------------------------------------------------------------
def test_sweep_passes_run_flags_through(tmp_path):
    from dl1.sweep import main as sweep_main

    sweep_dir = tmp_path / "s"
    assert sweep_main(["gnn", "--grid", "seed=3", "--sweep_dir", str(sweep_dir), "--", "--smoke",
                       "--max_walk_length", "2"]) == 0
    from dl1.config import config_to_dict
    from dl1.experiments import make_config

    config = json.loads((sweep_dir / "seed=3" / "config.json").read_text())
    smoke = config_to_dict(make_config("gnn", ["--max_walk_length", "2", "--seed", "3"], smoke=True))
    assert config == {"experiment": "gnn", **smoke} and config != {"experiment": "gnn", **config_to_dict(
        make_config("gnn", ["--max_walk_length", "2", "--seed", "3"]))}  # the smoke sizes were used
    assert json.loads((sweep_dir / "sweep.json").read_text())["extra"] == ["--smoke", "--max_walk_length", "2"]


@pytest.mark.parametrize("extra, message", [
    (["--seed", "3"], "--seed is both a --grid key and a flag after --"),
    (["--out_dir", "x"], "--out_dir cannot be given to the runs of a sweep"),
    (["--smoke", "--no_such_flag", "1"], "unknown flag --no_such_flag"),
])
def test_sweep_refuses_conflicting_flags_before_running(tmp_path, extra, message):
    from dl1.sweep import main as sweep_main

    with pytest.raises(UsageError, match=message):
        sweep_main(["gnn", "--grid", "seed=1,2", "--sweep_dir", str(tmp_path / "s"), "--", *extra])
    assert not (tmp_path / "s").exists()


def test_cross_dataset_takes_data_and_template_from_the_checkpoint(cifar10_prompt, tmp_path):
    out = execute("clip-cross-dataset", ["--resume", _ckpt(cifar10_prompt), "--num_workers", "0"], out_dir=tmp_path,
                  quiet=True)  # no --synthetic_data: the smoke prompt's own (fake) data
    assert out["synthetic"] and out["trained_on"] == "cifar10" and out["num_classes"] == 110
    config = json.loads((Path(out["run_dir"]) / "config.json").read_text())
    assert config["synthetic_data"] is True and config["text_prompt_template"] == "This is a photo of a {}"
