"""A GPT resume reads ``last.pt`` once and passes it on; ``dl1 generate --pretrained`` takes dl1's own
``export --format hf`` folder; models take plain numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from dl1.cli import main
from dl1.experiments import execute
from dl1.run.files import read_json

TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "8", "--block_size", "8", "--train_batch_size", "4",
        "--warmup_iters", "0", "--sample_tokens", "0", "--final_sample_tokens", "0", "--threads", "1",
        "--eval_interval", "2"]


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpt")
    text = folder / "t.txt"
    text.write_text("abcab ba\ncab" * 40)
    return Path(execute("gpt", ["--txt_file", str(text), *TINY, "--max_iters", "4"], out_dir=folder / "runs",
                        quiet=True)["run_dir"])


def _count_last_pt_reads(monkeypatch) -> list[str]:
    """Every ``torch.load`` of a file named ``last.pt`` from here on, whoever calls it (the registry's folder check,
    a runner, a checkpoint reader, the engine)."""
    import torch

    reads: list[str] = []
    real = torch.load

    def counting(f, *args, **kwargs):
        if isinstance(f, str | Path) and Path(f).name == "last.pt":
            reads.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return reads


def test_a_gpt_resume_reads_its_checkpoint_once(gpt_run, monkeypatch, capsys):
    """Counted at torch.load, over a whole ``dl1 run gpt --resume RUN``: the registry checks the checkpoint before
    anything is written (``dl1.experiments.check_run_folder``), the runner checks its model size and restores its
    training-loss window, the engine its state, all from one read of ``last.pt`` handed on through the Run."""
    reads = _count_last_pt_reads(monkeypatch)
    text = gpt_run / "t.txt"
    text.write_text("abcab ba\ncab" * 40)
    assert main(["run", "gpt", "--txt_file", str(text), *TINY, "--max_iters", "6", "--resume", str(gpt_run)]) == 0
    assert f"resumed from {gpt_run / 'checkpoints' / 'last.pt'} at epoch 2, step 4" in capsys.readouterr().out
    assert reads == [str(gpt_run / "checkpoints" / "last.pt")]
    assert read_json(gpt_run / "summary.json")["iters"] == 6


def test_an_engine_experiment_resume_reads_its_checkpoint_once(tmp_path, monkeypatch):
    """The same for an experiment that resumes through the engine alone (mlp-pytorch): the registry's read is the
    engine's, handed on through the Run."""
    first = execute("mlp-pytorch", [], smoke=True, out_dir=tmp_path, quiet=True)["run_dir"]
    reads = _count_last_pt_reads(monkeypatch)
    out = execute("mlp-pytorch", ["--epochs", "3", "--resume", first], smoke=True, quiet=True)
    assert out["run_dir"] == first
    assert reads == [str(Path(first) / "checkpoints" / "last.pt")]


def test_generate_loads_dl1s_own_hf_export(gpt_run, tmp_path, capsys):
    """dl1 export --format hf, then dl1 generate --pretrained on that folder: the same greedy text as from the
    checkpoint itself, with the character model's default prompt (before: 'WordLevel error: Missing [UNK] token')."""
    pytest.importorskip("transformers")
    out = tmp_path / "hf"
    assert main(["export", str(gpt_run), "--format", "hf", "--out", str(out)]) == 0
    capsys.readouterr()
    flags = ["--max_new_tokens", "12", "--num_samples", "2", "--no-do_sample"]
    assert main(["generate", "--pretrained", str(out), *flags]) == 0
    from_export = capsys.readouterr().out
    assert main(["generate", "--checkpoint", str(gpt_run), *flags]) == 0
    assert from_export == capsys.readouterr().out
    assert from_export.count("--- sample") == 2
    code = main(["generate", "--pretrained", str(out), "--prompt", "xyz"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "not in the vocabulary" in err, err


def test_hf_export_with_a_reordered_char_tokenizer_is_refused(gpt_run, tmp_path, capsys):
    import json

    pytest.importorskip("transformers")
    out = tmp_path / "hf"
    assert main(["export", str(gpt_run), "--format", "hf", "--out", str(out)]) == 0
    path = out / "char_tokenizer.json"
    data = json.loads(path.read_text())
    data["chars"].reverse()
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["generate", "--pretrained", str(out), "--max_new_tokens", "3"]) == 1
    assert "sorted" in capsys.readouterr().err


def test_models_take_plain_numbers():
    from dl1.models.gpt import GPT
    from dl1.models.gpt_config import GPTConfig
    from dl1.models.vae import VAE, step_memory

    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=8))
    opt = model.configure_optimizers(0.1, 3e-3, (0.9, 0.99), "cpu")
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0] and opt.defaults["lr"] == 3e-3
    assert opt.defaults["fused"] is True
    assert model.configure_optimizers(0.0, 1e-3, (0.9, 0.95), "mps").defaults["foreach"] is True
    fixed, per_image = step_memory(lambda: VAE(4, 2), VAE.activation_floats(4))
    assert fixed == 16 * sum(p.numel() for p in VAE(4, 2).parameters()) and per_image == 4 * VAE.activation_floats(4)
    assert not hasattr(VAE(4, 2, 1e-3), "lr")
    config = GPTConfig(vocab_size=65, block_size=128, model_type="gpt-mini")
    fits = config.largest_batch(2 * 2**30)
    assert config.memory_bytes(fits) <= 2 * 2**30 < config.memory_bytes(fits + 1)
