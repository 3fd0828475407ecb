"""Character-level GPT: attention paths, causality, generation, tokenizer, decay groups, GPT-2 weights, runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dl1.data.text import CharCorpus, CharTokenizer, load_corpus, read_text, resolve_text_file
from dl1.errors import DL1Error, UsageError
from dl1.models.gpt import GPT, PRESETS, GPTConfig, filter_logits


def tiny_gpt(vocab: int = 11, block: int = 8, dropout: float = 0.0, fused: bool = True) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=2, n_head=2, n_embd=16, embd_pdrop=dropout,
                         resid_pdrop=dropout, attn_pdrop=dropout, fused_attention=fused))


# -- attention ------------------------------------------------------------------------------------------------------
def test_attention_paths_equal_forward_and_backward():
    model = tiny_gpt().double()
    idx = torch.randint(0, 11, (3, 8))
    out = {}
    for fused in (True, False):
        model.set_fused_attention(fused)
        model.zero_grad()
        logits, loss = model(idx, idx)
        loss.backward()
        out[fused] = (logits.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-10, atol=1e-10)
    for a, b in zip(out[True][1], out[False][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_explicit_attention_matches_a_hand_loop():
    """The explicit path against a per-query loop over the allowed keys (no mask at all)."""
    model = tiny_gpt(fused=False).eval().double()
    attn = model.transformer.h[0].attn
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    q, k, v = attn.c_attn(x).split(16, dim=2)
    heads = [t.view(2, 5, 2, 8).transpose(1, 2) for t in (q, k, v)]  # (B, nh, T, hs)
    y = torch.zeros(2, 2, 5, 8, dtype=torch.float64)
    for t in range(5):
        scores = heads[0][:, :, t:t + 1] @ heads[1][:, :, :t + 1].transpose(-2, -1) / 8 ** 0.5  # (B, nh, 1, t+1)
        y[:, :, t] = (scores.softmax(-1) @ heads[2][:, :, :t + 1])[:, :, 0]
    expected = attn.c_proj(y.transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x), expected)


@pytest.mark.parametrize("fused", [True, False])
def test_causality_future_tokens_never_change_earlier_logits(fused):
    model = tiny_gpt(fused=fused).eval()
    idx = torch.randint(0, 11, (2, 8))
    logits, _ = model(idx)
    for t in range(7):
        changed = idx.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1 + torch.randint(0, 9, changed[:, t + 1:].shape)) % 11
        new_logits, _ = model(changed)
        torch.testing.assert_close(new_logits[:, :t + 1], logits[:, :t + 1])
        assert not torch.allclose(new_logits[:, t + 1:], logits[:, t + 1:])


def test_dropout_active_only_in_training():
    model = tiny_gpt(dropout=0.5)
    idx = torch.randint(0, 11, (2, 8))
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0])
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])


# -- configuration, initialisation, optimiser ---------------------------------------------------------------------
def test_presets_and_xor_rule():
    for name, (n_layer, n_head, n_embd) in PRESETS.items():
        cfg = GPTConfig(vocab_size=5, block_size=4, model_type=name).resolved()
        assert (cfg.n_layer, cfg.n_head, cfg.n_embd) == (n_layer, n_head, n_embd)
    assert PRESETS["gpt-mini"] == (6, 6, 192)
    with pytest.raises(ValueError, match="exactly one"):
        GPTConfig(vocab_size=5, block_size=4, model_type="gpt-nano", n_layer=1, n_head=1, n_embd=4).resolved()
    with pytest.raises(ValueError, match="exactly one"):
        GPTConfig(vocab_size=5, block_size=4).resolved()
    with pytest.raises(ValueError, match="unknown model_type"):
        GPTConfig(vocab_size=5, block_size=4, model_type="gpt").resolved()


def test_init_and_param_count():
    model = GPT(GPTConfig(vocab_size=65, block_size=32, model_type="gpt-nano"))
    assert model.num_params() == sum(p.numel() for n, p in model.named_parameters() if not n.startswith("lm_head"))
    proj = model.transformer.h[0].attn.c_proj.weight
    assert abs(proj.std().item() - 0.02 / (2 * 3) ** 0.5) < 0.003
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002
    assert model.transformer.h[0].mlp.c_fc.bias.abs().max() == 0


def test_decay_groups_cover_every_parameter_once():
    model = tiny_gpt()
    decay, no_decay = model.decay_groups()
    names = [n for n, _ in model.named_parameters()]
    assert sorted(decay + no_decay) == sorted(names)
    assert all(n.endswith("weight") and "ln" not in n and "wte" not in n and "wpe" not in n for n in decay)
    assert "lm_head.weight" in decay and "transformer.wte.weight" in no_decay and "transformer.ln_f.bias" in no_decay

    class TC:
        learning_rate, weight_decay, betas = 1e-3, 0.1, (0.9, 0.95)

    opt = model.configure_optimizers(TC.weight_decay, TC.learning_rate, TC.betas)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(names)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


# -- generation ------------------------------------------------------------------------------------------------------
def test_generate_shapes_greedy_determinism_and_cropping():
    model = tiny_gpt(block=8).eval()
    idx = torch.randint(0, 11, (3, 5))
    out = model.generate(idx, 12)  # 17 > block size: the context is cropped
    assert out.shape == (3, 17)
    assert torch.equal(out[:, :5], idx)
    torch.testing.assert_close(model.generate(idx, 12), out)
    # greedy step by step with the last 8 tokens as context
    seq = idx
    for _ in range(12):
        logits, _ = model(seq[:, -8:])
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(seq, out)


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model = tiny_gpt().eval()
    idx = torch.zeros(4, 1, dtype=torch.long)
    a = model.generate(idx, 6, do_sample=True, generator=torch.Generator().manual_seed(1))
    b = model.generate(idx, 6, do_sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    greedy = model.generate(idx, 6)
    assert torch.equal(model.generate(idx, 6, do_sample=True, top_k=1), greedy)
    assert torch.equal(model.generate(idx, 6, do_sample=True, top_p=1e-6), greedy)


def test_top_k_and_top_p_never_pick_excluded_tokens():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.25, 0.25, 0.25, 0.25]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, [0, 2]]).all()
    assert torch.isfinite(filter_logits(logits, top_k=2)[0, [1, 3]]).all()
    assert torch.isfinite(filter_logits(logits, top_k=100)).all()  # k clamped to the vocabulary
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))
    assert kept[0].tolist() == [False, True, False, True]  # 0.5 + 0.3 >= 0.7
    assert kept[1].sum() == 3  # 0.25 * 3 >= 0.7
    assert torch.isfinite(filter_logits(logits, top_p=0.5))[0].tolist() == [False, True, False, False]
    # sampling many times from a model never leaves the allowed set
    model = tiny_gpt(vocab=11).eval()
    idx = torch.zeros(200, 3, dtype=torch.long)
    last, _ = model(idx[:1])
    allowed_k = set(torch.topk(last[0, -1], 3).indices.tolist())
    out = model.generate(idx, 1, do_sample=True, top_k=3, temperature=5.0)
    assert set(out[:, -1].tolist()) <= allowed_k
    probs = (last[0, -1] / 5.0).softmax(-1)
    order = probs.argsort(descending=True)
    n_keep = int((probs[order].cumsum(0) < 0.5).sum()) + 1
    out = model.generate(idx, 1, do_sample=True, top_p=0.5, temperature=5.0)
    assert set(out[:, -1].tolist()) <= set(order[:n_keep].tolist())


# -- text data -------------------------------------------------------------------------------------------------------
def test_tokenizer_round_trip_and_unknown_characters():
    text = "Hello, wörld!\nÀB"
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text)) and tok.chars == sorted(set(text))
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode_array(text).tolist() == tok.encode(text)
    assert CharTokenizer.from_state_dict(tok.state_dict()).chars == tok.chars
    with pytest.raises(DL1Error, match="not in the vocabulary"):
        tok.encode("xyz")
    with pytest.raises(DL1Error, match="not in the vocabulary"):
        tok.encode_array("Hello?")


def test_read_text_encodings(tmp_path, capsys):
    utf = tmp_path / "bom.txt"
    utf.write_bytes("\ufeffcafé".encode())
    assert read_text(utf) == ("café", "utf-8")
    latin = tmp_path / "latin.tex"
    latin.write_bytes("d\xe9riv\xe9e \\int".encode("latin-1"))
    assert read_text(latin) == ("dérivée \\int", "latin-1")
    assert "Latin-1" in capsys.readouterr().out
    with pytest.raises(DL1Error, match="not valid utf-8"):
        read_text(latin, "utf-8")
    with pytest.raises(DL1Error, match="unknown encoding"):
        read_text(latin, "klingon")


def test_split_batches_and_whole_split_windows():
    text = "".join(chr(97 + i % 26) for i in range(1000))
    corpus = CharCorpus.from_text(text, val_fraction=0.1)
    assert len(corpus.train) == 900 and len(corpus.val) == 100
    assert corpus.tokenizer.decode(corpus.val[:5]) == text[900:905]  # contiguous: the end of the text
    x, y = corpus.get_batch("train", 7, 16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (7, 16)
    assert torch.equal(x[:, 1:], y[:, :-1]) and ((y[:, -1] - x[:, -1]) % 26 == 1).all()
    for block in (7, 10, 99):
        pairs = list(corpus.eval_windows("val", block, 4))
        xs = torch.cat([a.flatten() for a, _ in pairs])
        ys = torch.cat([b.flatten() for _, b in pairs])
        assert torch.equal(xs, corpus.val[:-1]) and torch.equal(ys, corpus.val[1:])  # every character once
    corpus.check(99)  # a validation split shorter than a window is still evaluated (one shorter window)
    with pytest.raises(DL1Error, match="block_size"):
        corpus.check(900)


def test_validation_sums_build_no_graph_with_gradients_on():
    """The run's validation calls summed_loss with gradients on (between training steps): no batch's graph may
    survive in the running sum (it held every batch's activations, ~3.7 GB on tiny Shakespeare), and the sum equals
    the per-batch losses added up."""
    from dl1.models.gpt import summed_loss

    corpus = CharCorpus.from_text("".join(chr(97 + i % 11) for i in range(3000)), val_fraction=0.5)
    model = tiny_gpt()
    assert torch.is_grad_enabled()
    total, count = summed_loss(model, corpus.eval_windows("val", 8, 16), torch.device("cpu"))
    assert total.grad_fn is None and not total.requires_grad and count == len(corpus.val) - 1
    with torch.no_grad():
        expected = sum(torch.nn.functional.cross_entropy(model(x)[0].flatten(0, 1), y.flatten(), reduction="sum")
                       .double() for x, y in corpus.eval_windows("val", 8, 16))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_take_their_rows_of_the_single_process_batch(world):
    """Data parallel random windows: every rank draws the step's whole batch from the one seeded stream and keeps
    its rows, so the ranks' windows differ and together are exactly what one process trains on, step by step."""
    from dl1.data.text import random_batches

    corpus = CharCorpus.from_text("".join(chr(97 + i % 26) for i in range(2000)), val_fraction=0.1)
    single = list(random_batches(corpus, 5, 8, 16, seed=3))
    g = torch.Generator().manual_seed(3)  # one process: the same windows as get_batch drawing from the stream
    for x, y in single:
        gx, gy = corpus.get_batch("train", 8, 16, generator=g)
        assert torch.equal(x, gx) and torch.equal(y, gy)
    ranks = [list(random_batches(corpus, 5, 8, 16, seed=3, rank=r, world_size=world)) for r in range(world)]
    for step, (x, y) in enumerate(single):
        parts = [ranks[r][step] for r in range(world)]
        assert all(px.shape == (8 // world, 16) for px, _ in parts)
        assert torch.equal(torch.cat([px for px, _ in parts]), x) and torch.equal(torch.cat([py for _, py in parts]), y)
        assert not torch.equal(parts[0][0], parts[1][0])  # each rank trains on windows of its own
    assert torch.equal(list(random_batches(corpus, 5, 8, 16, seed=3, rank=1, world_size=world))[4][0], ranks[1][4][0])
    with pytest.raises(DL1Error, match="cannot be shared"):
        random_batches(corpus, 1, 6, 16, seed=0, rank=0, world_size=4)


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_validation_windows_shared_by_ranks_cover_the_split_once(world):
    """Each rank's part of the whole-split windows (the shorter tail window included, max_windows honoured):
    together every character once, in order."""
    from dl1.train.distributed import DistInfo, shard

    corpus = CharCorpus.from_text("".join(chr(97 + i % 26) for i in range(1000)), val_fraction=0.1)
    for block, max_windows in ((7, None), (10, None), (99, None), (7, 5)):
        whole = list(corpus.eval_windows("val", block, 4, max_windows))
        count = corpus.count_eval_windows("val", block, max_windows)
        assert count == sum(len(x) for x, _ in whole)
        parts = [list(corpus.eval_windows("val", block, 4, max_windows, part=shard(count, DistInfo(r, world))))
                 for r in range(world)]
        for pick in (0, 1):
            joined = torch.cat([t[pick].flatten() for part in parts for t in part])
            assert torch.equal(joined, torch.cat([t[pick].flatten() for t in whole]))
        assert all(len(x) <= 4 for part in parts for x, _ in part)


def test_named_corpus_is_the_shipped_file_offline(tmp_path, monkeypatch, no_network):
    import dl1.data.text as text

    shipped = resolve_text_file("shakespeare", data_dir=tmp_path / "empty")  # no data folder, no network
    assert shipped.parent == Path(text.__file__).parent / "corpora" and shipped.stat().st_size == 1_115_394
    assert shipped.read_text().startswith("First Citizen:\n") and not no_network
    damaged = tmp_path / "corpora"
    damaged.mkdir()
    (damaged / "tiny_shakespeare.txt").write_text("First Citizen:\n")
    monkeypatch.setattr(text, "CORPORA_DIR", damaged)
    with pytest.raises(DL1Error, match="damaged"):
        resolve_text_file("shakespeare")
    with pytest.raises(DL1Error, match="not found"):
        resolve_text_file(str(tmp_path / "missing.txt"))
    assert load_corpus("synthetic").path == "synthetic"


# -- GPT-2 weights ---------------------------------------------------------------------------------------------------
def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in character for each byte 0..255 (its byte-level BPE alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _tiny_hf_gpt2(tmp_path: Path | None = None):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=257, n_positions=32, n_embd=24, n_layer=2, n_head=3,
                                     bos_token_id=256, eos_token_id=256)
    hf = transformers.GPT2LMHeadModel(config).eval()
    if tmp_path is not None:  # a real on-disk GPT-2 folder: weights + a byte-level BPE tokenizer without merges
        hf.save_pretrained(tmp_path)
        vocab = {c: i for i, c in enumerate(_bytes_to_unicode())}
        vocab["<|endoftext|>"] = 256
        (tmp_path / "vocab.json").write_text(json.dumps(vocab))
        (tmp_path / "merges.txt").write_text("#version: 0.2\n")
        try:  # transformers >= 5
            tokenizer = transformers.GPT2Tokenizer(vocab=vocab, merges=[])
        except TypeError:  # transformers 4: file paths
            tokenizer = transformers.GPT2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
        tokenizer.save_pretrained(tmp_path)
    return hf


def test_from_hf_gives_the_same_logits():
    hf = _tiny_hf_gpt2()
    model = GPT.from_hf(hf).eval()
    idx = torch.randint(0, 257, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, rtol=1e-4, atol=1e-4)
        model.set_fused_attention(False)
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, rtol=1e-4, atol=1e-4)


def test_from_pretrained_folder_and_generate_cli(tmp_path, capsys):
    from dl1.cli import main
    from dl1.hub.gpt2 import from_pretrained

    hf = _tiny_hf_gpt2(tmp_path)
    model = from_pretrained(str(tmp_path)).eval()
    idx = torch.randint(0, 257, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, rtol=1e-4, atol=1e-4)
    assert main(["generate", "--pretrained", str(tmp_path), "--prompt", "Hi", "--max_new_tokens", "5",
                 "--num_samples", "2", "--no-do_sample"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 2 and "\nHi" in out
    assert main(["generate", "--pretrained", str(tmp_path / "nope")]) == 1
    assert "unknown pretrained model" in capsys.readouterr().err
    assert main(["generate", "--pretrained", "gpt2"]) == 1  # offline in tests: one line, no traceback
    assert "cannot load GPT-2 weights" in capsys.readouterr().err


# -- end to end -------------------------------------------------------------------------------------------------------
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "8", "--block_size", "8", "--train_batch_size", "4",
        "--eval_interval", "5", "--sample_tokens", "10", "--warmup_iters", "0", "--final_sample_tokens", "20"]


def two_symbol_text(n: int, seed: int = 0, keep: float = 0.9) -> str:
    """A and B where each character repeats the one two places before it with probability ``keep``: the next
    character depends on context only (the current one says nothing), at an entropy rate of H(0.9) = 0.325 nats."""
    g = torch.Generator().manual_seed(seed)
    ids = [0, 1]
    for r in torch.rand(n - 2, generator=g).tolist():
        ids.append(ids[-2] if r < keep else 1 - ids[-2])
    return "".join("AB"[i] for i in ids)


def test_smoke_run_on_a_two_character_text_then_generate(tmp_path, capsys):
    """The validation loss lands between the text's entropy rate (0.325) and a context-blind model's ln 2 = 0.693:
    a model that sees the character it predicts (a leak of the future) scores below the lower bound, one whose
    attention or training does not work stays near 0.69, above the upper one."""
    from dl1.cli import main
    from dl1.experiments import execute

    toy = tmp_path / "toy_example.txt"
    toy.write_text(two_symbol_text(3000))
    summary = execute("gpt", ["--txt_file", str(toy), *TINY, "--max_iters", "300", "--eval_interval", "150",
                              "--train_batch_size", "16", "--learning_rate", "1e-2"], out_dir=tmp_path / "runs",
                      quiet=True)
    assert summary["data"]["vocab_size"] == 2 and summary["iters"] == 300
    assert 0.25 < summary["final"]["val_loss"] < 0.5 and summary["speed"]["train_tokens_per_s"] > 0
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "checkpoints" / "best.pt").is_file() and (run_dir / "figures" / "gpt_loss.png").is_file()
    samples = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if r["split"] == "sample"]
    assert len(samples) == 2 and set(samples[0]["text"]) <= {"A", "B"}
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(run_dir), "--prompt", "AB", "--max_new_tokens", "12",
                 "--num_samples", "2", "--top_k", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "--- sample 1/2 ---" and len(out[1]) == 14 and set(out[1]) <= {"A", "B"}
    assert main(["generate", "--checkpoint", str(run_dir), "--prompt", "ABC"]) == 1
    assert "not in the vocabulary" in capsys.readouterr().err
    assert main(["generate"]) == 2


def test_resume_continues_exactly(tmp_path):
    from dl1.experiments import execute

    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 30)
    flags = ["--txt_file", str(text), *TINY, "--lr_schedule", "constant", "--sample_tokens", "0"]
    full = execute("gpt", [*flags, "--max_iters", "10"], out_dir=tmp_path / "a", quiet=True)
    half = execute("gpt", [*flags, "--max_iters", "5"], out_dir=tmp_path / "b", quiet=True)
    resumed = execute("gpt", [*flags, "--max_iters", "10", "--resume", half["run_dir"]], out_dir=tmp_path / "b",
                      quiet=True)
    assert resumed["run_dir"] == half["run_dir"]
    assert resumed["final"]["val_loss"] == pytest.approx(full["final"]["val_loss"], rel=1e-6)


