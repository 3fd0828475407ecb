"""The course's NumPy MLP: ``[Linear → ELU] × len(n_hidden) → Linear → SoftMax``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from dl1.numpy_nn.modules import ELUModule, LinearModule, SoftMaxModule


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
        for module in self.modules:
            module.clear_cache()

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
        chunks = [self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        self.clear_cache()
        return np.concatenate(chunks) if chunks else np.zeros((0, self.n_classes), self.dtype)

    def __repr__(self) -> str:
        return f"MLP({self.n_inputs}, {self.n_hidden}, {self.n_classes}, dtype={self.dtype})"
