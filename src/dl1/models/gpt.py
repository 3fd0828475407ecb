"""A GPT language model (minGPT / the course's ``part3/gpt.py``), reading top to bottom like nanoGPT's ``model.py``.

config (``gpt_config.py``, torch-free) -> causal self-attention -> MLP -> block -> model -> optimiser groups ->
generate -> copying a ``transformers`` GPT-2 -> the loss over a split.  No IO: GPT-2 weight files are read by
``dl1.hub.gpt2``.

``CausalSelfAttention`` has two paths that compute the same thing: the explicit masked softmax the course asks for
(Q3.2) and PyTorch's fused ``scaled_dot_product_attention`` (the default, several times faster).  State-dict names
(``transformer.wte``, ``c_attn``, ``c_proj``, ``c_fc``, ``lm_head``) are GPT-2's, so its weights load by name.

Every linear layer is :class:`Linear`: ``nn.Linear`` with the same parameters, whose float32 CPU matrix products run
through :func:`dl1.models.kernels.linear`, and the MLP (``c_fc`` -> GELU -> ``c_proj``) is one fused unit
(:func:`dl1.models.kernels.mlp`: one autograd node, its GELU derivative computed in place).  Both are
``torch.library`` custom ops under ``torch.compile``.  Their products run on oneDNN where PyTorch has it, else on
torch's default matmul (``set_onednn_linear`` chooses); other devices and dtypes and autocast use ``F.linear``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dl1.errors import DL1Error
from dl1.models import kernels
from dl1.models.gpt_config import ACTIVATION_NAMES, PRESETS, PRETRAINED, GPTConfig

__all__ = ["GPT", "GPTConfig", "PRESETS", "PRETRAINED", "CausalSelfAttention", "Block", "MLP", "NewGELU", "Linear",
           "filter_logits", "mean_loss", "summed_loss", "set_onednn_linear"]


# -- linear layers: float32 CPU products through dl1's kernels ---------------------------------------------------------
def set_onednn_linear(enabled: bool) -> bool:
    """Run the float32 CPU products of every :class:`Linear` and :class:`MLP` on oneDNN (True, where PyTorch has it)
    or on torch's default matmul (False); returns whether oneDNN was in use.  The default is oneDNN where PyTorch
    has it: see :mod:`dl1.models.kernels` ("auto" there measures which is faster on this CPU)."""
    before = kernels.matmul_backend() == "onednn"
    kernels.set_matmul_backend("onednn" if enabled and kernels.onednn_linear_op() is not None else "aten")
    return before


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict names) whose float32 CPU products run through
    :func:`dl1.models.kernels.linear` (a ``torch.library`` custom op under ``torch.compile``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels.applies(x, self.weight):
            return kernels.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class NewGELU(nn.Module):
    """GELU with the tanh approximation (GPT-2, BERT): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    approximate = "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")  # the same formula as one fused kernel


