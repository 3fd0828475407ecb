"""The GPT's fast CPU path (oneDNN linear layers, fused AdamW) computes what the plain one does; the nanoGPT benchmark
parses nanoGPT's log, maps its checkpoint onto dl1's GPT and runs nanoGPT's own code side by side."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from dl1.models import gpt as G
from dl1.models.gpt import GPT, GPTConfig, Linear, set_onednn_linear

ROOT = Path(__file__).resolve().parents[1]
ONEDNN = G._onednn_available()
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="this PyTorch build has no oneDNN linear")


@pytest.fixture
def every_size(monkeypatch):
    """oneDNN for every product, however small (tiny shapes keep the tests fast)."""
    monkeypatch.setattr(G, "ONEDNN_MIN_MACS", 0)


def _grads(layer: torch.nn.Linear, x: torch.Tensor, g: torch.Tensor, fn) -> list[torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    y = fn(x)
    y.backward(g)
    return [y.detach(), x.grad, layer.weight.grad] + ([layer.bias.grad] if layer.bias is not None else [])


@needs_onednn
@pytest.mark.parametrize("k,n,bias", [(16, 48, True), (64, 16, True), (16, 11, False), (32, 32, True)])
def test_onednn_linear_equals_the_float64_product_forward_and_backward(k, n, bias, every_size):
    """Both weight-gradient branches (n <= k, n > k), with and without bias, a 3-d input: output, dx, dW and db
    equal float64 F.linear to float32 rounding, and the oneDNN path is the one that ran."""
    torch.manual_seed(0)
    layer = Linear(k, n, bias=bias)
    x, g = torch.randn(3, 7, k), torch.randn(3, 7, n)
    y = layer(x)
    assert type(y.grad_fn).__name__ == "_OneDNNLinearBackward"
    ours = [t.clone() for t in _grads(layer, x, g, layer)]
    ref64 = copy.deepcopy(layer).double()
    exact = _grads(ref64, x.double(), g.double(), lambda t: F.linear(t, ref64.weight, ref64.bias))
    for a, b in zip(ours, exact, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_other_dtypes_autocast_and_the_switch_use_f_linear(every_size):
    torch.manual_seed(0)
    layer = Linear(8, 4)
    x = torch.randn(5, 8)
    assert type(layer(x).grad_fn).__name__ == "_OneDNNLinearBackward"
    assert type(layer.double()(x.double()).grad_fn).__name__ != "_OneDNNLinearBackward"  # float64: F.linear
    layer.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16  # autocast decides, as for nn.Linear
    assert layer(torch.randn(8)).shape == (4,)  # a 1-d input
    before = set_onednn_linear(False)
    try:
        assert type(layer(x).grad_fn).__name__ != "_OneDNNLinearBackward"
    finally:
        assert set_onednn_linear(before) is False
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


@needs_onednn
def test_training_steps_match_the_plain_path(every_size):
    """Five AdamW steps of a small GPT with oneDNN linears and the fused optimiser against F.linear and the
    per-tensor optimiser: the same losses and weights to float32 rounding."""
    from types import SimpleNamespace

    def train(onednn: bool) -> tuple[list[float], list[torch.Tensor]]:
        before = set_onednn_linear(onednn)
        try:
            torch.manual_seed(0)
            model = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=32, embd_pdrop=0.0,
                                  resid_pdrop=0.0, attn_pdrop=0.0, activation="gelu"))
            opt = model.configure_optimizers(SimpleNamespace(weight_decay=0.1, learning_rate=3e-3, betas=(0.9, 0.99)))
            if not onednn:  # the per-tensor optimiser of the same groups
                opt = torch.optim.AdamW(opt.param_groups, lr=3e-3, betas=(0.9, 0.99), foreach=False)
            g = torch.Generator().manual_seed(1)
            losses = []
            for _ in range(5):
                idx = torch.randint(0, 13, (4, 17), generator=g)
                _, loss = model(idx[:, :-1], idx[:, 1:])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            return losses, [p.detach().clone() for p in model.parameters()]
        finally:
            set_onednn_linear(before)

    (fast_losses, fast), (plain_losses, plain) = train(True), train(False)
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_onednn
def test_small_products_use_f_linear_and_large_ones_onednn():
    """Below about a million multiply-adds (token-by-token generation) oneDNN's fixed cost per call loses."""
    layer = Linear(128, 384)
    assert type(layer(torch.randn(1, 8, 128)).grad_fn).__name__ != "_OneDNNLinearBackward"  # 0.4 M
    assert type(layer(torch.randn(12, 64, 128)).grad_fn).__name__ == "_OneDNNLinearBackward"  # 38 M


