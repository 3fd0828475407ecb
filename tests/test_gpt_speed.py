"""The GPT's CPU kernels (``dl1.models.kernels``: linear and fused MLP, on MKL or oneDNN, eager and as torch.library
custom ops) compute what plain PyTorch does, the private oneDNN op they may use still exists, and the nanoGPT
benchmark parses nanoGPT's log, maps its checkpoint onto dl1's GPT and runs nanoGPT's own code side by side."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from dl1.models import kernels as K
from dl1.models.gpt import GPT, MLP, GPTConfig, Linear, set_onednn_linear

ROOT = Path(__file__).resolve().parents[1]
ONEDNN = K.onednn_linear_op() is not None
BACKENDS = ["aten", pytest.param("onednn", marks=pytest.mark.skipif(not ONEDNN, reason="no oneDNN in this build"))]


@pytest.fixture(params=BACKENDS)
def backend(request):
    before = K.set_matmul_backend(request.param)
    yield request.param
    K.set_matmul_backend(before)


def test_the_private_onednn_op_still_exists_with_the_schema_dl1_calls():
    """dl1 names one private op, torch.ops.mkldnn._linear_pointwise(input, weight, bias, attr, scalars,
    algorithm): if a PyTorch upgrade removes or changes it, this fails (and kernels.py must change with it)."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch build has no oneDNN")
    op = K.onednn_linear_op()
    assert op is not None, "torch.ops.mkldnn._linear_pointwise is gone: update dl1/models/kernels.py"
    schema = str(op.default._schema)
    for arg in ("Tensor X", "Tensor W", "Tensor? B", "str attr", "Scalar?[] scalars", "str? algorithm"):
        assert arg in schema, f"_linear_pointwise changed: {schema}"
    a, w, b = torch.randn(5, 3), torch.randn(4, 3), torch.randn(4)
    torch.testing.assert_close(op(a, w, b, "none", [], ""), F.linear(a, w, b))


def test_the_backend_is_onednn_where_built_unless_chosen_and_auto_measures():
    before = K.set_matmul_backend("aten")
    try:
        # the default: no measurement (the same arithmetic on a quiet or a busy machine), oneDNN where it exists
        assert K.default_backend() == ("onednn" if ONEDNN else "aten")
        times = K.measure_backends(64, 32, 48, rounds=2)
        assert times["aten"] > 0 and (not ONEDNN or times["onednn"] > 0)
        K.set_matmul_backend("auto")
        assert K.matmul_backend() in ("aten", "onednn")
        with pytest.raises(ValueError, match="unknown matmul backend"):
            K.set_matmul_backend("blas")
        K.set_matmul_backend("aten")
        assert set_onednn_linear(ONEDNN) is False and K.matmul_backend() == ("onednn" if ONEDNN else "aten")
    finally:
        K.set_matmul_backend(before)


def _grads(fn, inputs: list[torch.Tensor], g: torch.Tensor) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    y = fn(*leaves)
    y.backward(g)
    return [y.detach()] + [t.grad for t in leaves if t is not None]


