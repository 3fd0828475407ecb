"""``dl1 export``: trained models leave dl1 as safetensors + config.json (no pickle) and a GPT as a Hugging Face
GPT2LMHeadModel folder with the same logits; and with ``--tensorboard`` the event files hold sample grids (images),
GPT samples (text) and the configuration with the final metrics (hparams)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dl1.cli import main
from dl1.experiments import execute
from dl1.export import export_run, load_model, load_tokenizer
from dl1.train import load_checkpoint


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Smoke runs of the generative models with --tensorboard, and of the two MLPs."""
    out = tmp_path_factory.mktemp("export")
    folders = {}
    for name in ("gpt", "vae", "aae"):
        folders[name] = Path(execute(name, [], smoke=True, out_dir=out, quiet=True, tensorboard=True)["run_dir"])
    for name in ("mlp-pytorch", "mlp-numpy"):
        folders[name] = Path(execute(name, [], smoke=True, out_dir=out, quiet=True)["run_dir"])
    return folders


def test_gpt_as_gpt2lmheadmodel_gives_the_same_logits(runs, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from dl1.generate import load_gpt_checkpoint

    out = tmp_path / "hf"
    assert main(["export", str(runs["gpt"]), "--format", "hf", "--out", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    ours, tokenizer = load_gpt_checkpoint(runs["gpt"])
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out)).eval()
    text = "The cat sat."
    ids = torch.tensor([tokenizer.encode(text)])  # (1, T)
    with torch.no_grad():
        expected, _ = ours(ids)
        got = hf(ids).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # the tokenizer beside it: dl1's documented form and a transformers tokenizer that agrees with it
    chars = json.loads((out / "char_tokenizer.json").read_text(encoding="utf-8"))
    assert chars == {"kind": "char", "chars": tokenizer.chars}
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    assert hf_tokenizer(text)["input_ids"] == tokenizer.encode(text)
    assert hf_tokenizer.decode(tokenizer.encode("sat on\nthe mat")) == "sat on\nthe mat"
    assert not list(out.glob("*.bin"))  # no pickle


@pytest.mark.parametrize("name, module", [("gpt", "model"), ("vae", "vae"), ("aae", "model"),
                                          ("mlp-pytorch", "model")])
def test_safetensors_export_loads_into_the_dl1_class(runs, name, module):
    from safetensors.torch import load_file

    out = export_run(runs[name])
    assert out == runs[name] / "export" and sorted(p.name for p in out.iterdir()) == ["config.json",
                                                                                      "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["experiment"] == name and config["run_config"]["experiment"] == name
    saved = load_checkpoint(Path(config["checkpoint"]["file"]))["modules"][module]
    tensors = load_file(out / "model.safetensors")
    assert set(tensors) == set(saved) and all(torch.equal(tensors[k], saved[k]) for k in saved)
    model = load_model(out)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_exported_gpt_and_its_tokenizer_generate_like_the_run(runs):
    from dl1.generate import generate, load_gpt_checkpoint

    out = export_run(runs["gpt"], out=runs["gpt"] / "exported")
    ours, tokenizer = load_gpt_checkpoint(runs["gpt"])
    model, exported_tokenizer = load_model(out), load_tokenizer(out)
    assert exported_tokenizer.chars == tokenizer.chars
    assert generate(model, exported_tokenizer, "The", max_new_tokens=8, seed=1) == \
        generate(ours, tokenizer, "The", max_new_tokens=8, seed=1)


def test_numpy_mlp_exports_as_the_torch_mlp_with_the_same_outputs(runs):
    from dl1.numpy_nn import MLP as NumpyMLP

    out = export_run(runs["mlp-numpy"])
    model = load_model(out)
    kwargs = json.loads((out / "config.json").read_text())["model"]["kwargs"]
    numpy_mlp = NumpyMLP(kwargs["n_inputs"], kwargs["n_hidden"], kwargs["n_classes"])
    with np.load(runs["mlp-numpy"] / "checkpoints" / "best.npz") as data:
        numpy_mlp.load_state_dict({k: data[k] for k in data.files if k.startswith("layers.")})
    x = np.random.default_rng(0).standard_normal((5, kwargs["n_inputs"])).astype(np.float32)
    with torch.no_grad():
        probs = model(torch.from_numpy(x)).softmax(-1).numpy()
    np.testing.assert_allclose(probs, numpy_mlp.forward(x), rtol=1e-5, atol=1e-6)


def test_runs_without_a_model_and_bad_requests_are_one_line(runs, tmp_path, capsys):
    gnn = tmp_path / "gnn-run"  # what a gnn run folder says about itself
    gnn.mkdir()
    (gnn / "config.json").write_text(json.dumps({"experiment": "gnn", "seed": 42}))
    cases = [([str(gnn)], 1, "nothing to export: gnn checks"),
             ([str(runs["vae"]), "--format", "hf"], 2, "--format hf is for GPT runs"),
             ([str(tmp_path / "nowhere")], 1, "run folder not found"),
             ([str(tmp_path)], 1, "is not a run folder"),
             ([str(runs["vae"]), "--out", str(runs["vae"] / "config.json")], 2, "is a file, not a folder")]
    for argv, code, pattern in cases:
        assert main(["export", *argv]) == code, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and pattern in err, err
    assert not (gnn / "export").exists()


def test_load_model_refuses_a_folder_that_is_not_an_export(runs, tmp_path):
    from dl1.errors import DL1Error

    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"format": "dl1-export", "model": {"builder": "os.system",
                                                                                      "kwargs": {}}}))
    with pytest.raises(DL1Error, match="not a config written by dl1 export"):
        load_model(folder)


