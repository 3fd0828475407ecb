"""``--precision``: bf16 autocast on the CPU trains the smoke GPT and the smoke VAE to within a stated margin of fp32,
and a precision the device cannot train in is one line, exit 2, no run folder.

The margin is relative 3 % of the fp32 loss.  Measured on this project's CPU (one thread): the GPT (smoke size, 60
iterations at 1e-2, the loss falls from 3.4 to 1.46 nats) differs by 0.008 % (at most 0.02 % over seeds 0-3); the
VAE (smoke size on 512 fake 4-bit training images, 4 epochs at 3e-3, from 4.0 to 3.6 bits per dimension) by 0.07 %
(at most 0.21 % over nine seeds, either sign: bf16's rounding moves the trajectory a little, it does not slow
training).  A bf16 that silently ran in fp32 gives exactly fp32's numbers, which the test refuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dl1.cli import main
from dl1.experiments import execute

MARGIN = 0.03  # relative; see the module docstring for the gaps measured
GPT_FLAGS = ["--max_iters", "60", "--learning_rate", "0.01", "--eval_interval", "30", "--sample_tokens", "0",
             "--final_sample_tokens", "0", "--threads", "1"]


def _vae_flags(data: Path) -> list[str]:
    return ["--dataset", "fashion-mnist", "--data_dir", str(data), "--val_size", "48", "--epochs", "4", "--lr",
            "0.003", "--num_filters", "8", "--batch_size", "32", "--sample_every", "100"]


def _train(name: str, flags: list[str], precision: str, out: Path) -> tuple[float, float, dict]:
    summary = execute(name, [*flags, "--precision", precision], smoke=True, out_dir=out / precision, quiet=True)
    config = json.loads((Path(summary["run_dir"]) / "config.json").read_text())
    if name == "gpt":
        return summary["final"]["val_loss"], summary["final"]["train_loss"], config
    return summary["test_bpd"], summary["best_val_bpd"], config


@pytest.mark.parametrize("name", ["gpt", "vae"])
def test_bf16_on_cpu_trains_to_within_the_margin_of_fp32(name, tmp_path):
    if name == "vae":
        from dl1.data.fake import write_idx

        write_idx(tmp_path / "data", "fashion-mnist", n_train=560, n_test=100)
    flags = GPT_FLAGS if name == "gpt" else _vae_flags(tmp_path / "data")
    *fp32, config32 = _train(name, flags, "fp32", tmp_path)
    *bf16, config16 = _train(name, flags, "bf16", tmp_path)
    assert config32["precision"] == "fp32" and config16["precision"] == "bf16"
    start = 3.4 if name == "gpt" else 4.0  # about the loss of the untrained model (uniform over 30 chars, 4 bits)
    assert fp32[0] < (0.5 if name == "gpt" else 0.95) * start  # it trained: the margin is small beside the progress
    for a, b in zip(fp32, bf16, strict=True):
        assert a != b  # bfloat16 products ran (fp32 numbers would mean the autocast was ignored)
        assert abs(b - a) <= MARGIN * abs(a), (name, fp32, bf16)


@pytest.mark.parametrize("name", ["gpt", "vae"])
def test_fp16_without_cuda_is_one_line_exit_2_and_no_run_folder(name, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("fp16 trains on this machine's GPU")
    code = main(["run", name, "--smoke", "--precision", "fp16", "--device", "cpu", "--out_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--precision fp16 needs a CUDA device" in err and "bf16" in err
    assert not any(tmp_path.iterdir())  # nothing made, not even the experiment's folder
