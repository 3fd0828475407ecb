"""CLIP safety: what ``--clip_weights`` and a prompt checkpoint may hold (nothing in them runs), one line for every
bad file, and the prompt's limits checked from the architecture's name before anything heavy is imported or built."""

import json
import os
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from dl1.errors import DL1Error, UsageError
from dl1.experiments import execute, load
from dl1.hub import clip as H

ROOT = Path(__file__).resolve().parents[1]
CLIP_EXPERIMENTS = ("clip-zeroshot", "clip-prompt", "clip-cross-dataset")


class Payload:
    """Unpickling this creates the file ``target``: what a hostile weights file would do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def hostile_files(tmp_path):
    """A plain pickle and a ``torch.save`` zip, both carrying the payload."""
    target = tmp_path / "pwned.txt"
    plain, zipped = tmp_path / "plain.pt", tmp_path / "zipped.pt"
    plain.write_bytes(pickle.dumps({"visual.proj": Payload(target)}, protocol=2))
    torch.save({"visual.proj": Payload(target)}, zipped)
    return target, [plain, zipped]


@pytest.fixture
def no_torchscript(monkeypatch):
    """Fail the test if anything reaches ``torch.jit.load``."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"torch.jit.load reached with {args[:1]}")

    monkeypatch.setattr(torch.jit, "load", refuse)


# -- --clip_weights ---------------------------------------------------------------------------------------------------
def test_a_weights_pickle_with_a_payload_is_refused_in_one_line_and_never_runs(tmp_path, no_torchscript):
    target, files = hostile_files(tmp_path)
    for path in files:
        assert not H.is_torchscript(path)  # a torch.save zip is not a TorchScript archive
        with pytest.raises(DL1Error, match="cannot read CLIP weights") as info:
            H.read_weights(path)
        message = str(info.value)
        assert "\n" not in message and "weights_only=False" not in message and "refused" in message
    assert not target.exists()


def test_a_hostile_weights_file_end_to_end_is_one_line_exit_1(tmp_path):
    target, files = hostile_files(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "dl1", "run", "clip-zeroshot", "--synthetic_data", "--clip_weights",
                           str(files[0]), "--out_dir", str(tmp_path / "runs")], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, "DL1_OFFLINE": "1"})
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot read CLIP weights" in proc.stderr and "weights_only=False" not in proc.stderr
    assert not target.exists()
    assert not any(p.is_dir() for p in (tmp_path / "runs").rglob("*"))  # no run folder left behind


def test_safetensors_is_recognised_by_its_contents_and_state_dicts_load_without_torchscript(tmp_path, no_torchscript):
    from safetensors.torch import save_file

    state = {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(2)}
    save_file(state, str(tmp_path / "weights.bin"))  # a safetensors file under another name
    got, kind = H.read_weights(tmp_path / "weights.bin")
    assert kind == "safetensors" and torch.equal(got["a"], state["a"])
    assert H.is_safetensors(tmp_path / "weights.bin") and not H.is_torchscript(tmp_path / "weights.bin")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "open_clip.pt")
    got, kind = H.read_weights(tmp_path / "open_clip.pt")
    assert kind == "state_dict" and sorted(got) == ["a", "b"]
    assert not H.is_safetensors(tmp_path / "open_clip.pt")


@pytest.mark.parametrize("content, message", [
    (b"", "cannot read CLIP weights"),
    (b"\x08\x00\x00\x00\x00\x00\x00\x00{not json", "cannot read CLIP weights"),  # looks like safetensors, is not
    (None, "not a CLIP state dict"),  # a state dict holding something other than tensors
])
def test_broken_weights_files_are_one_line(tmp_path, content, message, no_torchscript):
    path = tmp_path / "w.pt"
    if content is None:
        torch.save({"visual.proj": "a string"}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(DL1Error, match=message) as info:
        H.read_weights(path)
    assert "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_zip_is_loaded_as_torchscript_only_when_it_is_one(tmp_path):
    fake = tmp_path / "fake.pt"
    with zipfile.ZipFile(fake, "w") as zf:  # a zip with a code/ folder but no constants.pkl
        zf.writestr("archive/code/__torch__.py", "")
        zf.writestr("archive/data.pkl", pickle.dumps({}))
    assert not H.is_torchscript(fake)
    script = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(script))
    assert H.is_torchscript(script)