# -- TensorBoard ------------------------------------------------------------------------------------------------------
def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("name, images", [("vae", {"samples"}), ("aae", {"samples", "reconstructions"})])
def test_tensorboard_shows_the_sample_grids_as_images(runs, name, images):
    acc = _events(runs[name])
    assert images <= set(acc.Tags()["images"])
    for tag in images:
        events = acc.Images(tag)
        assert len(events) >= 2 and events[0].width > 28 and events[0].height > 28  # before training, then later
        assert events[0].step == 0 and events[-1].step > 0


def test_tensorboard_shows_gpt_samples_as_text(runs):
    acc = _events(runs["gpt"])
    tags = [t for t in acc.Tags()["tensors"] if t.startswith("sample/text")]
    assert tags, acc.Tags()
    logged = [r["text"] for r in map(json.loads, (runs["gpt"] / "metrics.jsonl").read_text().splitlines())
              if r["split"] == "sample"]
    shown = [e.tensor_proto.string_val[0].decode() for t in tags for e in acc.Tensors(t)]
    assert len(shown) == len(logged)
    assert all(text.splitlines()[0] in page for text, page in zip(logged, shown))


@pytest.mark.parametrize("name, metric", [("vae", "final/test_bpd"), ("gpt", "final/best/val_loss"),
                                          ("aae", "final/test/recon_loss")])
def test_tensorboard_hparams_hold_the_config_and_final_metrics(runs, name, metric):
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = _events(runs[name])
    content = acc.PluginTagToContent("hparams")
    assert content, "no hparams summary"
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
    experiment = next(d.experiment for d in data.values() if d.HasField("experiment"))
    session = next(d.session_start_info for d in data.values() if d.HasField("session_start_info"))
    config = json.loads((runs[name] / "config.json").read_text())
    assert {h.name for h in experiment.hparam_infos} == set(config) - {"experiment"}
    assert session.hparams["seed"].number_value == config["seed"]
    assert metric in {m.name.tag for m in experiment.metric_infos}
    summary = json.loads((runs[name] / "summary.json").read_text())
    value = summary
    for part in metric.removeprefix("final/").split("/"):
        value = value[part]
    assert acc.Scalars(metric)[-1].value == pytest.approx(value, rel=1e-6)


def test_every_figure_of_these_runs_has_a_tour_caption(runs):
    from dl1.report.tour import select_figures

    for name, folder in runs.items():
        names = [p.name for p in (folder / "figures").glob("*.png")]
        chosen = select_figures(name, names)
        assert chosen and not [n for n, c in chosen if "no caption" in c], name


@pytest.mark.parametrize("name, argv, builder, module", [
    ("clip-prompt", [], "dl1.models.prompters.build_prompter", "prompt"),
    ("clip-prompt", ["--prompt_type", "deep_prompt"], "dl1.models.prompt_clip.DeepPrompt", "prompt"),
    ("resnet-transfer", [], "torch.nn.Linear", "fc"),
])
def test_prompts_and_probes_export_their_trained_part(tmp_path, name, argv, builder, module):
    run_dir = Path(execute(name, argv, smoke=True, out_dir=tmp_path, quiet=True)["run_dir"])
    out = export_run(run_dir)
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["builder"] == builder
    saved = load_checkpoint(Path(config["checkpoint"]["file"]))["modules"][module]
    state = load_model(out).state_dict()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
