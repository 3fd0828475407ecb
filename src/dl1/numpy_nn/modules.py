"""The course's NumPy modules, vectorised (``torch`` is never imported here).

Every module has ``forward``, ``backward`` and ``clear_cache``; backward sits right under its forward.  Shapes: ``S``
samples, ``M`` input features, ``N`` output features, ``C`` classes.  Parameters default to float64, the course's
dtype: ``LinearModule(D, C)`` passes the course's central-difference checks (h = 1e-5, relative error < 1e-5) as it
is.  Training asks for float32 explicitly (``dtype=np.float32``, about twice as fast).  The modules compute in the
dtype of their parameters / inputs and never silently upcast: Python scalars are "weak" under NumPy 2 and every
constant is cast to the array's dtype.
"""

from __future__ import annotations

import numpy as np


class LinearModule:
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
        out = x @ self.params["weight"].T                                            # (S, N)
        out += self.params["bias"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """dout (S, N) -> dx (S, M); fills ``grads`` in place: dW = doutᵀ X (N, M), db = column sums of dout (N,)."""
        np.matmul(dout.T, self.x, out=self.grads["weight"])                           # (N, M)
        np.sum(dout, axis=0, out=self.grads["bias"])                                  # (N,)
        if not self.needs_input_grad:
            return None
        return dout @ self.params["weight"]                                           # (S, M)

    def clear_cache(self) -> None:
        self.x = None

    def __repr__(self) -> str:
        return (f"LinearModule({self.in_features}, {self.out_features}, input_layer={self.input_layer}, "
                f"dtype={self.params['weight'].dtype})")


class ELUModule:
    """``ELU(x) = x`` for x > 0, else ``α(eˣ − 1)``; the cached output gives the derivative ``y + α`` for x ≤ 0.

    Written without ``np.where`` (slow): ``ELU(x) = max(x, 0) + α·expm1(min(x, 0))`` and, for α = 1,
    ``ELU'(x) = min(y, 0) + 1``.  ``expm1`` of ``min(x, 0)`` never overflows and is exact near 0.
    """

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha
        self.out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(S, D) -> (S, D)."""
        zero = x.dtype.type(0)
        out = np.minimum(x, zero)
        np.expm1(out, out=out)
        if self.alpha != 1.0:
            out *= x.dtype.type(self.alpha)
        out += np.maximum(x, zero)
        self.out = out
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dx = dout · (1 if x > 0 else αeˣ), with αeˣ = y + α."""
        y = self.out
        slope = np.minimum(y, y.dtype.type(0))                                        # y where x <= 0, else 0
        slope += y.dtype.type(self.alpha)
        if self.alpha != 1.0:
            slope[y > 0] = 1
        slope *= dout
        return slope

    def clear_cache(self) -> None:
        self.out = None


class ReLUModule:
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


class SoftMaxModule:
    """Row-wise softmax with the max trick; backward is the Jacobian-vector product (no (S, C, C) tensor)."""

    def __init__(self):
        self.out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(S, C) logits -> (S, C) probabilities; subtracting each row's max keeps ``exp`` finite."""
        y = x - x.max(axis=1, keepdims=True)
        np.exp(y, out=y)
        y /= y.sum(axis=1, keepdims=True)
        self.out = y
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dx = y ∘ (dout − Σ_c dout_c y_c), row by row."""
        y = self.out
        dx = dout * y                                                                 # (S, C)
        dx -= y * dx.sum(axis=1, keepdims=True)
        return dx

    def clear_cache(self) -> None:
        self.out = None


class CrossEntropyModule:
    """Mean negative log-likelihood of **probabilities** ``x`` (S, C) given integer labels ``y`` (S,).

    The class count is ``x.shape[1]`` (never inferred from the labels, which may miss the highest class).  Probabilities
    are clipped at the dtype's smallest normal number so a probability that underflowed to 0 gives a finite loss and
    gradient; above that the values are exact.
    """

    def forward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Scalar loss ``−(1/S) Σᵢ log x[i, yᵢ]`` (a 0-d array of x's dtype)."""
        picked = self._picked(x, y)                                                   # (S,)
        return -np.log(picked).mean(dtype=x.dtype)

    def backward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """dx = −T / (S · x) with T the one-hot labels of shape x.shape: non-zero only at the true classes."""
        S = x.shape[0]
        dx = np.zeros_like(x)                                                         # (S, C)
        dx[np.arange(S), y] = -1 / (S * self._picked(x, y))
        return dx

    @staticmethod
    def _picked(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """x[i, yᵢ] (S,), clipped below at the smallest normal number; checks shapes and label range."""
        y = np.asarray(y)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"expected probabilities (S, C) and labels (S,), got {x.shape} and {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"labels must be integers, got {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= x.shape[1]):
            raise ValueError(f"labels must lie in [0, {x.shape[1]}), got range [{y.min()}, {y.max()}]")
        return np.maximum(x[np.arange(x.shape[0]), y], np.finfo(x.dtype).tiny)

    def clear_cache(self) -> None:
        """Nothing is cached (the loss takes its inputs again in ``backward``)."""
