"""GPT safety: no code runs from a weights file or checkpoint, nonsense stored configs and sizes are one line, sampling
never turns into NaN, and a resumed run logs exactly what an uninterrupted one logs."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from dl1.cli import main
from dl1.data.text import CharTokenizer
from dl1.errors import DL1Error
from dl1.models.gpt import GPT, PRESETS, GPTConfig
from dl1.train import save_checkpoint

TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "8", "--block_size", "8", "--train_batch_size", "4",
        "--warmup_iters", "0", "--sample_tokens", "0", "--final_sample_tokens", "0", "--threads", "1"]


class Payload:
    """Unpickling this creates the file ``path`` (what an attacker's code would do)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def hostile_torch_file(path: Path, marker: Path) -> Path:
    """A real ``torch.save`` zip archive whose pickle carries a ``__reduce__`` payload creating ``marker``."""
    torch.save({"x": torch.zeros(1)}, path)
    with zipfile.ZipFile(path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    name = next(n for n in items if n.endswith("data.pkl"))
    items[name] = pickle.dumps({"x": Payload(marker)}, protocol=2)
    with zipfile.ZipFile(path, "w") as z:
        for n, data in items.items():
            z.writestr(n, data)
    return path


def one_line_error(capsys, code: int, expected: int = 1) -> str:
    err = capsys.readouterr().err
    assert code == expected, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "weights_only=False" not in err and "trust the source" not in err, err
    return err


# -- weights and checkpoints that would run code ------------------------------------------------------------------
def _gpt2_folder(folder: Path, **sizes) -> Path:
    """A GPT-2 folder's config.json (written as transformers writes it, then edited as asked)."""
    transformers = pytest.importorskip("transformers")
    config = dict(vocab_size=257, n_positions=32, n_embd=24, n_layer=2, n_head=3, bos_token_id=256, eos_token_id=256)
    transformers.GPT2Config(**config).save_pretrained(folder)
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **sizes}))
    return folder


def test_hostile_pytorch_model_bin_is_refused_and_never_runs(tmp_path, capsys):
    folder = _gpt2_folder(tmp_path / "gpt2")
    marker = tmp_path / "pwned"
    hostile_torch_file(folder / "pytorch_model.bin", marker)
    err = one_line_error(capsys, main(["generate", "--pretrained", str(folder)]))
    assert not marker.exists()
    assert "pytorch_model.bin" in err and "refused" in err
    from dl1.hub.gpt2 import from_pretrained

    with pytest.raises(DL1Error, match="refused"):
        from_pretrained(str(folder))
    assert not marker.exists()


def test_safetensors_is_preferred_over_a_pickle_in_the_same_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from dl1.hub.gpt2 import from_pretrained

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=257, n_positions=32, n_embd=24, n_layer=2,
                                                              n_head=3)).eval()
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    marker = tmp_path / "pwned"
    hostile_torch_file(tmp_path / "pytorch_model.bin", marker)
    model = from_pretrained(str(tmp_path)).eval()
    idx = torch.randint(0, 257, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, rtol=1e-4, atol=1e-4)
    assert not marker.exists()


@pytest.mark.parametrize("sizes, words", [({"n_layer": "two"}, "n_layer"), ({"n_embd": 25}, "divisible"),
                                          ({"vocab_size": 0}, "vocab_size"), ({"n_positions": 10**12}, "alone need")])
def test_nonsense_gpt2_config_is_one_line_before_any_weight(tmp_path, capsys, sizes, words):
    folder = _gpt2_folder(tmp_path, **sizes)
    err = one_line_error(capsys, main(["generate", "--pretrained", str(folder)]))
    assert words in err