ACTIVATIONS = dict(zip(ACTIVATION_NAMES, (NewGELU, nn.GELU), strict=True))


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention followed by a projection."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd)  # key, query, value of all heads at once
        self.c_proj = Linear(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.fused = config.fused_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # batch, sequence length, embedding width
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        y = self._fused(q, k, v) if self.fused else self._explicit(q, k, v)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))

    def _fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.attn_dropout.p if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        T = q.size(-2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, T): 1 where key <= query
        att = att.masked_fill(~mask, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        return att @ v  # (B, nh, T, hs)


class MLP(nn.Module):
    """Linear(d, 4d) -> GELU -> Linear(4d, d) -> dropout."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd)
        self.act = ACTIVATIONS[config.activation]()
        self.c_proj = Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gelu = getattr(self.act, "approximate", None)  # "tanh" (NewGELU) or "none" (nn.GELU)
        if gelu is not None and kernels.applies(x, self.c_fc.weight):  # one fused unit: kernels.mlp
            y = kernels.mlp(x, self.c_fc.weight, self.c_fc.bias, self.c_proj.weight, self.c_proj.bias, gelu)
        else:
            y = self.c_proj(self.act(self.c_fc(x)))
        return self.dropout(y)


class Block(nn.Module):
    """A pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The GPT language model: token + position embeddings, ``n_layer`` blocks, final LayerNorm, linear head."""

    @staticmethod
    def get_default_config() -> GPTConfig:
        """The course's defaults (dropouts 0.1); set ``model_type`` or the three sizes, and vocab/block size."""
        return GPTConfig()

    def __init__(self, config: GPTConfig):
        super().__init__()
        config = config.resolved()
        self.config = config
        self.block_size = config.block_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.embd_pdrop),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd),
        ))
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameters excluding ``lm_head`` (the count the course prints)."""
        return sum(p.numel() for p in self.transformer.parameters())

    def set_fused_attention(self, fused: bool) -> GPT:
        """Switch every attention layer between the fused and the explicit path."""
        self.config.fused_attention = fused
        for block in self.transformer.h:
            block.attn.fused = fused
        return self

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """``idx`` (B, T) token ids, T <= block_size -> logits (B, T, vocab), and the mean CE loss if ``targets``."""
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"sequence of length {T} is longer than the block size {self.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # -- optimiser -----------------------------------------------------------------------------------------------
    def decay_groups(self) -> tuple[list[str], list[str]]:
        """Names of the parameters with weight decay (Linear weights) and without (biases, LayerNorm, Embedding)."""
        decay, no_decay = [], []
        for mn, m in self.named_modules():
            for pn, _ in m.named_parameters(recurse=False):
                full = f"{mn}.{pn}" if mn else pn
                (decay if pn == "weight" and isinstance(m, nn.Linear) else no_decay).append(full)
        names = {n for n, _ in self.named_parameters()}
        both, missing = set(decay) & set(no_decay), names - set(decay) - set(no_decay)
        assert not both and not missing, f"parameters in both groups: {both}; in none: {missing}"
        return decay, no_decay

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas: tuple[float, float],
                             device_type: str | None = None) -> torch.optim.AdamW:
        """AdamW(learning_rate, betas) with ``weight_decay`` on Linear weights only (nanoGPT's signature); PyTorch's
        fused kernel (one call a step) on ``device_type`` cpu and cuda, the multi-tensor one elsewhere (None: the
        parameters' device)."""
        decay, no_decay = self.decay_groups()
        params = dict(self.named_parameters())
        groups = [{"params": [params[n] for n in sorted(decay)], "weight_decay": weight_decay},
                  {"params": [params[n] for n in sorted(no_decay)], "weight_decay": 0.0}]
        device = device_type or next(self.parameters()).device.type
        kwargs = {"fused": True} if device in ("cuda", "cpu") else {"foreach": True}  # one kernel per step
        return torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), **kwargs)

    # -- generation ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, do_sample: bool = False,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Extend ``idx`` (B, T) by ``max_new_tokens`` -> (B, T + max_new_tokens); call in eval mode.

        Greedy (argmax) unless ``do_sample``; sampling is shaped by ``temperature``, ``top_k`` (keep the k most likely)
        and ``top_p`` (nucleus: the smallest set whose probability reaches p).  The context is cropped to the last
        ``block_size`` tokens.
        """
        if not temperature > 0:
            raise ValueError("temperature must be > 0")
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.block_size:]  # (B, <=block)
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :].float()  # (B, vocab)
            if not do_sample:  # greedy: the most likely token, whatever the temperature and filters
                idx_next = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                # the maximum becomes 0 before dividing, so no temperature overflows: as it goes to 0, every
                # token below the maximum goes to -inf and sampling becomes greedy (ties shared), never NaN; below
                # float32's smallest normal number a temperature would round to 0, and it changes nothing above it
                t = max(temperature, torch.finfo(torch.float32).tiny)
                logits = (logits - logits.amax(dim=-1, keepdim=True)) / t  # (B, vocab)
                logits = filter_logits(logits, top_k=top_k, top_p=top_p)
                idx_next = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx

    # -- GPT-2 weights ---------------------------------------------------------------------------------------------
    @staticmethod
    def config_from_hf(hf_config: Any) -> GPTConfig:
        """Our config of a ``transformers.GPT2Config`` (no dropout: the weights are for inference)."""
        if getattr(hf_config, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise DL1Error(f"unsupported GPT-2 activation {hf_config.activation_function!r} "
                           "(only tanh-approximate GELU)")
        return GPTConfig(vocab_size=hf_config.vocab_size, block_size=hf_config.n_positions,
                         n_layer=hf_config.n_layer, n_head=hf_config.n_head, n_embd=hf_config.n_embd,
                         embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> GPT:
        """Copy a ``transformers.GPT2LMHeadModel`` into our GPT (Conv1D weights transposed)."""
        config = cls.config_from_hf(hf_model.config)
        model = cls(config)
        sd = model.state_dict()
        sd_hf = {k: v for k, v in hf_model.state_dict().items()
                 if not k.endswith((".attn.masked_bias", ".attn.bias"))}  # causal-mask buffers, not weights
        if set(sd_hf) != set(sd):
            raise DL1Error(f"GPT-2 state dict does not match: missing {sorted(set(sd) - set(sd_hf))[:5]}, "
                           f"unexpected {sorted(set(sd_hf) - set(sd))[:5]}")
        conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        with torch.no_grad():
            for k, v in sd_hf.items():
                v = v.t() if k.endswith(conv1d) else v  # HF Conv1D stores (in, out); Linear wants (out, in)
                if v.shape != sd[k].shape:
                    raise DL1Error(f"shape mismatch for {k}: {tuple(v.shape)} vs {tuple(sd[k].shape)}")
                sd[k].copy_(v)
        return model


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf the logits outside the top-k and outside the nucleus of probability ``top_p``; (B, V) -> (B, V)."""
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass strictly before each token
        drop_sorted = before >= top_p  # the first token is always kept (before = 0)
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.inference_mode()
def mean_loss(model: nn.Module, windows: Iterable[tuple[torch.Tensor, torch.Tensor]], device: Any) -> float:
    """Mean cross-entropy (nats per token) of ``model`` in eval mode over ``(x, y)`` windows (b, T), every target
    counted once; one host sync at the end."""
    total, count = summed_loss(model, windows, device)
    return float(total.item()) / max(count, 1)


@torch.no_grad()
def summed_loss(model: nn.Module, windows: Iterable[tuple[torch.Tensor, torch.Tensor]],
                device: Any) -> tuple[torch.Tensor, int]:
    """The summed cross-entropy (a float64 0-d tensor on ``device``, not read back) and the number of targets over
    ``(x, y)`` windows, in eval mode and without gradients (a graph kept across the batches through the running sum
    would hold every batch's activations: gigabytes on a small corpus): sums of several ranks' windows add up to the
    whole split's."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for x, y in windows:
        x, y = x.to(device), y.to(device)
        logits, _ = model(x)  # (b, T, V)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
        count += y.numel()
    return total, count
