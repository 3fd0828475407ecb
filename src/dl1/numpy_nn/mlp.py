"""The course's NumPy MLP: ``[Linear → ELU] × len(n_hidden) → Linear → SoftMax``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from dl1.numpy_nn.modules import CrossEntropyModule, ELUModule, LinearModule, SoftMaxModule


class MLP:
    """Multi-layer perceptron returning softmax probabilities; ``n_hidden=[]`` is multinomial logistic regression.

    The first Linear is the input layer (Kaiming σ = √(1/fan_in), no gradient for the data); the others use
    σ = √(2/fan_in).  ``dtype`` is float64 by default (the course's); training passes ``dtype=np.float32``.
    ``forward`` casts its input to the model's dtype without copying when it already matches.  ``clear_cache()``
    drops every cached activation (call it before ``copy.deepcopy``).
    """

    def __init__(self, n_inputs: int, n_hidden: Sequence[int], n_classes: int,
                 dtype: np.dtype | type = np.float64, rng: np.random.Generator | None = None):
        self.n_inputs, self.n_hidden, self.n_classes = n_inputs, list(n_hidden), n_classes
        self.dtype = np.dtype(dtype)
        sizes = [n_inputs, *self.n_hidden, n_classes]
        self.modules: list = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            self.modules.append(LinearModule(fan_in, fan_out, input_layer=i == 0, dtype=dtype, rng=rng))
            self.modules.append(ELUModule() if i < len(sizes) - 2 else SoftMaxModule())
        self._flatten()

    def _flatten(self) -> None:
        """Lay the parameters end to end in one array (and the gradients in another), each layer's ``params`` and
        ``grads`` entries views of it, so that :class:`~dl1.numpy_nn.SGD` updates every parameter in one pass."""
        pairs = list(self.parameters())
        total = sum(p.size for p, _ in pairs)
        flat_params, flat_grads = np.empty(total, self.dtype), np.zeros(total, self.dtype)
        offset = 0
        for layer in self.linears:
            for key in ("weight", "bias"):
                p = layer.params[key]
                view = slice(offset, offset + p.size)
                flat_params[view] = p.ravel()
                layer.params[key] = flat_params[view].reshape(p.shape)
                layer.grads[key] = flat_grads[view].reshape(p.shape)
                offset += p.size

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(S, n_inputs) -> (S, n_classes) class probabilities."""
        out = np.asarray(x, dtype=self.dtype)
        for module in self.modules:
            out = module.forward(out)
        return out

    __call__ = forward

    def backward(self, dout: np.ndarray) -> None:
        """Back-propagate dL/d(probabilities) (S, n_classes); fills every layer's ``grads``."""
        for module in reversed(self.modules):
            dout = module.backward(dout)

    def clear_cache(self) -> None:
        """Drop every cached activation and scratch array."""
        for module in self.modules:
            module.clear_cache()

    @contextmanager
    def training_buffers(self, loss: CrossEntropyModule | None = None) -> Iterator[MLP]:
        """Within the block every module (and ``loss``) writes its outputs and gradients into arrays it keeps from
        step to step (see ``dl1.numpy_nn.modules``): a training step allocates nothing, and each returned array is
        overwritten by the next step.  Scratch arrays are dropped at the end."""
        modules = [*self.modules, *([loss] if loss is not None else [])]
        for module in modules:
            module.reuse_buffers = True
        try:
            yield self
        finally:
            for module in modules:
                module.reuse_buffers = False
                module.clear_buffers()

    @property
    def linears(self) -> list[LinearModule]:
        return [m for m in self.modules if isinstance(m, LinearModule)]

    def parameters(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(parameter, gradient) pairs of every layer; both are updated in place, so references stay valid."""
        for layer in self.linears:
            for key in ("weight", "bias"):
                yield layer.params[key], layer.grads[key]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters keyed ``layers.{i}.weight`` / ``layers.{i}.bias`` (i counts Linear layers)."""
        return {f"layers.{i}.{k}": v.copy() for i, layer in enumerate(self.linears) for k, v in layer.params.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy parameters in place (shapes must match)."""
        for i, layer in enumerate(self.linears):
            for k, v in layer.params.items():
                new = np.asarray(state[f"layers.{i}.{k}"])
                if new.shape != v.shape:
                    raise ValueError(f"layers.{i}.{k}: shape {new.shape} does not match {v.shape}")
                v[...] = new

    def predict(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Probabilities for many samples, in chunks (no cache kept)."""
        chunks = [self.forward(x[i:i + batch_size]).copy() if self.modules[-1].reuse_buffers
                  else self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        self.clear_cache()
        return np.concatenate(chunks) if chunks else np.zeros((0, self.n_classes), self.dtype)

    def __repr__(self) -> str:
        return f"MLP({self.n_inputs}, {self.n_hidden}, {self.n_classes}, dtype={self.dtype})"
