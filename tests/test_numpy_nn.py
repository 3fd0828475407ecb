"""dl1.numpy_nn: every backward against central differences and torch.autograd (float64), float32 end to end."""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys

import numpy as np
import pytest

from dl1.numpy_nn import (
    MLP,
    SGD,
    CrossEntropyModule,
    ELUModule,
    LinearModule,
    ReLUModule,
    SoftMaxModule,
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)

F64 = np.float64
# (samples, features, classes) incl. batch size 1 and a single class
SHAPES = [(1, 1, 1), (1, 7, 3), (5, 1, 4), (13, 29, 1), (19, 99, 9), (8, 16, 10)]


def test_numpy_nn_never_imports_torch():
    code = "import sys, dl1.numpy_nn, dl1.numpy_nn.gradcheck; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------------------------
# central differences (the course's unit tests, on random shapes)
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("N,D,C", SHAPES)
def test_linear_backward_central_differences(N, D, C):
    rng = np.random.default_rng(N * 100 + D)
    x, dout = rng.standard_normal((N, D)), rng.standard_normal((N, C))
    layer = LinearModule(D, C, dtype=F64, rng=rng)
    layer.params["bias"][:] = rng.standard_normal(C)
    layer.forward(x)
    dx = layer.backward(dout)
    dw, db = layer.grads["weight"].copy(), layer.grads["bias"].copy()
    assert dx.shape == x.shape and dw.shape == (C, D) and db.shape == (C,)
    assert rel_error(dx, eval_numerical_gradient_array(layer.forward, x, dout)) < 1e-5
    # W perturbed in place through params['weight']: forward must read the live array
    assert rel_error(dw, eval_numerical_gradient_array(lambda _: layer.forward(x), layer.params["weight"], dout)) < 1e-5
    assert rel_error(db, eval_numerical_gradient_array(lambda _: layer.forward(x), layer.params["bias"], dout)) < 1e-5


@pytest.mark.parametrize("N,D,_", SHAPES)
@pytest.mark.parametrize("module", [ELUModule, ReLUModule, SoftMaxModule])
def test_activation_backward_central_differences(module, N, D, _):
    rng = np.random.default_rng(N * 10 + D)
    x, dout = rng.standard_normal((N, D)), rng.standard_normal((N, D))
    if module is ReLUModule:  # keep clear of the kink, where the derivative does not exist
        x = np.where(np.abs(x) < 1e-3, 0.5, x)
    layer = module()
    layer.forward(x)
    dx = layer.backward(dout)
    tolerance = 1e-5 if module is SoftMaxModule else 1e-6  # the course's tolerances
    assert rel_error(dx, eval_numerical_gradient_array(layer.forward, x, dout)) < tolerance


@pytest.mark.parametrize("N,_,C", SHAPES)
def test_crossentropy_backward_central_differences(N, _, C):
    rng = np.random.default_rng(N + C)
    x = rng.uniform(0.01, 1.0, size=(N, C))
    x /= x.sum(axis=1, keepdims=True)
    y = rng.integers(0, C, size=N)
    ce = CrossEntropyModule()
    dx = ce.backward(x, y)
    assert dx.shape == x.shape
    assert rel_error(dx, eval_numerical_gradient(lambda xx: ce.forward(xx, y), x)) < 1e-5


def test_course_sizes_random_trials():
    """The course's randomised trials: N in [1, 20), D in [1, 100), C in [1, 10), with its tolerances."""
    rng = np.random.default_rng(42)
    for _ in range(5):
        N, D, C = rng.integers(1, 20), rng.integers(1, 100), rng.integers(1, 10)
        x, dout = rng.standard_normal((N, D)), rng.standard_normal((N, C))
        layer = LinearModule(D, C, dtype=F64, rng=rng)
        layer.forward(x)
        layer.backward(dout)
        dw = eval_numerical_gradient_array(lambda _, lay=layer, xx=x: lay.forward(xx), layer.params["weight"], dout)
        assert rel_error(layer.grads["weight"], dw) < 1e-5
        elu, dy = ELUModule(), rng.standard_normal((N, D))
        elu.forward(x)
        assert rel_error(elu.backward(dy), eval_numerical_gradient_array(elu.forward, x, dy)) < 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# the course's own checks as the course runs them: default constructors, np.random.seed(42), float64 np.random.randn
