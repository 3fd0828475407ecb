"""Central-difference gradient checks (the course's ``unittests.py`` helpers), NumPy only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def rel_error(x: np.ndarray, y: np.ndarray) -> float:
    """``max |x − y| / max(1e-8, |x| + |y|)`` element-wise (the course's relative error)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def eval_numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """dF/dx for a scalar function ``f`` by central differences, perturbing ``x`` in place (restored after)."""
    return eval_numerical_gradient_array(lambda v: np.float64(f(v)), x, np.float64(1.0), h)


def eval_numerical_gradient_array(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, df: np.ndarray,
                                  h: float = 1e-5) -> np.ndarray:
    """The vector-Jacobian product ``dfᵀ ∂f/∂x`` by central differences, perturbing ``x`` in place.

    ``f`` may ignore its argument and read ``x`` elsewhere (e.g. a layer's ``params['weight']``): only the in-place
    perturbation matters.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = np.array(f(x), copy=True)
        x[i] = old - h
        minus = np.array(f(x), copy=True)
        x[i] = old
        grad[i] = np.sum((plus - minus) * df) / (2 * h)
        it.iternext()
    return grad