def test_help_of_every_clip_experiment_says_torchscript_runs_code():
    from dl1.config import build_parser

    for name in CLIP_EXPERIMENTS:
        text = " ".join(build_parser(load(name).Config, f"dl1 run {name}").format_help().split())
        assert "EXECUTES the TorchScript code" in text and "weights_only=True" in text, name
        assert "safetensors" in text, name


# -- prompt checkpoints -----------------------------------------------------------------------------------------------
def prompt_checkpoint(path, **config):
    """A clip-prompt checkpoint of the smoke prompt (padding 8 on the 64 px tiny CLIP) with ``config`` changed."""
    from dl1.models.prompters import PadPrompter
    from dl1.train import save_checkpoint

    saved = {"prompt_type": "visual_prompt", "method": "padding", "prompt_size": 8, "image_size": 64,
             "prompt_init_method": "random", "prompt_num": 4, "injection_layer": 0, "arch": "tiny-test",
             "pretrained": "openai", "seed": 0, "dataset": "cifar10", "synthetic_data": True, **config}
    state = {"modules": {"prompt": PadPrompter(8, 64).state_dict()}, "extra": {"config": saved, "classes": []}}
    return save_checkpoint(path, state)


@pytest.mark.parametrize("change, message", [
    ({"prompt_num": 10**12, "prompt_type": "deep_prompt"}, "prompt_num=1000000000000"),
    ({"prompt_size": "two"}, "prompt_size='two'"),
    ({"image_size": 10**9}, "image_size"),
    ({"prompt_size": 33}, r"pad width must be in \[1, 32\]"),
    ({"injection_layer": 5, "prompt_type": "deep_prompt"}, r"injection_layer must be in \[0, 1\]"),
    ({"method": "spiral"}, "method='spiral'"),
    ({"arch": "ViT-B/99"}, "unknown CLIP architecture"),
])
def test_a_checkpoint_with_a_nonsense_prompt_config_is_one_line(tmp_path, change, message):
    ckpt = prompt_checkpoint(tmp_path / "bad.pt", **change)
    for name, argv in (("clip-prompt", ["--evaluate", "--resume", str(ckpt)]),
                       ("clip-cross-dataset", ["--resume", str(ckpt)])):
        with pytest.raises(DL1Error, match=message) as info:
            execute(name, argv, smoke=True, out_dir=tmp_path / "runs", quiet=True)
        assert "\n" not in str(info.value)
    assert not any(p.is_dir() for p in (tmp_path / "runs").rglob("*"))  # no run folder left behind


def test_a_prompt_of_another_shape_in_a_valid_checkpoint_is_one_line(tmp_path):
    from dl1.models.prompters import PadPrompter
    from dl1.train import load_checkpoint, save_checkpoint

    ckpt = prompt_checkpoint(tmp_path / "ok.pt")
    state = load_checkpoint(ckpt)
    state["modules"]["prompt"] = PadPrompter(4, 64).state_dict()  # the weights of a 4 px pad, config says 8
    save_checkpoint(ckpt, state)
    with pytest.raises(DL1Error, match="does not fit this model") as info:
        execute("clip-prompt", ["--evaluate", "--resume", str(ckpt)], smoke=True, out_dir=tmp_path, quiet=True)
    assert "\n" not in str(info.value)


def test_a_prompt_checkpoint_with_a_payload_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    ckpt = tmp_path / "hostile.pt"
    torch.save({"modules": {"prompt": {"pad_up": Payload(target)}}, "extra": {"config": {}}}, ckpt)
    with pytest.raises(DL1Error, match="cannot read checkpoint") as info:
        execute("clip-prompt", ["--evaluate", "--resume", str(ckpt)], smoke=True, out_dir=tmp_path, quiet=True)
    assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value) and not target.exists()