def test_hostile_checkpoint_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = hostile_torch_file(tmp_path / "best.pt", marker)
    one_line_error(capsys, main(["generate", "--checkpoint", str(path)]))
    assert not marker.exists()
    text = tmp_path / "t.txt"
    text.write_text("abcab" * 40)
    one_line_error(capsys, main(["run", "gpt", "--txt_file", str(text), *TINY, "--max_iters", "2", "--resume",
                                 str(path), "--out_dir", str(tmp_path / "runs")]))
    assert not marker.exists() and not (tmp_path / "runs").exists()


# -- checkpoints whose stored model config is nonsense -------------------------------------------------------------
def tiny_checkpoint(path: Path, config: dict | None = None, chars: list | None = None, **extra_fields) -> Path:
    """A checkpoint as ``dl1 run gpt`` writes it (weights of a 1-layer width-8 model over 'abc'), with its stored
    model config and tokenizer replaced as asked."""
    torch.manual_seed(0)
    good = GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = GPT(good)
    extra = {"model_config": {**good.to_dict(), **(config or {})},
             "tokenizer": {"kind": "char", "chars": ["a", "b", "c"] if chars is None else chars}, **extra_fields}
    return save_checkpoint(path, {"modules": {"model": model.state_dict()}, "extra": extra, "epoch": 1, "step": 5})


NONSENSE = {
    "wrong width": ({"n_embd": 16}, None, "weight"),
    "short tokenizer": (None, ["a", "b"], "2 characters"),
    "n_layer two": ({"n_layer": "two"}, None, "n_layer"),
    "vocabulary 10**12": ({"vocab_size": 10**12}, None, "vocabulary"),
    "a billion layers": ({"n_layer": 10**9}, None, "1,000,000,000"),
    "heads do not divide width": ({"n_head": 3}, None, "divisible"),
    "tokenizer not characters": (None, ["ab", 3], "tokenizer"),
}


@pytest.mark.parametrize("case", list(NONSENSE))
def test_nonsense_stored_config_is_one_line_for_generate(tmp_path, capsys, case):
    config, chars, words = NONSENSE[case]
    path = tiny_checkpoint(tmp_path / "best.pt", config, chars)
    err = one_line_error(capsys, main(["generate", "--checkpoint", str(path), "--prompt", "a"]))
    assert words in err, err


@pytest.mark.parametrize("case", list(NONSENSE))
def test_nonsense_stored_config_is_one_line_for_resume_and_leaves_the_folder_unchanged(tmp_path, capsys, case):
    config, chars, words = NONSENSE[case]
    folder = tmp_path / "run"
    tiny_checkpoint(folder / "checkpoints" / "last.pt", config, chars)
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 5, "split": "train", "loss": 1.0}) + "\n")
    (folder / "config.json").write_text(json.dumps({"experiment": "gpt", "block_size": 8}))
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    text = tmp_path / "t.txt"
    text.write_text("abcab" * 40)
    code = main(["run", "gpt", "--txt_file", str(text), *TINY, "--max_iters", "10", "--resume", str(folder)])
    assert words in one_line_error(capsys, code)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_resume_with_other_size_flags_is_refused_before_the_folder_changes(tmp_path, capsys):
    folder = tmp_path / "run"
    tiny_checkpoint(folder / "checkpoints" / "last.pt")
    text = tmp_path / "t.txt"
    text.write_text("abcab" * 40)
    err = one_line_error(capsys, main(["run", "gpt", "--txt_file", str(text), *TINY, "--n_embd", "4", "--max_iters",
                                       "10", "--resume", str(folder)]), 2)
    assert "n_embd 8 there, 4 here" in err
    assert sorted(p.name for p in folder.rglob("*")) == ["checkpoints", "last.pt"]


def test_checkpoint_with_non_finite_weights_is_refused(tmp_path, capsys):
    path = tiny_checkpoint(tmp_path / "best.pt")
    state = torch.load(path, weights_only=True)
    state["modules"]["model"]["lm_head.weight"][0, 0] = float("nan")
    save_checkpoint(path, state)
    err = one_line_error(capsys, main(["generate", "--checkpoint", str(path)]))
    assert "NaN" in err