# inputs, its central-difference helpers (h = 1e-5, perturbing the arrays in place, layer.params['weight'] included),
# its sizes and tolerances.  The helpers are written out here, independently of dl1.numpy_nn.gradcheck.
# ---------------------------------------------------------------------------------------------------------------------

def course_rel_error(x, y):
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def course_numerical_gradient(f, x, h=1e-5):
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        fxph = f(x)
        x[ix] = oldval - h
        fxmh = f(x)
        x[ix] = oldval
        grad[ix] = (fxph - fxmh) / (2 * h)
        it.iternext()
    return grad


def course_numerical_gradient_array(f, x, df, h=1e-5):
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        pos = f(x).copy()
        x[ix] = oldval - h
        neg = f(x).copy()
        x[ix] = oldval
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def test_course_crossentropy_loss():
    np.random.seed(42)
    for _ in range(10):
        N = np.random.choice(range(1, 100))
        C = np.random.choice(range(1, 10))
        y = np.random.randint(C, size=(N,))
        X = np.random.uniform(low=1e-2, high=1.0, size=(N, C))
        X /= X.sum(axis=1, keepdims=True)
        grads = CrossEntropyModule().backward(X, y)
        grads_num = course_numerical_gradient(lambda _, X=X, y=y: CrossEntropyModule().forward(X, y), X)
        assert course_rel_error(grads_num, grads) < 1e-5


def test_course_linear_backward():
    np.random.seed(42)
    for _ in range(10):
        N = np.random.choice(range(1, 20))
        D = np.random.choice(range(1, 100))
        C = np.random.choice(range(1, 10))
        x = np.random.randn(N, D)
        dout = np.random.randn(N, C)
        layer = LinearModule(D, C)  # the default constructor (float32 parameters would miss dW by ~7e-4)
        layer.forward(x)
        dx = layer.backward(dout)
        dw = layer.grads["weight"]
        dx_num = course_numerical_gradient_array(lambda xx, lay=layer: lay.forward(xx), x, dout)
        dw_num = course_numerical_gradient_array(lambda w, lay=layer, x=x: lay.forward(x), layer.params["weight"],
                                                 dout)
        assert course_rel_error(dx, dx_num) < 1e-5
        assert course_rel_error(dw, dw_num) < 1e-5


@pytest.mark.parametrize("module,tolerance", [(ELUModule, 1e-6), (SoftMaxModule, 1e-5)])
def test_course_activation_backward(module, tolerance):
    np.random.seed(42)
    for _ in range(10):
        N = np.random.choice(range(1, 20))
        D = np.random.choice(range(1, 100))
        x = np.random.randn(N, D)
        dout = np.random.randn(*x.shape)
        layer = module()
        layer.forward(x)
        dx = layer.backward(dout)
        dx_num = course_numerical_gradient_array(lambda xx, lay=layer: lay.forward(xx), x, dout)
        assert course_rel_error(dx, dx_num) < tolerance


def test_defaults_are_the_course_float64():
    assert LinearModule(3, 2).params["bias"].dtype == np.float64
    model = MLP(6, [5], 3)
    assert all(p.dtype == g.dtype == np.float64 for p, g in model.parameters())
    assert model.forward(np.random.randn(2, 6)).dtype == np.float64


