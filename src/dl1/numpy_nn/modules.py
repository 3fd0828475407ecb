"""The course's NumPy modules, vectorised (``torch`` is never imported here).

Every module has ``forward``, ``backward`` and ``clear_cache``; backward sits right under its forward.  Shapes: ``S``
samples, ``M`` input features, ``N`` output features, ``C`` classes.  Parameters default to float64, the course's
dtype: ``LinearModule(D, C)`` passes the course's central-difference checks (h = 1e-5, relative error < 1e-5) as it
is.  Training asks for float32 explicitly (``dtype=np.float32``, about twice as fast).  The modules compute in the
dtype of their parameters / inputs and never silently upcast: Python scalars are "weak" under NumPy 2 and every
constant is cast to the array's dtype.

Training-time work runs in place: with ``reuse_buffers`` set (``MLP.training_buffers()`` sets it on every module for
the length of a ``with`` block), each module writes its outputs and gradients into arrays it keeps from call to call
(one per name and shape), so a training step allocates nothing.  Such a returned array is overwritten by the
module's next call: copy it to keep it.  Without the flag (the default, as in the course) every call returns fresh
arrays.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def _tiny(dtype: np.dtype) -> np.floating:
    """The smallest normal number of ``dtype`` (``np.finfo`` is slow to call every step)."""
    return np.finfo(dtype).tiny


@functools.cache
def _exp_floor(dtype: np.dtype) -> np.floating:
    """``log(tiny) + 1``: the exponential of anything above it is a normal number of ``dtype`` (no underflow)."""
    return dtype.type(np.log(np.finfo(dtype).tiny) + 1)


class _Module:
    """Scratch arrays reused from call to call when ``reuse_buffers`` is set (fresh ones otherwise)."""

    reuse_buffers = False

    def _array(self, name: str, shape: tuple[int, ...], dtype: np.dtype, order: str = "C") -> np.ndarray:
        if not self.reuse_buffers:
            return np.empty(shape, dtype, order)
        store = self.__dict__.setdefault("_buffers", {})
        buf = store.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = store[name] = np.empty(shape, dtype, order)
        return buf

    def _ones(self, n: int, dtype: np.dtype) -> np.ndarray:
        """A vector of n ones: ``ones @ a`` sums the rows of ``a`` as one BLAS product (NumPy's ``sum`` over the
        rows of a small array costs several times more)."""
        ones = self.__dict__.get("_ones_vector")
        if ones is None or len(ones) != n or ones.dtype != dtype:
            ones = self._ones_vector = np.ones(n, dtype)
        return ones

    def clear_buffers(self) -> None:
        self.__dict__.pop("_buffers", None)


class LinearModule(_Module):
    """``Y = X Wᵀ + b`` with Kaiming initialisation; ``params``/``grads`` are dicts keyed ``weight`` and ``bias``.

    Kaiming rule (the course's): ``W ~ N(0, 2 / in_features)`` for a layer fed by an ELU/ReLU output, and
    ``N(0, 1 / in_features)`` for the input layer (normalised data, no half-rectification to compensate); biases 0.
    The input layer computes no gradient for its input (nothing upstream needs it): its ``backward`` returns ``None``
    unless ``needs_input_grad`` is set to True.  ``dtype`` is the parameters' dtype (float64 by default, as in the
    course; training passes float32); ``rng`` draws the weights (default: NumPy's global generator, as the course).
    """

    def __init__(self, in_features: int, out_features: int, input_layer: bool = False,
                 dtype: np.dtype | type = np.float64, rng: np.random.Generator | None = None):
        self.in_features, self.out_features, self.input_layer = in_features, out_features, input_layer
        self.needs_input_grad = not input_layer
        std = np.sqrt((1.0 if input_layer else 2.0) / in_features)
        normal = rng.normal if rng is not None else np.random.normal
        weight = normal(0.0, std, size=(out_features, in_features))                  # (N, M)
        self.params = {"weight": np.ascontiguousarray(weight, dtype=dtype),
                       "bias": np.zeros(out_features, dtype=dtype)}                   # (N,)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(S, M) -> (S, N).  Reads ``self.params`` live, so a test may perturb ``params['weight']`` in place."""
        self.x = x
        weight = self.params["weight"]
        out = np.matmul(x, weight.T, out=self._array("out", (x.shape[0], weight.shape[0]), np.result_type(x, weight)))
        out += self.params["bias"]                                                    # (S, N)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """dout (S, N) -> dx (S, M); fills ``grads`` in place: dW = doutᵀ X (N, M), db = column sums of dout (N,)."""
        np.matmul(dout.T, self.x, out=self.grads["weight"])                           # (N, M)
        np.matmul(self._ones(dout.shape[0], dout.dtype), dout, out=self.grads["bias"])  # (N,): column sums
        if not self.needs_input_grad:
            return None
        weight = self.params["weight"]
        return np.matmul(dout, weight, out=self._array("dx", (dout.shape[0], weight.shape[1]),
                                                        np.result_type(dout, weight)))  # (S, M)

    def clear_cache(self) -> None:
        self.x = None
        self.clear_buffers()

    def __repr__(self) -> str:
        return (f"LinearModule({self.in_features}, {self.out_features}, input_layer={self.input_layer}, "
                f"dtype={self.params['weight'].dtype})")


class ELUModule(_Module):
    """``ELU(x) = x`` for x > 0, else ``α(eˣ − 1)``; the derivative is 1 for x > 0, else ``αeˣ``.

    Written without ``np.where`` (slow): with ``e = exp(min(x, 0))`` (1 for x > 0), ``ELU(x) = max(x, 0) + α(e − 1)``
    and ``ELU'(x) = αe`` for x ≤ 0, 1 above (for α = 1 simply ``e`` everywhere), so the forward pass keeps ``e`` and
    the backward pass is one product.  For α = 1 the forward pass is ``max(x, e − 1)`` (``eˣ − 1 ≥ x``): a positive
    ``x`` comes out exactly (``x + 1 − 1`` would round it to a multiple of the spacing of numbers near 1, 6e-8 in
    float32).  ``exp`` of ``min(x, 0)`` never overflows, and ``x`` is clipped below at ``log(tiny) + 1`` so that it
    never underflows either (there ``e − 1`` is -1 to the dtype's precision); NumPy's float32 ``exp`` is vectorised,
    its ``expm1`` is not (about ten times slower).
    """

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha
        self.out: np.ndarray | None = None
        self.exp: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(S, D) -> (S, D)."""
        dtype = x.dtype.type
        e = np.clip(x, _exp_floor(x.dtype), dtype(0), out=self._array("exp", x.shape, x.dtype))
        np.exp(e, out=e)                                                              # exp(min(x, 0))
        out = self._array("out", x.shape, x.dtype)
        if self.alpha != 1.0:
            np.clip(x, dtype(0), dtype(np.inf), out=out)                              # max(x, 0), faster
            out += (e - dtype(1)) * dtype(self.alpha)
        else:
            np.maximum(np.subtract(e, dtype(1), out=out), x, out=out)                 # max(x, e - 1)
        self.out, self.exp = out, e
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dx = dout · (1 if x > 0 else αeˣ)."""
        e = self.exp
        dx = np.multiply(dout, e, out=self._array("dx", e.shape, np.result_type(e, dout)))
        if self.alpha != 1.0:
            dx[self.out <= 0] *= e.dtype.type(self.alpha)
        return dx

    def clear_cache(self) -> None:
        self.out = self.exp = None
        self.clear_buffers()


class ReLUModule(_Module):
    """``max(x, 0)``; the derivative is the mask ``x > 0``."""

    def __init__(self):
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return np.where(self.mask, x, x.dtype.type(0))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self.mask, dout, dout.dtype.type(0))

    def clear_cache(self) -> None:
        self.mask = None


