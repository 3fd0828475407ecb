"""The mini-CLIP's files and names, without training: what its model config may hold, how ``--clip_weights RUN`` and
``--arch mini`` resolve, its prompt limits, and the shifted Fashion-MNIST datasets (tiny fake IDX files)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dl1.errors import DL1Error, UsageError
from dl1.hub import clip as H


@pytest.fixture(scope="module")
def mini_files(tmp_path_factory):
    """A mini-CLIP with random weights saved as a mini-clip run does: RUN/mini_clip.safetensors + mini_clip.json."""
    from dl1.models.clip import OPENAI_MEAN, OPENAI_STD, build_mini_clip, mini_clip_config

    folder = tmp_path_factory.mktemp("mini")
    model_cfg = mini_clip_config(width=16, layers=2, text_width=16, text_layers=1, embed_dim=16)
    bundle = build_mini_clip(model_cfg, seed=0)
    config = {"model": model_cfg, "preprocess": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}}
    return H.save_mini_clip(bundle.model, config, folder), bundle


def write_config(tmp_path, weights, change):
    """A copy of the mini-CLIP whose config has ``change(config)`` applied."""
    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)
    (folder / H.MINI_WEIGHTS).write_bytes(Path(weights).read_bytes())
    config = json.loads((Path(weights).parent / H.MINI_CONFIG).read_text())
    change(config)
    (folder / H.MINI_CONFIG).write_text(json.dumps(config))
    return folder / H.MINI_WEIGHTS


def test_saved_mini_clip_loads_frozen_and_identical(mini_files):
    weights, bundle = mini_files
    loaded = H.get_clip("mini", weights=str(weights))
    assert loaded.arch == "mini" and loaded.weights == str(weights) and not loaded.random_init
    assert loaded.info["weights_format"] == "safetensors" and loaded.image_size == 28
    assert not any(p.requires_grad for p in loaded.model.parameters()) and not loaded.model.training
    for (name, a), b in zip(bundle.model.state_dict().items(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    import open_clip

    # open_clip's own classes, as ViT-B/32: CLIP with a VisionTransformer image tower and a text transformer
    assert type(loaded.model) is open_clip.CLIP and type(loaded.model.visual).__name__ == "VisionTransformer"


@pytest.mark.parametrize("change, message", [
    (lambda c: c["model"]["vision_cfg"].update(width=10**6), r"vision_cfg.width is 1000000"),
    (lambda c: c["model"]["text_cfg"].update(layers=True), r"text_cfg.layers is True"),
    (lambda c: c["model"]["vision_cfg"].update(timm_model_name="resnet50"), r"must hold exactly"),
    (lambda c: c["model"].update(embed_dim="64"), r"embed_dim is '64'"),
    (lambda c: c["model"]["vision_cfg"].update(patch_size=5), r"patch size must divide"),
    (lambda c: c["preprocess"].update(std=[0.0, 0.2, 0.2]), r"preprocess.mean and preprocess.std"),
    (lambda c: c.update(format="something-else"), r"is not a mini-CLIP config"),
])
def test_a_hostile_or_broken_config_is_one_line_before_anything_is_built(mini_files, tmp_path, change, message):
    weights = write_config(tmp_path, mini_files[0], change)
    with pytest.raises(DL1Error, match=message) as info:
        H.load_mini_clip(weights)
    assert "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_weights_without_config_and_torchscript_are_refused(mini_files, tmp_path, monkeypatch):
    lonely = tmp_path / "lonely.safetensors"
    lonely.write_bytes(Path(mini_files[0]).read_bytes())
    with pytest.raises(DL1Error, match="no model config mini_clip.json beside it"):
        H.load_mini_clip(lonely)
    scripted = tmp_path / "script" / H.MINI_WEIGHTS  # a TorchScript archive beside a valid config: never loaded
    scripted.parent.mkdir()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    (scripted.parent / H.MINI_CONFIG).write_text((Path(mini_files[0]).parent / H.MINI_CONFIG).read_text())
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load reached"))
    with pytest.raises(DL1Error, match="not a TorchScript archive"):
        H.load_mini_clip(scripted)


def test_clip_weights_run_folder_and_arch_mini_resolve(mini_files, tmp_path, monkeypatch):
    weights = Path(mini_files[0])
    assert H.clip_choice("ViT-B/32", str(weights.parent)) == ("mini", str(weights))  # the folder, default arch
    assert H.clip_choice("mini", str(weights)) == ("mini", str(weights))
    with pytest.raises(UsageError, match="needs --arch mini, not --arch RN50"):
        H.clip_choice("RN50", str(weights))
    with pytest.raises(DL1Error, match="folder without mini_clip.safetensors"):
        H.clip_choice("mini", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # --arch mini alone: the newest mini-clip run under ./runs/mini-clip
    with pytest.raises(DL1Error, match="no trained mini-CLIP under runs/mini-clip"):
        H.clip_choice("mini", None)
    run = tmp_path / "runs" / "mini-clip" / "20260101-000000"
    run.mkdir(parents=True)
    for name in (H.MINI_WEIGHTS, H.MINI_CONFIG):
        (run / name).write_bytes((weights.parent / name).read_bytes())
    assert H.clip_choice("mini", None) == ("mini", str(Path("runs/mini-clip/20260101-000000") / H.MINI_WEIGHTS))
    from dl1.experiments import make_config

    cfg = make_config("clip-prompt", ["--arch", "mini", "--dataset", "fashion-mnist-inverted"])
    assert (cfg.arch, cfg.image_size, cfg.prompt_size) == ("mini", 28, 30)  # 28 px: the input size of this model


@pytest.mark.parametrize("argv, message", [
    (["--method", "padding", "--prompt_size", "15"], r"pad width must be in \[1, 14\] on CLIP mini's 28 px"),
    (["--method", "fixed_patch", "--prompt_size", "29"], r"patch side must be in \[1, 28\]"),
    (["--prompt_type", "deep_prompt", "--injection_layer", "2"], r"injection_layer must be in \[0, 1\] .*2 blocks"),
    (["--image_size", "32", "--prompt_size", "4"], r"--image_size 32 does not match CLIP mini's input size 28"),
])
def test_prompt_limits_of_the_mini_clip_come_from_its_config(mini_files, argv, message, tmp_path):
    from dl1.data.fake import write_idx
    from dl1.experiments import execute

    write_idx(tmp_path, "fashion-mnist")  # tiny IDX files: the data check passes without the real data set
    with pytest.raises(UsageError, match=message):
        execute("clip-prompt", ["--clip_weights", str(mini_files[0]), "--dataset", "fashion-mnist-inverted",
                                "--data_dir", str(tmp_path), *argv], out_dir="/nonexistent-never-created")


def test_shifted_fashion_datasets(tmp_path):
    from dl1.data.clip import cifar_folder, load_clip_dataset
    from dl1.data.fashion_clip import CLASSES, DATASETS, FashionBatches

    folder = cifar_folder(None, tmp_path, ["fashion-mnist-inverted"], n_train=12, n_test=6, seed=0)
    plain = load_clip_dataset("fashion-mnist", "test", lambda im: np.asarray(im), folder)
    inverted = load_clip_dataset("fashion-mnist-inverted", "test", lambda im: np.asarray(im), folder)
    rotated = load_clip_dataset("fashion-mnist-rot90", "test", lambda im: np.asarray(im), folder)
    assert DATASETS == ("fashion-mnist", "fashion-mnist-inverted", "fashion-mnist-rot90")
    assert plain.classes == list(CLASSES) and len(plain) == 6 and plain.data.shape == (6, 28, 28, 3)
    (x, y), (xi, yi), (xr, yr) = plain[3], inverted[3], rotated[3]
    assert y == yi == yr and x.shape == (28, 28, 3) and (x[..., 0] == x[..., 2]).all()
    assert (xi.astype(int) == 255 - x.astype(int)).all() and (xr == np.rot90(x, 1, axes=(0, 1))).all()
    # the training batches give what CLIP's preprocessing gives for the same image
    from dl1.models.clip import OPENAI_MEAN, OPENAI_STD, build_mini_clip, mini_clip_config

    prep = build_mini_clip(mini_clip_config(width=16, layers=1, text_width=16, text_layers=1, embed_dim=16)).preprocess
    reference = load_clip_dataset("fashion-mnist", "test", prep, folder)
    (batch, labels), = FashionBatches(plain.data[..., 0], np.asarray(plain.targets), 6, OPENAI_MEAN, OPENAI_STD)
    assert torch.allclose(batch, torch.stack([reference[i][0] for i in range(6)]), atol=1e-6)
    assert labels.tolist() == plain.targets