# -- sampling: temperatures, filters, flags --------------------------------------------------------------------------
def test_tiny_temperature_is_greedy_and_never_nan():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 11, (4, 3))
    greedy = model.generate(idx, 10)
    for temperature in (1e-3, 1e-30, 1e-300, 5e-324):
        for kwargs in ({}, {"top_k": 3}, {"top_p": 0.9}):
            out = model.generate(idx, 10, temperature=temperature, do_sample=True,
                                 generator=torch.Generator().manual_seed(1), **kwargs)
            assert torch.equal(out, greedy), (temperature, kwargs)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(idx, 1, temperature=float("nan"), do_sample=True)


def test_sampling_at_temperature_one_follows_the_softmax():
    """Subtracting the maximum before the temperature changes nothing: frequencies match softmax(logits)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=8)).eval()
    idx = torch.zeros(20_000, 1, dtype=torch.long)
    with torch.no_grad():
        probs = model(idx[:1])[0][0, -1].softmax(-1)
    out = model.generate(idx, 1, do_sample=True, generator=torch.Generator().manual_seed(0))[:, -1]
    freq = torch.bincount(out, minlength=5).float() / len(out)
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)


@pytest.mark.parametrize("flag, value", [("--temperature", "0"), ("--temperature", "nan"), ("--temperature", "inf"),
                                         ("--temperature", "1e30"), ("--top_p", "nan"), ("--top_p", "0"),
                                         ("--top_p", "1.5"), ("--top_k", "0"), ("--top_k", str(10**12)),
                                         ("--max_new_tokens", str(10**12)), ("--num_samples", "0"),
                                         ("--seed", "-1"), ("--seed", str(10**12))])
def test_generate_flags_out_of_range_are_usage_errors(tmp_path, capsys, flag, value):
    path = tiny_checkpoint(tmp_path / "best.pt")
    one_line_error(capsys, main(["generate", "--checkpoint", str(path), f"{flag}={value}"]), 2)


def test_every_generate_numeric_flag_has_a_range():
    import dataclasses

    from dl1.generate import Config

    numeric = [f for f in dataclasses.fields(Config) if f.type in ("int", "float", "int | None", "float | None")]
    assert {f.name for f in numeric} == {"max_new_tokens", "num_samples", "temperature", "top_k", "top_p", "seed"}
    assert all(f.metadata["min"] is not None and f.metadata["max"] is not None for f in numeric)


def test_generate_cli_with_a_tiny_temperature(tmp_path, capsys):
    path = tiny_checkpoint(tmp_path / "best.pt")
    assert main(["generate", "--checkpoint", str(path), "--prompt", "ab", "--max_new_tokens", "6",
                 "--num_samples", "2", "--temperature", "1e-300"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == out[3] and len(out[1]) == 8 and set(out[1]) <= {"a", "b", "c"}


# -- memory ----------------------------------------------------------------------------------------------------------
def test_memory_check_says_what_fits():
    from dl1.experiments.memory_advice import check_gpt_fits

    cfg = GPTConfig(vocab_size=65, block_size=128, model_type="gpt-mini")
    available = 2 * 2**30
    with pytest.raises(DL1Error, match=r"what fits: --train_batch_size [\d,]+$") as info:
        check_gpt_fits(cfg, 4096, available, training=True, where="cpu", batch_flag="--train_batch_size",
                       block_flag="--block_size")
    fits = int(str(info.value).rsplit(" ", 1)[1].replace(",", ""))
    assert cfg.memory_bytes(fits) <= available < cfg.memory_bytes(fits + 1)
    check_gpt_fits(cfg, fits, available, training=True, where="cpu", batch_flag="--train_batch_size")
    long = GPTConfig(vocab_size=65, block_size=2**20, n_layer=2, n_head=2, n_embd=64, fused_attention=False)
    with pytest.raises(DL1Error, match=r"--train_batch_size 1 with --block_size [\d,]+$"):
        check_gpt_fits(long, 8, available, training=True, where="cpu", batch_flag="--train_batch_size",
                       block_flag="--block_size")
    huge = GPTConfig(vocab_size=10**12, block_size=8, n_layer=1, n_head=1, n_embd=8)
    with pytest.raises(DL1Error, match="parameters and optimiser state alone need"):
        check_gpt_fits(huge, 1, available, training=True, where="cpu", batch_flag="--train_batch_size",
                       block_flag="--block_size")
    check_gpt_fits(cfg, 10**6, None, training=True, where="mps", batch_flag="--train_batch_size")  # unknown: no check


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak resident memory from /proc")
def test_memory_estimate_is_close_to_a_measured_step():
    """The estimate against the peak resident memory (VmHWM) of a real CPU training step in a fresh process."""
    import subprocess
    import sys

    code = ("import torch\nfrom dl1.models.gpt import GPT, GPTConfig\ntorch.set_num_threads(1)\n"
            "def peak():\n    s = open('/proc/self/status').read()\n"
            "    return int(s.split('VmHWM:')[1].split()[0]) * 1024\n"
            "c = GPTConfig(vocab_size=65, block_size=128, n_layer=4, n_head=4, n_embd=128, attn_pdrop=0.1)\n"
            "base = peak()\n"
            "m = GPT(c); o = torch.optim.AdamW(m.parameters()); x = torch.randint(0, 65, (32, 128))\n"
            "for _ in range(2):\n    _, l = m(x, x); o.zero_grad(); l.backward(); o.step()\n"
            "print(peak() - base, c.memory_bytes(32))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    measured, estimated = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True, env=env).stdout.split())
    assert 0.7 * measured < estimated < 1.4 * measured, (measured, estimated)


def test_sizes_that_cannot_fit_are_one_line_before_allocating(tmp_path, capsys, monkeypatch):
    import dl1.run.device

    monkeypatch.setattr(dl1.run.device, "available_memory", lambda device: 2**30)
    text = tmp_path / "t.txt"
    text.write_text("abcab" * 400)
    out = tmp_path / "runs"
    flags = ["--txt_file", str(text), *TINY, "--out_dir", str(out), "--max_iters", "2"]
    err = one_line_error(capsys, main(["run", "gpt", *flags, "--train_batch_size", "65536", "--block_size", "64"]))
    assert "what fits: --train_batch_size" in err and "available on cpu" in err
    err = one_line_error(capsys, main(["run", "gpt", *flags, "--n_layer", "1024", "--n_embd", "8192", "--n_head",
                                       "64"]))
    assert "alone need" in err
    err = one_line_error(capsys, main(["run", "gpt", *flags, "--eval_batch_size", "65536", "--block_size", "1024",
                                       "--n_embd", "1024", "--train_batch_size", "1"]))
    assert "--eval_batch_size" in err
    assert not out.exists() or not any(p.is_dir() for p in out.rglob("*")), list(out.rglob("*"))
    path = tiny_checkpoint(tmp_path / "best.pt")
    config = GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=2, n_embd=8)
    monkeypatch.setattr(dl1.run.device, "available_memory", lambda device: config.memory_bytes(20, training=False))
    err = one_line_error(capsys, main(["generate", "--checkpoint", str(path), "--num_samples", "256",
                                       "--max_new_tokens", "100000"]))
    assert err.rstrip().endswith("what fits: --num_samples 20")


# -- one preset path, one size rule, choices from the presets -----------------------------------------------------
def test_preset_then_an_explicit_block_size_trains_with_that_block(tmp_path):
    from dl1.experiments import execute, make_config

    cfg = make_config("gpt", ["--preset", "nanogpt-cpu", "--block_size", "128"])
    assert cfg.block_size == 128 and (cfg.n_layer, cfg.n_embd, cfg.train_batch_size) == (4, 128, 12)
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    summary = execute("gpt", ["--preset", "nanogpt-cpu", "--block_size", "128", "--txt_file", str(text),
                              "--max_iters", "2", "--sample_tokens", "0", "--final_sample_tokens", "0",
                              "--threads", "1"], out_dir=tmp_path / "runs", quiet=True)
    assert summary["model"]["block_size"] == 128 and summary["model"]["n_embd"] == 128
    assert json.loads((Path(summary["run_dir"]) / "config.json").read_text())["block_size"] == 128


def test_model_type_choices_are_the_model_presets():
    import dataclasses

    from dl1.experiments.gpt import Config

    field = next(f for f in dataclasses.fields(Config) if f.name == "model_type")
    assert tuple(field.metadata["choices"]) == tuple(PRESETS)


def test_the_size_rule_is_one_usage_error_at_config_time():
    from dl1.errors import UsageError
    from dl1.experiments import make_config

    with pytest.raises(UsageError, match="divisible"):
        make_config("gpt", ["--n_layer", "1", "--n_head", "3", "--n_embd", "8"])
    with pytest.raises(UsageError, match="all three"):
        make_config("gpt", ["--preset", "nanogpt-cpu", "--n_layer", "None"])
    with pytest.raises(ValueError, match="divisible"):
        GPT(GPTConfig(vocab_size=3, block_size=4, n_layer=1, n_head=3, n_embd=8))


def test_tokenizer_state_is_checked():
    assert CharTokenizer.from_state_dict({"chars": ["b", "a"]}).chars == ["a", "b"]
    for bad in ({"chars": ["a", "a"]}, {"chars": "ab"}, [], {"chars": [1]}):
        with pytest.raises(DL1Error, match="tokenizer"):
            CharTokenizer.from_state_dict(bad)


# -- resume equals uninterrupted, every logged number -------------------------------------------------------------
def _records(run_dir: str) -> list[dict]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "eval_s")} for r in rows if r["split"] != "speed"]


@pytest.mark.parametrize("kill_at", [7, 12])
def test_run_killed_at_any_step_and_resumed_logs_what_an_uninterrupted_run_logs(tmp_path, monkeypatch, kill_at):
    from dl1.experiments import execute
    from dl1.run.folder import Run

    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 30)
    flags = ["--txt_file", str(text), *TINY, "--max_iters", "20", "--eval_interval", "5", "--log_interval", "3",
             "--sample_tokens", "5", "--dropout", "0.1"]
    full = execute("gpt", flags, out_dir=tmp_path / "a", quiet=True)
    log = Run.log

    def killed(self, step, split, metrics, **extra):
        if step >= kill_at and split == "train_iter":
            raise KeyboardInterrupt
        return log(self, step, split, metrics, **extra)

    monkeypatch.setattr(Run, "log", killed)
    with pytest.raises(KeyboardInterrupt):
        execute("gpt", flags, out_dir=tmp_path / "b", quiet=True)
    monkeypatch.setattr(Run, "log", log)
    run_dir = next((tmp_path / "b" / "gpt").iterdir())
    resumed = execute("gpt", [*flags, "--resume", str(run_dir)], out_dir=tmp_path / "b", quiet=True)
    assert resumed["run_dir"] == str(run_dir)
    expected = _records(full["run_dir"])
    assert len([r for r in expected if r["split"] == "train_iter"]) == 6
    assert _records(resumed["run_dir"]) == expected
    assert resumed["final"] == full["final"] and resumed["sample"] == full["sample"]


def _two_rank_kill_and_resume(rank: int, folder: str, kill_at: int) -> None:
    """One of two gloo ranks: an uninterrupted run into a/, the same run killed at step ``kill_at`` into b/, then
    resumed there; the finals of both land in ``final{rank}.json``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2", DL1_PROGRESS="0")
    torch.set_num_threads(1)
    from dl1.experiments import execute
    from dl1.run.folder import Run
    from dl1.train import distributed

    distributed.init_distributed("gloo", init_method=f"file://{folder}/init")
    flags = ["--txt_file", f"{folder}/t.txt", *TINY, "--max_iters", "10", "--eval_interval", "5", "--log_interval",
             "3", "--sample_tokens", "5", "--final_sample_tokens", "20", "--dropout", "0.1"]
    full = execute("gpt", flags, run_dir=f"{folder}/a", quiet=True)
    log = Run.log

    def killed(self, step, split, metrics, **extra):
        if step >= kill_at and split == "train_iter":
            raise KeyboardInterrupt
        return log(self, step, split, metrics, **extra)

    Run.log = killed
    try:
        execute("gpt", flags, run_dir=f"{folder}/b", quiet=True)
    except KeyboardInterrupt:
        pass
    Run.log = log
    resumed = execute("gpt", [*flags, "--resume", f"{folder}/b"], run_dir=f"{folder}/b", quiet=True)
    Path(folder, f"final{rank}.json").write_text(json.dumps([{k: s[k] for k in ("final", "sample")}
                                                            for s in (full, resumed)]))
    distributed.cleanup()