def test_cpu_optimiser_is_fused():
    from types import SimpleNamespace

    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=8))
    opt = model.configure_optimizers(SimpleNamespace(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.95)))
    assert opt.defaults["fused"] is True


# -- the nanoGPT benchmark ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpt_under_test", ROOT / "benchmarks" / "gpt.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_nanogpt_log_skips_iteration_zero_and_evaluations(bench):
    """(arrival time, process CPU seconds, line): iterations 1, 2 and 4 are timed; 0 and 3 include an evaluation."""
    lines = [(0.0, 1.0, "step 0: train loss 4.2000, val loss 4.1000"),
             (0.1, 2.0, "iter 0: loss 4.2, time 900.00ms, mfu -100.00%"),
             (0.2, 2.04, "iter 1: loss 4.0, time 50.00ms, mfu -100.00%"),
             (0.3, 2.10, "iter 2: loss 3.9, time 70.00ms, mfu 1.0%"),
             (0.4, 2.8, "step 3: train loss 3.8000, val loss 3.7500"), (0.5, 2.8, "saving checkpoint to out"),
             (0.6, 2.9, "iter 3: loss 3.8, time 800.00ms, mfu 1.0%"),
             (0.7, 2.92, "iter 4: loss 3.7, time 30.00ms, mfu 1.0%")]
    log = bench.parse_nanogpt_log(lines, eval_interval=3, until=0.35)
    assert log["ms_per_iter"] == pytest.approx(50.0) and log["iters_timed"] == 3
    assert log["ms_per_iter_overlap"] == pytest.approx(60.0) and log["iters_overlap"] == 2
    assert log["cpu_ms_per_iter"] == pytest.approx((40 + 60 + 20) / 3)
    assert log["val_loss_20_batches"] == 3.75 and log["last_eval_iter"] == 3
    assert bench.parse_nanogpt_log([(0, None, li) for *_, li in lines], 3, None)["cpu_ms_per_iter"] is None
    assert bench.nanogpt_eval_interval(2000) == 250 and bench.nanogpt_eval_interval(200) == 200


def test_a_nanogpt_checkpoint_is_scored_by_our_evaluator(bench, tmp_path):
    """A checkpoint in nanoGPT's format (no biases, lm_head tied to wte, model_args) loads with weights_only and
    scores what the same weights score in dl1's GPT."""
    from dl1.data.text import CharCorpus
    from dl1.models.gpt import mean_loss

    corpus = CharCorpus.from_text("to be or not to be, that is the question. " * 20)
    v = corpus.tokenizer.vocab_size
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=v, block_size=8, n_layer=1, n_head=2, n_embd=16, embd_pdrop=0.0,
                          resid_pdrop=0.0, attn_pdrop=0.0, activation="gelu"))
    with torch.no_grad():  # weights away from their initial values, then nanoGPT's constraints
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p)) if not name.endswith(".bias") else p.zero_()
        model.lm_head.weight.copy_(model.transformer.wte.weight)
    state = {f"_orig_mod.{k}": t for k, t in model.state_dict().items() if not k.endswith(".bias")}
    args = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, bias=False, vocab_size=v, dropout=0.0)
    torch.save({"model": state, "model_args": args, "iter_num": 7, "best_val_loss": torch.tensor(2.0),
                "config": {"dataset": "x"}}, tmp_path / "ckpt.pt")
    loss, it = bench.nanogpt_whole_split_loss(tmp_path / "ckpt.pt", corpus)
    assert it == 7
    assert loss == pytest.approx(mean_loss(model, corpus.eval_windows("val", 8, 32), torch.device("cpu")), rel=1e-6)


