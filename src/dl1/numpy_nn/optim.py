"""Plain SGD for the NumPy MLP: ``p -= lr · g`` in place, without temporaries."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class SGD:
    """``SGD(model.parameters(), lr)``; ``step()`` updates every parameter in place from its gradient array.

    One scratch buffer per parameter holds ``lr · g`` so a step allocates nothing; the learning rate is cast to the
    parameter's dtype (no float64 upcast).  When the parameters are views laid end to end in one array, and the
    gradients in another (as ``dl1.numpy_nn.MLP`` lays them out), a step is two passes over those arrays.
    """

    def __init__(self, parameters: Iterable[tuple[np.ndarray, np.ndarray]], lr: float):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.pairs = list(parameters)
        self.lr = lr
        params, grads = _flat([p for p, _ in self.pairs]), _flat([g for _, g in self.pairs])
        if params is not None and grads is not None and params.dtype == grads.dtype:  # one pass over all of them
            self._groups = [(params, grads)]
        else:
            self._groups = self.pairs
        self._scratch = [np.empty_like(p) for p, _ in self._groups]

    def step(self) -> None:
        for (param, grad), buf in zip(self._groups, self._scratch, strict=True):
            np.multiply(grad, param.dtype.type(self.lr), out=buf)
            param -= buf


def _flat(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The one contiguous 1-d array that holds exactly ``arrays``, laid end to end in this order (as
    ``dl1.numpy_nn.MLP`` lays out its parameters and gradients), or None."""
    base = arrays[0].base if arrays else None
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    address = start = base.__array_interface__["data"][0]
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.__array_interface__["data"][0] != address:
            return None
        address += a.nbytes
    return base if address == start + base.nbytes else None