def test_two_ranks_killed_and_resumed_log_what_an_uninterrupted_run_logs(tmp_path):
    """Under torchrun (two gloo ranks, dropout on: each rank its own stream) a run killed mid-interval and resumed
    logs every number the uninterrupted run logs, the rank-averaged training-loss window included; both ranks end
    with the same final losses and sample."""
    import torch.multiprocessing as mp

    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog. " * 30)
    procs = [mp.get_context("spawn").Process(target=_two_rank_kill_and_resume, args=(r, str(tmp_path), 7))
             for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    expected = _records(str(tmp_path / "a"))
    assert len([r for r in expected if r["split"] == "train_iter"]) == 3  # steps 3, 6 (its window spans the
    assert _records(str(tmp_path / "b")) == expected  # checkpoint at 5 the resumed run starts from) and 9
    finals = [json.loads((tmp_path / f"final{r}.json").read_text()) for r in (0, 1)]
    assert finals[0][0] == finals[0][1] == finals[1][0] == finals[1][1]


def test_a_named_size_checkpoint_generates(tmp_path, capsys):
    """A run with --model_type stores the preset name and its sizes; reading that config back is the same model."""
    from dl1.experiments import execute

    text = tmp_path / "t.txt"
    text.write_text("abcab" * 40)
    summary = execute("gpt", ["--txt_file", str(text), "--model_type", "gpt-nano", "--block_size", "8",
                              "--train_batch_size", "4", "--max_iters", "2", "--sample_tokens", "0",
                              "--final_sample_tokens", "0", "--threads", "1"], out_dir=tmp_path / "runs", quiet=True)
    assert summary["model"]["model_type"] == "gpt-nano" and summary["model"]["n_embd"] == 48
    capsys.readouterr()
    assert main(["generate", "--checkpoint", summary["run_dir"], "--prompt", "ab", "--max_new_tokens", "4"]) == 0
    assert capsys.readouterr().out.count("--- sample") == 3


def test_resume_on_another_text_is_one_line_and_changes_nothing(tmp_path, capsys):
    from dl1.experiments import execute

    text, other = tmp_path / "t.txt", tmp_path / "o.txt"
    text.write_text("abcab" * 40)
    other.write_text("xyzxy" * 40)
    summary = execute("gpt", ["--txt_file", str(text), *TINY, "--max_iters", "2"], out_dir=tmp_path / "runs",
                      quiet=True)
    folder = Path(summary["run_dir"])
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "run.lock"}
    err = one_line_error(capsys, main(["run", "gpt", "--txt_file", str(other), *TINY, "--max_iters", "4",
                                       "--resume", str(folder)]))
    assert "vocabulary differs" in err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "run.lock"} == before
