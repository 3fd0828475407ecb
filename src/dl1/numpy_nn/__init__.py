"""From-scratch NumPy neural networks (the course's assignment 1): modules, MLP, SGD, gradient checks; no torch."""

from dl1.numpy_nn.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from dl1.numpy_nn.mlp import MLP
from dl1.numpy_nn.modules import CrossEntropyModule, ELUModule, LinearModule, ReLUModule, SoftMaxModule
from dl1.numpy_nn.optim import SGD

__all__ = ["LinearModule", "ELUModule", "ReLUModule", "SoftMaxModule", "CrossEntropyModule", "MLP", "SGD",
           "rel_error", "eval_numerical_gradient", "eval_numerical_gradient_array"]
