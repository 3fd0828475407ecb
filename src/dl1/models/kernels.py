"""The GPT's CPU kernels: a linear layer, and the MLP (linear -> GELU -> linear) as one fused unit.

Each kernel is a plain function of tensors (forward, and its backward written out beside it) and is registered
through ``torch.library`` as a custom op with a fake (shape-only) implementation and its autograd formula, so that
``torch.compile`` traces a model that uses them:

* ``dl1::linear(x, weight, bias) -> y`` (and ``dl1::linear_backward``): ``y = x W^T + b`` over the last dimension;
* ``dl1::mlp(x, w1, b1, w2, b2, approximate) -> (y, h, a)`` (and ``dl1::mlp_backward``): ``h = x W1^T + b1``,
  ``a = GELU(h)``, ``y = a W2^T + b2``, one autograd node; ``h`` and ``a`` are returned for its backward, which
  computes the GELU derivative in place in ``dy W2`` (a buffer it owns) and so allocates nothing for it.

In eager mode :func:`linear` and :func:`mlp` run the same kernels through a ``torch.autograd.Function`` (a custom
op's dispatch costs about 30 us more a call, about 1 % of a small GPT's step); under ``torch.compile`` they call the
custom ops.  Without gradients (evaluation, generation) they call the kernels directly.

Matrix products run on PyTorch's default CPU matmul (MKL, "aten") or on oneDNN through PyTorch's *private*
``torch.ops.mkldnn._linear_pointwise`` ("onednn").  oneDNN is the default wherever the build has it, from
measurements on two CPUs at one thread: on an AMD EPYC with AVX2 (torch's ISA level "AVX2") it ran the GPT's products
about 2x faster than MKL (240 against 110 GFLOP/s); on an AMD EPYC Zen 4 (AVX-512) each product alone is 5-10 %
faster on oneDNN except the weight gradient (``dW = g^T x``, which oneDNN reads through a transposed copy), and a
whole training step of nanoGPT's CPU recipe, the two alternating in one process, took 56.7-57.4 ms on oneDNN against
58.5-60.1 ms on MKL (best of 12 rounds, three runs).  :func:`set_matmul_backend` overrides the choice ("auto"
measures the two on the CPU at hand and takes oneDNN only when ``ONEDNN_MARGIN`` times faster).  The default is not
measured at start-up because such a measurement does not repeat on a shared machine (on a busy 2-core Zen 4 the ratio
moved between 0.8 and 1.7 from one process to the next), and a run must not change its arithmetic with the load.
``benchmarks/gpt.py`` times every product both ways on the CPU at hand.  The private name is used in this module
only; ``tests/test_gpt_speed.py`` fails loudly if a PyTorch upgrade removes or changes it.
"""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

__all__ = ["linear", "mlp", "matmul_backend", "set_matmul_backend", "onednn_linear_op", "ONEDNN_MARGIN"]

ONEDNN_MARGIN = 1.25  # oneDNN is taken only when this much faster: a near tie is not worth a private op
def default_backend() -> str:
    """"onednn" where this build has it, else "aten" (see the module doc)."""
    return "onednn" if onednn_linear_op() is not None else "aten"


_BACKEND: dict[str, str | None] = {"name": None}  # "aten" or "onednn"; None: default_backend() on first use


# -- the private oneDNN product (the only place dl1 names it) ---------------------------------------------------------
def onednn_linear_op():
    """``torch.ops.mkldnn._linear_pointwise`` (oneDNN's inner product, ``a @ b^T + bias``), or None where this PyTorch
    build lacks oneDNN or the op."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def _onednn_mm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a (M, K) @ b (N, K)^T (+ bias) -> (M, N) on oneDNN; ``b`` may be a strided view."""
    return torch.ops.mkldnn._linear_pointwise(a.contiguous(), b, bias, "none", [], "")