@pytest.mark.parametrize("k,n,bias", [(16, 48, True), (64, 16, True), (16, 11, False)])
def test_linear_kernel_equals_the_float64_product_forward_and_backward(k, n, bias, backend):
    """Both weight-gradient branches (n <= k, n > k), with and without bias, a 3-d input: output, dx, dW and db
    equal float64 F.linear to float32 rounding, eager (autograd.Function) and as the custom op."""
    torch.manual_seed(0)
    x, w, b, g = torch.randn(3, 7, k), torch.randn(n, k), torch.randn(n) if bias else None, torch.randn(3, 7, n)
    exact = _grads(F.linear, [x.double(), w.double(), b.double() if bias else None], g.double())
    for fn in (K.linear, K.linear_op):
        ours = _grads(fn, [x, w, b], g)
        assert len(ours) == len(exact)
        for a, e in zip(ours, exact, strict=True):
            assert a.dtype == torch.float32
            torch.testing.assert_close(a.double(), e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fused_mlp_equals_linear_gelu_linear_forward_and_backward(approximate, backend):
    torch.manual_seed(0)
    x, g = torch.randn(2, 5, 8), torch.randn(2, 5, 6)
    w1, b1, w2, b2 = torch.randn(32, 8), torch.randn(32), torch.randn(6, 32), torch.randn(6)

    def plain(x, w1, b1, w2, b2):
        return F.linear(F.gelu(F.linear(x, w1, b1), approximate=approximate), w2, b2)

    exact = _grads(plain, [t.double() for t in (x, w1, b1, w2, b2)], g.double())
    for fn in (lambda *t: K.mlp(*t, approximate), lambda *t: K.mlp_op(*t, approximate)[0]):
        ours = _grads(fn, [x, w1, b1, w2, b2], g)
        for a, e in zip(ours, exact, strict=True):
            torch.testing.assert_close(a.double(), e, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # without gradients: the kernel itself, no autograd node
        torch.testing.assert_close(K.mlp(x, w1, b1, w2, b2, approximate), plain(x, w1, b1, w2, b2))


def test_custom_ops_pass_torch_library_checks():
    """torch.library.opcheck: schema, fake (meta) implementation, autograd registration agree with the kernels."""
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 4, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True), torch.randn(6)
    torch.library.opcheck(K.linear_op, (x, w, b))
    torch.library.opcheck(K.linear_op, (x, w, None))
    w2, b2 = torch.randn(5, 6, requires_grad=True), torch.randn(5, requires_grad=True)
    torch.library.opcheck(K.mlp_op, (x, w, b, w2, b2, "none"))


def test_layers_use_the_kernels_only_for_float32_cpu_outside_autocast():
    torch.manual_seed(0)
    layer = Linear(8, 4)
    x = torch.randn(5, 8)
    assert type(layer(x).grad_fn).__name__ == "_LinearBackward"
    assert type(layer.double()(x.double()).grad_fn).__name__ != "_LinearBackward"  # float64: F.linear
    layer.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16  # autocast decides, as for nn.Linear
    assert layer(torch.randn(8)).shape == (4,)  # a 1-d input
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    mlp = MLP(GPTConfig(n_embd=8, n_head=2, n_layer=1, vocab_size=5, block_size=4, resid_pdrop=0.0))
    assert type(mlp(torch.randn(2, 3, 8)).grad_fn).__name__ == "_MLPBackward"


def test_training_steps_match_the_plain_path(backend):
    """Five AdamW steps of a small GPT with dl1's kernels and the fused optimiser against nn.Linear / F.gelu layers
    and the per-tensor optimiser: the same losses and weights to float32 rounding."""

    def train(fast: bool) -> tuple[list[float], list[torch.Tensor]]:
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=32, embd_pdrop=0.0,
                              resid_pdrop=0.0, attn_pdrop=0.0, activation="gelu"))
        opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-3, betas=(0.9, 0.99))
        if not fast:  # plain layers and the per-tensor optimiser of the same groups
            for m in model.modules():
                if isinstance(m, Linear):
                    m.forward = lambda x, m=m: F.linear(x, m.weight, m.bias)
                if isinstance(m, MLP):
                    m.forward = lambda x, m=m: m.dropout(m.c_proj(m.act(m.c_fc(x))))
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

    (fast_losses, fast), (plain_losses, plain) = train(True), train(False)
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_cpu_optimiser_is_fused():

    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=8))
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.95))
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
              "floor": {"floor_ms": 10.0, "floor_cpu_ms": 9.0, "cold_floor_ms": 13.0, "cold_floor_cpu_ms": 13.5,
                        "default_matmul_ms": 20.0, "gflop": 1.0, "gflops_floor": 100.0, "gflops_default": 50.0},
              "ours": {"ms_per_iter": 30.0, "cpu_ms_per_iter": 27.0, "val_loss": 2.5},
              "nanogpt": {"checkout": None, "ms_per_iter": None}}
    speed, cpu, loss, floor, cold = bench.rows(result)
    assert speed["reference"] is speed["ratio"] is None and speed["goal"] == ">= 1.5"
    assert cpu["ratio"] is loss["ratio"] is None
    assert floor["ratio"] == pytest.approx(3.0) and "CPU" in floor["case"]
    assert cold["ratio"] == pytest.approx(2.0) and cold["goal"] is None and "cold" in cold["case"]
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
    assert result["floor"]["cold_floor_ms"] >= result["floor"]["floor_ms"] * 0.5
    assert [r["ratio"] != "not measured" for r in result["rows"]] == [True] * 5
    assert nano["cpu_ms_per_iter"] > 0 and result["ours"]["cpu_ms_per_iter"] > 0
    assert sorted(p.relative_to(PEER) for p in PEER.rglob("*")) == before


def test_benchmark_json_names_the_machine(tmp_path, bench):
    """Every benchmark writes through dl1.bench_env.write_json: the CPU (model, torch's ISA level, cores), NumPy's
    BLAS and the torch / oneDNN versions are in the JSON, and one printed line names them."""
    from dl1.bench_env import describe, write_json

    data = json.loads(write_json(tmp_path / "b.json", {"benchmark": "x", "rows": []}).read_text())
    m = data["machine"]
    assert m["cpu_model"] and m["cpu_count"] >= 1 and m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert m["numpy_blas"]["library"] and m["torch"]["version"] == torch.__version__
    assert (m["torch"]["onednn"] is not None) == torch.backends.mkldnn.is_available()
    line = describe(m)
    assert m["cpu_model"] in line and m["cpu_capability"] in line and "BLAS" in line
    for script in sorted((ROOT / "benchmarks").glob("*.py")):  # no benchmark writes its JSON another way
        text = script.read_text()
        assert "write_json(" in text and "print(describe())" in text, script.name