class SoftMaxModule(_Module):
    """Row-wise softmax with the max trick; backward is the Jacobian-vector product (no (S, C, C) tensor).

    Its arrays are column-major (Fortran order): with few classes, a row-wise max or sum over an (S, C) array is then
    one pass down its C columns, several times faster than NumPy's reduction of S short rows."""

    def __init__(self):
        self.out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(S, C) logits -> (S, C) probabilities; subtracting each row's max keeps ``exp`` finite."""
        rows = (x.shape[0], 1)
        y = self._array("out", x.shape, x.dtype, "F")
        np.copyto(y, x)
        y -= np.max(y, axis=1, keepdims=True, out=self._array("max", rows, x.dtype))
        np.exp(y, out=y)
        y /= np.sum(y, axis=1, keepdims=True, out=self._array("sum", rows, x.dtype))
        self.out = y
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dx = y ∘ (dout − Σ_c dout_c y_c), row by row."""
        y = self.out
        dtype = np.result_type(y, dout)
        dx = np.multiply(dout, y, out=self._array("dx", y.shape, dtype, "F"))        # (S, C)
        dot = np.sum(dx, axis=1, keepdims=True, out=self._array("dot", (y.shape[0], 1), dtype))
        dx -= np.multiply(y, dot, out=self._array("tmp", y.shape, dtype, "F"))
        return dx

    def clear_cache(self) -> None:
        self.out = None
        self.clear_buffers()


class CrossEntropyModule(_Module):
    """Mean negative log-likelihood of **probabilities** ``x`` (S, C) given integer labels ``y`` (S,).

    The class count is ``x.shape[1]`` (never inferred from the labels, which may miss the highest class).  Probabilities
    are clipped at the dtype's smallest normal number so a probability that underflowed to 0 gives a finite loss and
    gradient; above that the values are exact.  ``backward`` right after ``forward`` on the same arrays reuses the
    picked probabilities (and the label checks) of ``forward``.
    """

    def __init__(self):
        self._last: tuple | None = None  # (x, y, picked) of the last forward

    def forward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Scalar loss ``−(1/S) Σᵢ log x[i, yᵢ]`` (a 0-d array of x's dtype)."""
        picked = self._picked(x, y)                                                   # (S,)
        self._last = (x, y, picked)
        logs = np.log(picked, out=self._array("log", picked.shape, picked.dtype))
        n = len(logs)  # sum / n: NumPy's mean() costs several microseconds more a call
        return -logs.sum(dtype=x.dtype) / x.dtype.type(n) if n else -logs.mean(dtype=x.dtype)

    def backward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """dx = −T / (S · x) with T the one-hot labels of shape x.shape: non-zero only at the true classes."""
        last = self._last
        picked = last[2] if last is not None and last[0] is x and last[1] is y else self._picked(x, y)
        S = x.shape[0]
        dx = self._array("dx", x.shape, x.dtype, "F")                                 # (S, C)
        dx.fill(0)
        dx[self._rows(S), y] = x.dtype.type(-1) / (x.dtype.type(S) * picked)
        return dx

    def _rows(self, n: int) -> np.ndarray:
        rows = self.__dict__.get("_arange")
        if rows is None or len(rows) != n:
            rows = self._arange = np.arange(n)
        return rows

    def _picked(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """x[i, yᵢ] (S,), clipped below at the smallest normal number; checks shapes and label range."""
        y = np.asarray(y)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"expected probabilities (S, C) and labels (S,), got {x.shape} and {y.shape}")
        if y.dtype.kind not in "iu":  # signed or unsigned integers
            raise TypeError(f"labels must be integers, got {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= x.shape[1]):
            raise ValueError(f"labels must lie in [0, {x.shape[1]}), got range [{y.min()}, {y.max()}]")
        picked = x[self._rows(x.shape[0]), y]
        return np.maximum(picked, _tiny(x.dtype), out=picked)

    def clear_cache(self) -> None:
        """Drop the arrays of the last forward pass."""
        self._last = None
        self.clear_buffers()