def test_run_without_validation_split(tmp_path):
    from dl1.experiments import execute

    text = tmp_path / "t.txt"
    text.write_text("abcab" * 40)
    summary = execute("gpt", ["--txt_file", str(text), *TINY, "--max_iters", "5", "--val_fraction", "0", "--threads",
                              "1"], out_dir=tmp_path, quiet=True)
    assert summary["final"]["val_loss"] is None and summary["data"]["val_chars"] == 0
    assert summary["final"]["train_loss"] > 0 and Path(summary["checkpoint"]).is_file()


def test_preset_and_size_flags():
    from dl1.experiments import make_config

    cfg = make_config("gpt", ["--preset", "nanogpt-cpu", "--block_size", "32"])
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.train_batch_size, cfg.max_iters) == (4, 4, 128, 12, 2000)
    assert cfg.block_size == 32 and cfg.dropout == 0.0 and cfg.min_lr == 1e-4 and cfg.betas == (0.9, 0.99)
    assert cfg.precision == "fp32" and make_config("gpt", []).precision == "fp32"
    assert make_config("gpt", ["--preset", "nanogpt-gpu"]).precision == "bf16"  # nanoGPT's bfloat16 ...
    assert make_config("gpt", ["--preset", "nanogpt-gpu", "--precision", "fp16"]).precision == "fp16"  # its fallback
    with pytest.raises(UsageError, match="all three"):
        make_config("gpt", ["--n_layer", "2"])
    with pytest.raises(UsageError, match="two values"):
        make_config("gpt", ["--betas", "0.9"])


