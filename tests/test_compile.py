"""torch.compile works on every dl1 model: compiled, each trains a few steps to the losses and weights of eager.

The default suite compiles through dynamo and AOT autograd (``backend="aot_eager"``: the whole tracing path,
dl1's custom ops included, without the C++ compiler); the GPT also goes through the default backend (inductor) in a
slow test (its C++ compilation takes a minute or more on a 2-core machine).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

STEPS = 3


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def train(model: torch.nn.Module, run: Callable[[torch.nn.Module, int], torch.Tensor], params: Callable,
          compiled: str | None) -> tuple[list[float], list[torch.Tensor]]:
    """``STEPS`` SGD steps of ``run(net, step) -> loss`` with ``net`` the model or ``torch.compile(model)`` (SGD,
    not Adam: Adam divides by the gradient's size, which turns rounding noise in a zero gradient, such as the keys'
    bias in attention, into a full step)."""
    net = torch.compile(model, backend=compiled) if compiled else model
    opt = torch.optim.SGD(params(model), lr=0.05, momentum=0.9)
    losses = []
    for step in range(STEPS):
        loss = run(net, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p.detach().clone() for p in params(model)]


def check_compiles(build: Callable[[], torch.nn.Module], run: Callable, backend: str = "aot_eager",
                   params: Callable = lambda m: [p for p in m.parameters() if p.requires_grad],
                   rtol: float = 1e-4, atol: float = 1e-5) -> None:
    model = build()
    twin = copy.deepcopy(model)
    eager_losses, eager_params = train(model, run, params, None)
    compiled_losses, compiled_params = train(twin, run, params, backend)
    assert compiled_losses == pytest.approx(eager_losses, rel=rtol, abs=atol)
    assert eager_losses[-1] != eager_losses[0]  # it trained
    for a, b in zip(compiled_params, eager_params, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def batches(*shape: int, high: int | None = None, seed: int = 0) -> Callable[[int], torch.Tensor]:
    def draw(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1000 + step)
        return torch.randint(0, high, shape, generator=g) if high else torch.randn(*shape, generator=g)
    return draw


# -- the models -------------------------------------------------------------------------------------------------------
def tiny_gpt(activation: str = "gelu"):
    from dl1.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=32, embd_pdrop=0.0,
                         resid_pdrop=0.0, attn_pdrop=0.0, activation=activation))


def gpt_run(net, step):
    idx = batches(4, 17, high=13)(step)
    return net(idx[:, :-1], idx[:, 1:])[1]


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_gpt_compiles_with_dl1_kernels(activation):
    from dl1.models import kernels

    before = kernels.set_matmul_backend("aten")
    try:
        check_compiles(lambda: tiny_gpt(activation), gpt_run)
    finally:
        kernels.set_matmul_backend(before)


def test_gpt_traces_as_one_graph_through_the_custom_ops():
    """dynamo traces dl1's kernels (torch.library custom ops) without a graph break."""
    model = tiny_gpt()
    idx = batches(2, 9, high=13)(0)
    explained = torch._dynamo.explain(model)(idx[:, :-1], idx[:, 1:])
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    ops = {str(n.target) for g in explained.graphs for n in g.graph.nodes if n.op == "call_function"}
    assert any("dl1.mlp" in o for o in ops) and any("dl1.linear" in o for o in ops), ops


@pytest.mark.slow  # inductor's C++ compilation: about a minute and a half on a busy 2-core machine
def test_gpt_compiles_with_the_default_backend_inductor():
    check_compiles(tiny_gpt, gpt_run, backend="inductor")


@pytest.mark.parametrize("batch_norm", [False, True])
def test_torch_mlp_compiles(batch_norm):
    from dl1.models.mlp import MLP

    def build():
        torch.manual_seed(0)
        return MLP(12, [16, 8], 5, use_batch_norm=batch_norm)

    x, y = batches(8, 12), batches(8, high=5, seed=1)
    check_compiles(build, lambda net, s: F.cross_entropy(net(x(s)), y(s)))


def test_vae_compiles():
    from dl1.models.vae import VAE

    def build():
        torch.manual_seed(0)
        return VAE(num_filters=4, z_dim=2)

    imgs, eps = batches(2, 1, 28, 28, high=16), batches(2, 2, seed=1)
    check_compiles(build, lambda net, s: net(imgs(s), eps(s))[2])


def test_aae_compiles():
    from dl1.models.aae import AdversarialAE

    def build():
        torch.manual_seed(0)
        return AdversarialAE(z_dim=2, num_filters=4)

    x, z_real = batches(2, 1, 28, 28), batches(2, 2, seed=1)

    def run(net, s):
        recon, z = net(x(s))
        ae_loss, _ = net.get_loss_autoencoder(x(s), recon, z, lambda_=0.5)
        disc_loss, _ = net.get_loss_discriminator(z, z_real(s))
        return ae_loss + disc_loss

    check_compiles(build, run)


def small_clip():
    import open_clip

    torch.manual_seed(0)
    return open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=16),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=8, vocab_size=50, width=16, heads=2, layers=1)).eval()


@pytest.mark.parametrize("kind", ["visual", "deep"])
def test_prompt_models_compile(kind):
    from dl1.models.prompt_clip import DeepPromptCLIP, VisualPromptCLIP
    from dl1.models.prompters import PadPrompter

    text = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))

    def build():
        clip = small_clip()
        if kind == "visual":
            return VisualPromptCLIP(clip, text, PadPrompter(prompt_size=2, image_size=16))
        return DeepPromptCLIP(clip, text, prompt_num=2, injection_layer=1)

    x, y = batches(2, 3, 16, 16), batches(2, high=3, seed=1)
    check_compiles(build, lambda net, s: F.cross_entropy(net(x(s)), y(s)),
                   params=lambda m: [p for _, p in m.trainable_parameters()])


# -- --compile in the torch experiments -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt", "vae", "aae", "mlp_pytorch", "clip_prompt", "resnet_transfer"])
def test_torch_experiments_take_compile_off_by_default(name):
    import importlib

    from dl1.config import parse_config

    config_cls = importlib.import_module(f"dl1.experiments.{name}").Config
    assert parse_config(config_cls, [], prog=name).compile is False
    assert parse_config(config_cls, ["--compile"], prog=name).compile is True


def test_the_engine_compiles_what_it_wraps(tmp_path):
    from dl1.run.folder import Run
    from dl1.train.engine import Trainer

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = Run("t", root=tmp_path, enabled=False)  # writes nothing
    plain = Trainer(run, {"m": model}, {"m": opt}, epochs=1).wrap(model)
    compiled = Trainer(run, {"m": model}, {"m": opt}, epochs=1, compile=True).wrap(model)
    assert plain is model and compiled._orig_mod is model  # torch.compile's wrapper of the same module