def measure_backends(m: int = 768, k: int = 128, n: int = 512, rounds: int = 7, calls: int = 5) -> dict[str, float]:
    """Seconds of ``calls`` (m, k) @ (n, k)^T float32 products with MKL (``aten``) and oneDNN (``onednn``, where
    present), at the current thread count, the fastest of ``rounds`` rounds, the two alternating round by round (a
    change of machine load hits both); the default shape is a small GPT's MLP product (nanoGPT's CPU recipe)."""
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    products = {"aten": lambda: torch.mm(a, w.t())}
    if onednn_linear_op() is not None:
        products["onednn"] = lambda: _onednn_mm(a, w)
    best = dict.fromkeys(products, float("inf"))
    for fn in products.values():
        fn()
    for _ in range(rounds):
        for name, fn in products.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def matmul_backend() -> str:
    """"aten" or "onednn": the library of the kernels' float32 CPU products (:func:`default_backend` unless set)."""
    if _BACKEND["name"] is None:
        _BACKEND["name"] = default_backend()
    return _BACKEND["name"]


def set_matmul_backend(name: str) -> str:
    """Use "aten" or "onednn" for the products, or "auto": oneDNN where this build has it and
    :func:`measure_backends` finds it at least ``ONEDNN_MARGIN`` times faster here; returns the previous setting."""
    if name not in ("aten", "onednn", "auto"):
        raise ValueError(f"unknown matmul backend {name!r}: aten, onednn or auto")
    if name == "onednn" and onednn_linear_op() is None:
        raise ValueError("this PyTorch build has no oneDNN linear")
    if name == "auto":
        times = measure_backends()
        name = "onednn" if "onednn" in times and times["aten"] >= ONEDNN_MARGIN * times["onednn"] else "aten"
    before, _BACKEND["name"] = matmul_backend(), name
    return before


# -- kernels: forward and backward of plain 2-d tensors ---------------------------------------------------------------
def _mm_t(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, onednn: bool) -> torch.Tensor:
    """a (M, K) @ w (N, K)^T (+ bias) -> (M, N)."""
    if onednn:
        return _onednn_mm(a, w, bias)
    return torch.addmm(bias, a, w.t()) if bias is not None else torch.mm(a, w.t())


def _weight_grad(g: torch.Tensor, x: torch.Tensor, onednn: bool) -> torch.Tensor:
    """dW = g^T x: (M, N), (M, K) -> (N, K); oneDNN copies the smaller of g^T or x^T to contiguous."""
    if not onednn:
        return torch.mm(g.t(), x)
    n, k = g.shape[1], x.shape[1]
    return _onednn_mm(g.t(), x.t()) if n <= k else _onednn_mm(x.t(), g.t()).t().contiguous()


def linear_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, onednn: bool) -> torch.Tensor:
    """y = x W^T + b for x (..., K) -> (..., N)."""
    return _mm_t(x.reshape(-1, x.shape[-1]), weight, bias, onednn).view(*x.shape[:-1], weight.shape[0])


def linear_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, needs: tuple[bool, bool, bool],
                    onednn: bool) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(dx, dW, db) of y = x W^T + b, each None where ``needs`` says it is not needed: dx = g W, dW = g^T x,
    db = column sums of g."""
    g2, x2 = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])  # (M, N), (M, K)
    dx = dw = db = None
    if needs[0]:
        dx = (_onednn_mm(g2, weight.t()) if onednn else torch.mm(g2, weight)).view(x.shape)
    if needs[1]:
        dw = _weight_grad(g2, x2, onednn)
    if needs[2]:
        db = g2.sum(0)
    return dx, dw, db


def mlp_forward(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
                b2: torch.Tensor | None, approximate: str, onednn: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, h, a) with h = x W1^T + b1 (M, H), a = GELU(h), y = a W2^T + b2 (..., N)."""
    x2 = x.reshape(-1, x.shape[-1])  # (M, K)
    h = _mm_t(x2, w1, b1, onednn)  # (M, H)
    a = F.gelu(h, approximate=approximate)  # (M, H)
    y = _mm_t(a, w2, b2, onednn).view(*x.shape[:-1], w2.shape[0])  # (..., N)
    return y, h, a


