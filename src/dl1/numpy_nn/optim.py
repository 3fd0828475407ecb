"""Plain SGD for the NumPy MLP: ``p -= lr · g`` in place, without temporaries."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class SGD:
    """``SGD(model.parameters(), lr)``; ``step()`` updates every parameter in place from its gradient array.

    One scratch buffer per parameter holds ``lr · g`` so a step allocates nothing; the learning rate is cast to the
    parameter's dtype (no float64 upcast).
    """

    def __init__(self, parameters: Iterable[tuple[np.ndarray, np.ndarray]], lr: float):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.pairs = list(parameters)
        self.lr = lr
        self._scratch = [np.empty_like(p) for p, _ in self.pairs]

    def step(self) -> None:
        for (param, grad), buf in zip(self.pairs, self._scratch, strict=True):
            np.multiply(grad, param.dtype.type(self.lr), out=buf)
            param -= buf