def test_without_a_nanogpt_checkout_every_nanogpt_number_is_not_measured(bench, tmp_path, capsys):
    from dl1.bench import print_table, ratio_rows

    assert bench.nanogpt_checkout(str(tmp_path)) is None
    result = {"threads": 1, "max_iters": 2, "cpu_count": 2, "load_before": [0.0] * 3, "load_after": [0.0] * 3,
              "floor": {"floor_ms": 10.0, "floor_cpu_ms": 9.0, "default_matmul_ms": 20.0, "gflop": 1.0,
                        "gflops_floor": 100.0, "gflops_default": 50.0},
              "ours": {"ms_per_iter": 30.0, "cpu_ms_per_iter": 27.0, "val_loss": 2.5},
              "nanogpt": {"checkout": None, "ms_per_iter": None}}
    speed, cpu, loss, floor = bench.rows(result)
    assert speed["reference"] is speed["ratio"] is None and speed["goal"] == ">= 1.5"
    assert cpu["ratio"] is loss["ratio"] is None
    assert floor["ratio"] == pytest.approx(3.0) and "CPU" in floor["case"]
    bench.print_table(result)
    assert "nanoGPT train.py     | not measured" in capsys.readouterr().out
    print_table({"gpt": ratio_rows({"rows": bench.rows(result)})})  # dl1 bench's table: "not measured", no number
    line = next(x for x in capsys.readouterr().out.splitlines() if "nanoGPT / ours, same time" in x)
    assert "not measured" in line and "30" in line


def test_step_products_count_the_step_flops(bench):
    """4 GFLOP a step: 3 products of 2 M K N per linear layer, 6 attention products per layer and head."""
    flops = 0
    for kind, count, m, k, n in bench.step_products(65):
        flops += count * 2 * m * k * n * (12 * 4 if kind == "attention" else 1)
    per_layer = 128 * 384 + 128 * 128 + 2 * 128 * 512
    assert flops == 3 * 2 * 768 * (4 * per_layer + 128 * 65) + 4 * 6 * 48 * 2 * 64 * 64 * 32


PEER = ROOT.parent / "shared" / "peers" / "nanogpt"


@pytest.mark.slow  # three fresh interpreters with torch: about 10 s on a quiet machine
@pytest.mark.skipif(not (PEER / "train.py").is_file(), reason="no nanoGPT checkout next to the repository")
def test_nanogpt_side_by_side_runs_its_own_code(bench, tmp_path):
    """Two iterations of each on a small text: nanoGPT's prepare.py and train.py run unchanged from a copy (its
    data equal to our split, checked inside), its checkpoint is scored, and the checkout is not written to."""
    before = sorted(p.relative_to(PEER) for p in PEER.rglob("*"))
    text = tmp_path / "input.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40)
    out = tmp_path / "gpt.json"
    assert bench.main(["--nanogpt", str(PEER), "--txt_file", str(text), "--max_iters", "2", "--floor_repeats", "1",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    nano = result["nanogpt"]
    assert nano["iters_timed"] == 1 and nano["checkpoint_iter"] == 2 and nano["ms_per_iter"] > 0
    assert 0 < nano["val_loss_whole_split"] < 5 and 0 < nano["val_loss_20_batches"] < 5
    assert result["ours"]["iters"] == 2 and result["floor"]["floor_ms"] > 0
    assert [r["ratio"] != "not measured" for r in result["rows"]] == [True] * 4
    assert nano["cpu_ms_per_iter"] > 0 and result["ours"]["cpu_ms_per_iter"] > 0
    assert sorted(p.relative_to(PEER) for p in PEER.rglob("*")) == before