def test_cosine_schedule_reaches_min_lr():
    from dl1.train import warmup_cosine

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = warmup_cosine(opt, 100, 2000, min_factor=0.1)
    lrs = []
    for _ in range(2000):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4, rel=1e-3)


def test_iterations_from_epochs_or_max_iters():
    from dl1.experiments import make_config
    from dl1.experiments.gpt import DEFAULT_ITERS, total_iters

    assert total_iters(make_config("gpt", []), 10_000) == DEFAULT_ITERS
    assert total_iters(make_config("gpt", ["--max_iters", "7", "--num_epochs", "3"]), 10_000) == 7
    # the course's epoch: (N_train - block_size) windows in batches of train_batch_size
    assert total_iters(make_config("gpt", ["--num_epochs", "2"]), 10_128) == 2 * 10_000 // 128 + 1


def test_course_preset_is_the_course_training(tmp_path):
    """``--preset course``: the course's train.py (whole text, constant 5e-4 without warm-up, gpt-mini, block 128,
    batch 128, AdamW (0.9, 0.95) with decay 0.1, clipping 1, dropout 0.1, tanh GELU, 100 epochs, seed 0)."""
    from dl1.experiments import execute, make_config
    from dl1.experiments.gpt import model_config, total_iters

    cfg = make_config("gpt", ["--preset", "course", "--txt_file", "book.txt"])
    assert (cfg.val_fraction, cfg.lr_schedule, cfg.warmup_iters, cfg.learning_rate) == (0.0, "constant", 0, 5e-4)
    assert model_config(cfg, 80).resolved().model_type == "gpt-mini" and cfg.n_layer is None
    assert (cfg.block_size, cfg.train_batch_size, cfg.betas, cfg.weight_decay) == (128, 128, (0.9, 0.95), 0.1)
    assert (cfg.clip_grad_norm, cfg.dropout, cfg.activation, cfg.seed) == (1.0, 0.1, "gelu_tanh", 0)
    assert cfg.max_iters is None and cfg.num_epochs == 100 and cfg.txt_file == "book.txt"
    assert total_iters(cfg, 10_128) == 100 * 10_000 // 128 + 1  # 100 epochs of (N - block) / batch iterations
    assert make_config("gpt", ["--preset", "course", "--block_size", "32"]).block_size == 32  # explicit flags win
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 6)
    summary = execute("gpt", ["--preset", "course", "--txt_file", str(text), "--model_type", "gpt-nano",
                              "--block_size", "8", "--train_batch_size", "4", "--max_iters", "4", "--log_interval", "1",
                              "--sample_tokens", "0", "--final_sample_tokens", "0"], out_dir=tmp_path, quiet=True)
    assert summary["data"]["val_chars"] == 0 and summary["final"]["val_loss"] is None
    rows = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["split"] == "train_iter"]
    assert len(lrs) == 4 and lrs == pytest.approx([5e-4] * 4, rel=1e-12)  # constant from the first step