def mlp_backward(grad: torch.Tensor, x: torch.Tensor, h: torch.Tensor, a: torch.Tensor, w1: torch.Tensor,
                 w2: torch.Tensor, approximate: str, needs: tuple[bool, ...], onednn: bool) -> tuple:
    """(dx, dW1, db1, dW2, db2), None where not needed: dW2 = g^T a, db2 = sum g, da = g W2, dh = da GELU'(h)
    (written into da), dW1 = dh^T x, db1 = sum dh, dx = dh W1."""
    g2, x2 = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])  # (M, N), (M, K)
    dw2 = _weight_grad(g2, a, onednn) if needs[3] else None
    db2 = g2.sum(0) if needs[4] else None
    dx = dw1 = db1 = None
    if needs[0] or needs[1] or needs[2]:
        da = _onednn_mm(g2, w2.t()) if onednn else torch.mm(g2, w2)  # (M, H), ours to overwrite
        dh = torch.ops.aten.gelu_backward.grad_input(da, h, approximate=approximate, grad_input=da)
        dw1 = _weight_grad(dh, x2, onednn) if needs[1] else None
        db1 = dh.sum(0) if needs[2] else None
        if needs[0]:
            dx = (_onednn_mm(dh, w1.t()) if onednn else torch.mm(dh, w1)).view(x.shape)
    return dx, dw1, db1, dw2, db2


# -- eager: autograd Functions over the kernels -----------------------------------------------------------------------
class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, onednn):
        ctx.save_for_backward(x, weight)
        ctx.onednn, ctx.has_bias = onednn, bias is not None
        return linear_forward(x, weight, bias, onednn)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        return *linear_backward(grad, x, weight, needs, ctx.onednn), None


class _MLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, approximate, onednn):
        y, h, a = mlp_forward(x, w1, b1, w2, b2, approximate, onednn)
        ctx.save_for_backward(x, h, a, w1, w2)
        ctx.approximate, ctx.onednn = approximate, onednn
        ctx.has_bias = (b1 is not None, b2 is not None)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, h, a, w1, w2 = ctx.saved_tensors
        n = ctx.needs_input_grad
        needs = (n[0], n[1], ctx.has_bias[0] and n[2], n[3], ctx.has_bias[1] and n[4])
        return *mlp_backward(grad, x, h, a, w1, w2, ctx.approximate, needs, ctx.onednn), None, None


# -- torch.library: the same kernels as custom ops, for torch.compile -------------------------------------------------
@torch.library.custom_op("dl1::linear", mutates_args=())
def linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x W^T + b over the last dimension."""
    return linear_forward(x, weight, bias, matmul_backend() == "onednn")


@linear_op.register_fake
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@torch.library.custom_op("dl1::linear_backward", mutates_args=())
def linear_backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, needs: list[bool]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dW, db); a gradient that is not needed comes back empty."""
    out = linear_backward(grad, x, weight, tuple(needs), matmul_backend() == "onednn")
    return tuple(t if t is not None else grad.new_empty(0) for t in out)


@linear_backward_op.register_fake
def _(grad, x, weight, needs):
    shapes = (x.shape, weight.shape, (weight.shape[0],))
    return tuple(grad.new_empty(s if need else (0,)) for s, need in zip(shapes, needs, strict=True))


def _linear_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _linear_autograd(ctx, grad):
    x, weight = ctx.saved_tensors
    n = ctx.needs_input_grad
    needs = [n[0], n[1], ctx.has_bias and n[2]]
    dx, dw, db = linear_backward_op(grad, x, weight, needs)
    return tuple(t if need else None for t, need in zip((dx, dw, db), needs, strict=True))