# -- prompt limits from the architecture's name -----------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--prompt_size", "113"], r"pad width must be in \[1, 112\] on CLIP ViT-B/32's 224 px"),
    (["--method", "fixed_patch", "--prompt_size", "225"], r"patch side must be in \[1, 224\]"),
    (["--method", "random_patch", "--prompt_size", "225"], r"patch side must be in \[1, 224\]"),
    (["--prompt_type", "deep_prompt", "--injection_layer", "12"], r"injection_layer must be in \[0, 11\].*12 blocks"),
    (["--prompt_type", "deep_prompt", "--arch", "RN50"], "deep prompts need a ViT"),
    (["--arch", "ViT-L/14@336px"], "does not match CLIP ViT-L/14@336px's input size 336"),
    (["--arch", "ViT-B/99"], "unknown CLIP architecture"),
    (["--arch", "tiny-test", "--image_size", "64", "--prompt_type", "deep_prompt", "--injection_layer", "2"],
     r"injection_layer must be in \[0, 1\]"),
])
def test_prompt_limits_are_refused_before_torch_or_open_clip_is_imported(argv, message):
    """Parse + checks in a fresh interpreter: the refusal comes without importing torch or open_clip."""
    code = ("import sys, json\nfrom dl1 import experiments\nfrom dl1.errors import DL1Error\n"
            "try:\n    cfg = experiments.make_config('clip-prompt', sys.argv[1:])\n"
            "    experiments.preflight(experiments.load('clip-prompt'), cfg)\n    out = None\n"
            "except DL1Error as exc:\n    out = [type(exc).__name__, str(exc)]\n"
            "print(json.dumps([out, 'torch' in sys.modules, 'open_clip' in sys.modules]))\n")
    proc = subprocess.run([sys.executable, "-c", code, "--synthetic_data", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    (kind, text), torch_imported, open_clip_imported = json.loads(proc.stdout.strip().splitlines()[-1])
    import re

    assert re.search(message, text), text
    assert kind in ("UsageError", "DL1Error") and "\n" not in text
    assert not torch_imported and not open_clip_imported


@pytest.mark.parametrize("argv", [
    ["--prompt_size", "112"], ["--method", "fixed_patch", "--prompt_size", "224"],
    ["--prompt_type", "deep_prompt", "--injection_layer", "11"],
    ["--arch", "ViT-L/14@336px", "--image_size", "336", "--prompt_size", "168"],
    ["--arch", "ViT-B-16", "--prompt_type", "deep_prompt", "--injection_layer", "11"],
])
def test_prompt_limits_accept_the_largest_valid_values(argv):
    from dl1.experiments import make_config, preflight

    preflight(load("clip-prompt"), make_config("clip-prompt", ["--synthetic_data", *argv]))


def test_the_limits_agree_with_the_models_own_checks():
    """At each limit the tiny model builds; one past it the model refuses too (the same rule in both places)."""
    from dl1.models.clip import tiny_clip
    from dl1.models.prompt_clip import build_prompted_clip

    clip = tiny_clip(image_size=32)
    text = torch.randn(3, clip.embed_dim)
    base = {"prompt_type": "visual_prompt", "method": "padding", "prompt_size": 16, "image_size": 32,
            "prompt_init_method": "zeros", "prompt_num": 2, "injection_layer": 0, "seed": 0}
    cases = [({"method": "padding"}, "prompt_size", 16), ({"method": "fixed_patch"}, "prompt_size", 32),
             ({"prompt_type": "deep_prompt"}, "injection_layer", H.TINY_BLOCKS - 1)]
    for change, key, limit in cases:
        spec = {**base, **change, key: limit}
        H.check_prompt("tiny-test", 32, spec["prompt_type"], spec["method"], spec["prompt_size"],
                       spec["injection_layer"])
        build_prompted_clip(clip.model, text, spec)
        spec[key] = limit + 1
        with pytest.raises(UsageError):
            H.check_prompt("tiny-test", 32, spec["prompt_type"], spec["method"], spec["prompt_size"],
                           spec["injection_layer"])
        with pytest.raises(ValueError):
            build_prompted_clip(clip.model, text, spec)


def test_a_bad_prompt_size_end_to_end_is_fast_and_leaves_no_run_folder(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dl1", "run", "clip-prompt", "--synthetic_data", "--prompt_size",
                           "113", "--out_dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    seconds = time.perf_counter() - start
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "pad width must be in [1, 112]" in proc.stderr
    assert seconds < 10  # no model is built (that took 13-20 s)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
