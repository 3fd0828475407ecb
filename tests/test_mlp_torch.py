"""The PyTorch MLP: structure, Kaiming initialisation, logits, batch-norm train/eval behaviour, NumPy twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dl1.models.mlp import MLP


def test_structure_with_and_without_batch_norm():
    plain = MLP(12, [8, 6], 3)
    assert [type(m) for m in plain.layers] == [nn.Linear, nn.ELU, nn.Linear, nn.ELU, nn.Linear]
    bn = MLP(12, [8, 6], 3, use_batch_norm=True)
    assert [type(m) for m in bn.layers] == [nn.Linear, nn.BatchNorm1d, nn.ELU, nn.Linear, nn.BatchNorm1d, nn.ELU,
                                            nn.Linear]
    logreg = MLP(12, [], 3)
    assert [type(m) for m in logreg.layers] == [nn.Linear]
    assert not any(isinstance(m, nn.Softmax) for m in bn.modules())  # CE is applied to logits


def test_kaiming_initial_statistics():
    torch.manual_seed(0)
    model = MLP(3072, [512, 256], 10)
    linears = [m for m in model.layers if isinstance(m, nn.Linear)]
    assert linears[0] is model.layers[0]
    assert linears[0].weight.std().item() == pytest.approx(1 / math.sqrt(3072), rel=0.01)
    assert linears[1].weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.02)
    assert linears[2].weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.05)
    for linear in linears:
        assert abs(linear.weight.mean().item()) < 0.1 * linear.weight.std().item()
        assert torch.all(linear.bias == 0)


def test_forward_flattens_images_and_returns_logits():
    model = MLP(3 * 4 * 4, [5], 7)
    x = torch.randn(6, 3, 4, 4)
    logits = model(x)
    assert logits.shape == (6, 7)
    torch.testing.assert_close(logits, model(x.reshape(6, -1)))
    assert not torch.allclose(logits.sum(1), torch.ones(6))  # not probabilities
    assert model.device == torch.device("cpu")
    loss = nn.functional.cross_entropy(logits, torch.randint(0, 7, (6,)))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_batch_norm_switches_between_batch_and_running_statistics():
    torch.manual_seed(0)
    model = MLP(10, [16], 4, use_batch_norm=True)
    bn = model.layers[1]
    x = torch.randn(32, 10) * 3 + 1
    # train mode: a sample's output depends on the other samples of its batch, and running stats move
    model.train()
    before = bn.running_mean.clone()
    out_a = model(x)[:4]
    out_b = model(torch.cat([x[:4], torch.randn(28, 10)]))[:4]
    assert not torch.allclose(out_a, out_b)
    assert not torch.allclose(bn.running_mean, before)
    assert bn.num_batches_tracked.item() == 2
    # eval mode: per-sample outputs, running stats frozen, equal to the running-statistics formula
    model.eval()
    frozen = bn.running_mean.clone()
    torch.testing.assert_close(model(x)[:4], model(x[:4]))
    torch.testing.assert_close(bn.running_mean, frozen)
    h = model.layers[0](x)
    expected = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(model.layers[1](h), expected)
    # and back to train mode: batch statistics again
    model.train()
    hn = model.layers[1](h)
    torch.testing.assert_close(hn.mean(0), bn.bias.expand(16), atol=1e-5, rtol=0)


def test_same_weights_as_numpy_mlp_give_same_probabilities():
    from dl1.numpy_nn import MLP as NumpyMLP

    torch.manual_seed(0)
    torch_model = MLP(9, [7, 5], 4).double()
    numpy_model = NumpyMLP(9, [7, 5], 4, dtype=np.float64)
    linears = [m for m in torch_model.layers if isinstance(m, nn.Linear)]
    for layer, linear in zip(numpy_model.linears, linears, strict=True):
        layer.params["weight"][...] = linear.weight.detach().numpy()
        layer.params["bias"][...] = linear.bias.detach().numpy() + 0.1
        with torch.no_grad():
            linear.bias += 0.1
    x = np.random.default_rng(0).standard_normal((5, 9))
    expected = torch.softmax(torch_model(torch.from_numpy(x)), 1).detach().numpy()
    np.testing.assert_allclose(numpy_model.forward(x), expected, rtol=1e-12)