linear_op.register_autograd(_linear_autograd, setup_context=_linear_setup)


@torch.library.custom_op("dl1::mlp", mutates_args=())
def mlp_op(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor, b2: torch.Tensor | None,
           approximate: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, h, a): y = GELU(x W1^T + b1) W2^T + b2, with the hidden layer before (h) and after (a) the GELU."""
    return mlp_forward(x, w1, b1, w2, b2, approximate, matmul_backend() == "onednn")


@mlp_op.register_fake
def _(x, w1, b1, w2, b2, approximate):
    m = x.numel() // x.shape[-1]
    return x.new_empty(*x.shape[:-1], w2.shape[0]), x.new_empty(m, w1.shape[0]), x.new_empty(m, w1.shape[0])


@torch.library.custom_op("dl1::mlp_backward", mutates_args=())
def mlp_backward_op(grad: torch.Tensor, x: torch.Tensor, h: torch.Tensor, a: torch.Tensor, w1: torch.Tensor,
                    w2: torch.Tensor, approximate: str, needs: list[bool]) -> list[torch.Tensor]:
    """(dx, dW1, db1, dW2, db2); a gradient that is not needed comes back empty."""
    out = mlp_backward(grad, x, h, a, w1, w2, approximate, tuple(needs), matmul_backend() == "onednn")
    return [t if t is not None else grad.new_empty(0) for t in out]


@mlp_backward_op.register_fake
def _(grad, x, h, a, w1, w2, approximate, needs):
    shapes = (x.shape, w1.shape, (w1.shape[0],), w2.shape, (w2.shape[0],))
    return [grad.new_empty(s if need else (0,)) for s, need in zip(shapes, needs, strict=True)]


def _mlp_setup(ctx, inputs, output):
    x, w1, b1, w2, b2, approximate = inputs
    _, h, a = output
    ctx.save_for_backward(x, h, a, w1, w2)
    ctx.approximate, ctx.has_bias = approximate, (b1 is not None, b2 is not None)


def _mlp_autograd(ctx, grad, grad_h, grad_a):
    x, h, a, w1, w2 = ctx.saved_tensors
    n = ctx.needs_input_grad
    needs = [n[0], n[1], ctx.has_bias[0] and n[2], n[3], ctx.has_bias[1] and n[4]]
    grads = mlp_backward_op(grad, x, h, a, w1, w2, ctx.approximate, needs)
    return (*(t if need else None for t, need in zip(grads, needs, strict=True)), None)


mlp_op.register_autograd(_mlp_autograd, setup_context=_mlp_setup)


# -- what the model calls ---------------------------------------------------------------------------------------------
def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The kernels run float32 CPU tensors of 2 or more dimensions outside autocast (elsewhere ``F.linear``)."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.dim() >= 2
            and not torch.is_autocast_enabled("cpu"))


def _grad_needed(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` on a float32 CPU ``x`` (see :func:`applies`)."""
    if torch.compiler.is_compiling():
        return linear_op(x, weight, bias)
    onednn = matmul_backend() == "onednn"
    if not _grad_needed(x, weight, bias):
        return linear_forward(x, weight, bias, onednn)
    return _Linear.apply(x, weight, bias, onednn)


def mlp(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor, b2: torch.Tensor | None,
        approximate: str = "none") -> torch.Tensor:
    """``F.linear(F.gelu(F.linear(x, w1, b1), approximate=approximate), w2, b2)`` on a float32 CPU ``x``."""
    if torch.compiler.is_compiling():
        return mlp_op(x, w1, b1, w2, b2, approximate)[0]
    onednn = matmul_backend() == "onednn"
    if not _grad_needed(x, w1, b1, w2, b2):
        return mlp_forward(x, w1, b1, w2, b2, approximate, onednn)[0]
    return _MLP.apply(x, w1, b1, w2, b2, approximate, onednn)