# ---------------------------------------------------------------------------------------------------------------------
# torch.autograd in float64
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("N,D,C", SHAPES)
def test_modules_match_torch_autograd(N, D, C):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7 * N + D)
    x, dout = rng.standard_normal((N, D)), rng.standard_normal((N, C))
    layer = LinearModule(D, C, dtype=F64, rng=rng)
    layer.params["bias"][:] = rng.standard_normal(C)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.params["weight"], requires_grad=True)
    tb = torch.tensor(layer.params["bias"], requires_grad=True)
    out = torch.nn.functional.linear(tx, tw, tb)
    out.backward(torch.tensor(dout))
    np.testing.assert_allclose(layer.forward(x), out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(dout), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], tw.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], tb.grad.numpy(), rtol=1e-12, atol=1e-12)

    z, dz = rng.standard_normal((N, C)) * 4, rng.standard_normal((N, C))
    elu = torch.nn.functional.elu
    for module, fn in ((ELUModule(), elu), (ELUModule(0.5), lambda t: elu(t, 0.5)), (ReLUModule(), torch.relu),
                       (SoftMaxModule(), lambda t: torch.softmax(t, dim=1))):
        tz = torch.tensor(z, requires_grad=True)
        ty = fn(tz)
        ty.backward(torch.tensor(dz))
        np.testing.assert_allclose(module.forward(z), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(module.backward(dz), tz.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("N,C", [(1, 1), (1, 5), (17, 1), (33, 10)])
def test_crossentropy_matches_torch_autograd(N, C):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(N * C)
    p = rng.uniform(0.01, 1.0, size=(N, C))
    p /= p.sum(axis=1, keepdims=True)
    y = rng.integers(0, C, size=N)
    tp = torch.tensor(p, requires_grad=True)
    loss = torch.nn.functional.nll_loss(torch.log(tp), torch.tensor(y))
    loss.backward()
    ce = CrossEntropyModule()
    assert float(ce.forward(p, y)) == pytest.approx(loss.item(), rel=1e-12)
    np.testing.assert_allclose(ce.backward(p, y), tp.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("hidden", [[], [6], [8, 5, 4]])
@pytest.mark.parametrize("N", [1, 9])
def test_mlp_gradients_match_torch_autograd(hidden, N):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(N + len(hidden))
    D, C = 11, 4
    model = MLP(D, hidden, C, dtype=F64, rng=rng)
    x, y = rng.standard_normal((N, D)), rng.integers(0, C, size=N)
    ce = CrossEntropyModule()
    probs = model.forward(x)
    model.backward(ce.backward(probs, y))
    # the same network in torch, float64, logits -> log_softmax -> NLL (== CE on softmax probabilities)
    params = [torch.tensor(p, requires_grad=True) for p, _ in model.parameters()]
    h = torch.tensor(x)
    for i in range(0, len(params), 2):
        h = torch.nn.functional.linear(h, params[i], params[i + 1])
        h = torch.nn.functional.elu(h) if i + 2 < len(params) else h
    loss = torch.nn.functional.cross_entropy(h, torch.tensor(y))
    loss.backward()
    assert float(ce.forward(probs, y)) == pytest.approx(loss.item(), rel=1e-10)
    np.testing.assert_allclose(probs, torch.softmax(h, 1).detach().numpy(), rtol=1e-10, atol=1e-14)
    for (_, grad), tp in zip(model.parameters(), params, strict=True):
        np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# contracts: input layer, dtypes, stability, initialisation, caches
# ---------------------------------------------------------------------------------------------------------------------

def test_input_layer_computes_no_input_gradient():
    layer = LinearModule(5, 3, input_layer=True)
    layer.forward(np.ones((2, 5), np.float32))
    assert layer.backward(np.ones((2, 3), np.float32)) is None
    assert np.all(layer.grads["weight"] == 2)  # the parameter gradients are still computed
    layer.needs_input_grad = True
    assert layer.backward(np.ones((2, 3), np.float32)).shape == (2, 5)
    model = MLP(5, [4], 3)
    assert model.linears[0].input_layer and not model.linears[1].input_layer


def test_float32_end_to_end():
    rng = np.random.default_rng(0)
    model = MLP(20, [16, 8], 5, dtype=np.float32, rng=rng)  # what training asks for
    x, y = rng.standard_normal((7, 20)).astype(np.float32), rng.integers(0, 5, 7)
    ce = CrossEntropyModule()
    probs = model.forward(x)
    loss = ce.forward(probs, y)
    dout = ce.backward(probs, y)
    model.backward(dout)
    opt = SGD(model.parameters(), lr=0.1)
    opt.step()
    assert probs.dtype == loss.dtype == dout.dtype == np.float32
    out = x
    for module in model.modules:
        out = module.forward(out)
        assert out.dtype == np.float32, module
    for p, g in model.parameters():
        assert p.dtype == g.dtype == np.float32 and p.flags.c_contiguous
    elu = ELUModule()
    z = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    elu.forward(z)
    assert elu.backward(np.ones_like(z)).dtype == np.float32
    sm = SoftMaxModule()
    sm.forward(z)
    assert sm.backward(np.ones_like(z)).dtype == np.float32


def test_sgd_updates_in_place_and_keeps_references():
    model = MLP(4, [3], 2, dtype=np.float32)
    before = [p.copy() for p, _ in model.parameters()]
    ids = [id(p) for p, _ in model.parameters()]
    x, y = np.random.randn(6, 4).astype(np.float32), np.array([0, 1, 0, 1, 1, 0])
    ce = CrossEntropyModule()
    probs = model.forward(x)
    model.backward(ce.backward(probs, y))
    SGD(model.parameters(), lr=0.5).step()
    for (p, g), old, i in zip(model.parameters(), before, ids, strict=True):
        assert id(p) == i
        np.testing.assert_allclose(p, old - np.float32(0.5) * g, rtol=1e-6)
    with pytest.raises(ValueError):
        SGD(model.parameters(), lr=0.0)


def test_softmax_and_elu_are_numerically_stable():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]], dtype=np.float32)
    with np.errstate(all="raise"):
        y = SoftMaxModule().forward(x)
        e = ELUModule().forward(x)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y[1], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(e[1], -1.0)
    # a probability that underflowed to 0 gives a finite loss and gradient
    p = np.array([[0.0, 1.0]], dtype=np.float32)
    ce = CrossEntropyModule()
    assert np.isfinite(ce.forward(p, np.array([0]))) and np.all(np.isfinite(ce.backward(p, np.array([0]))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elu_is_the_identity_above_zero_exactly_and_expm1_below(dtype):
    """ELU(x) = x for x > 0 to the last bit (x + 1 - 1 rounds small x: 1e-3 came out as 0.00099992752 in float32),
    and within two ulps of 1 of alpha * expm1(x) below (exp(x) - 1 cancels: the price of NumPy's fast exp)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(500), np.logspace(-12, 1, 200), -np.logspace(-12, 1, 200)])
    x = x.astype(dtype).reshape(30, 30)
    for alpha in (1.0, 0.5):
        out = ELUModule(alpha).forward(x)
        pos = x > 0
        assert out.dtype == dtype and np.array_equal(out[pos], x[pos])
        want = alpha * np.expm1(x[~pos].astype(np.float64))
        np.testing.assert_allclose(out[~pos], want, rtol=0, atol=2 * np.finfo(dtype).eps)


def test_crossentropy_class_count_comes_from_input_shape():
    p = np.full((3, 5), 0.2)
    y = np.array([0, 1, 1])  # the highest classes are absent
    ce = CrossEntropyModule()
    dx = ce.backward(p, y)
    assert dx.shape == (3, 5)
    expected = np.zeros((3, 5))
    expected[[0, 1, 2], y] = -1 / (3 * 0.2)
    np.testing.assert_allclose(dx, expected)
    assert float(ce.forward(p, y)) == pytest.approx(np.log(5))
    with pytest.raises(ValueError):
        ce.forward(p, np.array([0, 1, 5]))
    with pytest.raises(TypeError):
        ce.forward(p, np.array([0.0, 1.0, 1.0]))


def test_kaiming_initialisation():
    rng = np.random.default_rng(0)
    first = LinearModule(2000, 400, input_layer=True, rng=rng)
    hidden = LinearModule(2000, 400, rng=rng)
    assert first.params["weight"].std() == pytest.approx(np.sqrt(1 / 2000), rel=0.01)
    assert hidden.params["weight"].std() == pytest.approx(np.sqrt(2 / 2000), rel=0.01)
    assert abs(hidden.params["weight"].mean()) < 1e-3
    assert np.all(first.params["bias"] == 0) and np.all(first.grads["weight"] == 0)
    assert first.params["weight"].shape == (400, 2000) and first.params["bias"].shape == (400,)


def test_mlp_structure_and_logistic_regression():
    logreg = MLP(10, [], 3)
    assert [type(m) for m in logreg.modules] == [LinearModule, SoftMaxModule]
    assert logreg.linears[0].input_layer
    deep = MLP(10, [8, 6], 3, dtype=np.float32)
    assert [type(m).__name__ for m in deep.modules] == ["LinearModule", "ELUModule", "LinearModule", "ELUModule",
                                                        "LinearModule", "SoftMaxModule"]
    probs = deep.forward(np.random.randn(4, 10))
    assert probs.shape == (4, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)


def test_clear_cache_deepcopy_and_state_dict():
    model = MLP(6, [5], 3)
    model.forward(np.random.randn(4, 6))
    model.clear_cache()
    assert all(getattr(m, attr, None) is None for m in model.modules for attr in ("x", "out", "mask"))
    best = copy.deepcopy(model)
    model.linears[0].params["weight"] += 1
    assert not np.allclose(best.linears[0].params["weight"], model.linears[0].params["weight"])
    state = best.state_dict()
    assert set(state) == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"}
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.linears[0].params["weight"], best.linears[0].params["weight"])
    with pytest.raises(ValueError):
        MLP(6, [4], 3).load_state_dict(state)


def test_mlp_learns_a_separable_problem():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((3, 8)).astype(np.float32) * 3
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.standard_normal((300, 8)).astype(np.float32)
    model, ce = MLP(8, [16], 3, rng=rng), CrossEntropyModule()
    opt = SGD(model.parameters(), lr=0.1)
    first = float(ce.forward(model.forward(x), y))
    for _ in range(50):
        probs = model.forward(x)
        model.backward(ce.backward(probs, y))
        opt.step()
    probs = model.forward(x)
    assert float(ce.forward(probs, y)) < 0.3 * first
    assert (probs.argmax(1) == y).mean() > 0.95


# ---------------------------------------------------------------------------------------------------------------------
# training-time work in place: the same numbers as fresh arrays
# ---------------------------------------------------------------------------------------------------------------------

def _train(reuse: bool, steps: int = 4) -> tuple[list[float], dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 20), dtype=np.float32), rng.integers(0, 5, 64)
    model = MLP(20, [16, 8], 5, dtype=np.float32, rng=np.random.default_rng(1))
    opt, loss_fn, losses = SGD(model.parameters(), lr=0.1), CrossEntropyModule(), []
    if not reuse:  # per-parameter updates, as for arrays that do not share one buffer
        opt._groups, opt._scratch = opt.pairs, [np.empty_like(p) for p, _ in opt.pairs]
    with model.training_buffers(loss_fn) if reuse else contextlib.nullcontext():
        for i in range(steps):
            xb, yb = x[16 * i:16 * (i + 1)], y[16 * i:16 * (i + 1)]
            probs = model.forward(xb)
            losses.append(float(loss_fn.forward(probs, yb)))
            model.backward(loss_fn.backward(probs, yb))
            opt.step()
        predicted = model.predict(x, batch_size=16)  # chunks copied out of the reused arrays
    return losses, model.state_dict(), predicted


def test_training_buffers_and_one_pass_sgd_give_the_same_numbers():
    (fast, fast_state, fast_pred), (plain, plain_state, plain_pred) = _train(True), _train(False)
    assert fast == plain
    for k in plain_state:
        np.testing.assert_array_equal(fast_state[k], plain_state[k])
    np.testing.assert_array_equal(fast_pred, plain_pred)
    assert len({id(c) for c in np.split(fast_pred, 4)}) == 4 and not np.allclose(fast_pred[:16], fast_pred[16:32])


def test_reused_arrays_stay_put_and_are_dropped_after_the_block():
    model = MLP(6, [4], 3, dtype=np.float32, rng=np.random.default_rng(0))
    x = np.ones((2, 6), np.float32)
    with model.training_buffers():
        assert model.forward(x) is model.forward(2 * x)  # the same array, overwritten
    assert not any(getattr(m, "_buffers", None) for m in model.modules)
    assert model.forward(x) is not model.forward(x)  # outside the block: fresh arrays, as in the course


def test_sgd_takes_one_pass_over_an_mlps_parameters():
    model = MLP(6, [4], 3, dtype=np.float32, rng=np.random.default_rng(0))
    opt = SGD(model.parameters(), lr=0.5)
    assert len(opt._groups) == 1 and opt._groups[0][0].size == 6 * 4 + 4 + 4 * 3 + 3
    for _, g in model.parameters():
        g[...] = 1.0
    before = model.state_dict()
    opt.step()
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(v, before[k] - 0.5)
    loose = [(np.zeros(3, np.float32), np.ones(3, np.float32)), (np.zeros(2, np.float32), np.ones(2, np.float32))]
    opt = SGD(loose, lr=0.5)
    assert len(opt._groups) == 2
    opt.step()
    assert all(np.all(p == -0.5) for p, _ in loose)
