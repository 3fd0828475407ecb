"""CLIP with a learnt visual prompt (``VisualPromptCLIP``) or learnt deep prompt tokens (``DeepPromptCLIP``).

Both wrap a frozen open_clip model and a fixed text classifier: the class names' text features are computed once by
the caller (``dl1.models.clip.text_features``) and stored here L2-normalised, ``(C, D)``.  The logits are
``logit_scale.exp() * cos(image, text)`` with the learnt temperature detached (= 100 for OpenAI's CLIP).  Only
``prompt_learner`` has trainable parameters; every CLIP weight has ``requires_grad=False`` and the CLIP stays in eval
mode, whatever ``train()`` is called with.

* ``VisualPromptCLIP``: ``prompt_learner`` is a prompter from :mod:`dl1.models.prompters`, applied to the
  preprocessed images before ``encode_image``.
* ``DeepPromptCLIP``: ``prompt_learner.deep_prompt`` holds ``prompt_num`` tokens of the visual width, appended after
  the CLS and patch tokens right before residual block ``injection_layer`` and kept through every later block (one
  injection, as in the course's ``dpt_model.py``).  The tokens are dropped again before pooling, so the image feature is
  still the CLS token's.  The parameter stays float32 and is cast to the tower's dtype at injection.

The frozen CLIP may be kept in a lower precision (:meth:`PromptedCLIP.keep_frozen_in`: bfloat16 or float16 on CUDA,
what ``--precision`` runs in); the prompt stays float32 (its gradient arrives in float32 through the casts), and the
cosine head runs in float32 outside autocast, so logits and loss are float32 whatever the precision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dl1.errors import DL1Error, first_line
from dl1.models.prompters import build_prompter, init_prompt


def tower_dtype(clip_model: nn.Module) -> torch.dtype:
    """The dtype of the visual tower's weights (float32, or what :meth:`PromptedCLIP.keep_frozen_in` chose)."""
    return next(clip_model.visual.parameters()).dtype


def _float32_region(device: torch.device):
    """No autocast on ``device`` (for the float32 cosine head); a plain block where autocast does not exist."""
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else nullcontext()


class PromptedCLIP(nn.Module):
    """A frozen CLIP and its precomputed text classifier; subclasses define ``encode_image`` and ``prompt_learner``."""

    prompt_learner: nn.Module

    def __init__(self, clip_model: nn.Module, text_features: torch.Tensor):
        super().__init__()
        self.clip_model = clip_model
        for p in self.clip_model.parameters():
            p.requires_grad_(False)
        self.clip_model.eval()
        scale = clip_model.logit_scale.detach().float().exp()  # the learnt temperature, not the raw log-parameter
        self.register_buffer("logit_scale", scale.reshape(()).clone(), persistent=False)
        self.register_buffer("text_features", self._normalise(text_features), persistent=False)

    @staticmethod
    def _normalise(features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features.detach().float(), dim=-1)  # (C, D)

    def set_text_features(self, text_features: torch.Tensor) -> None:
        """Swap the classifier (e.g. the 110 CIFAR-10 + CIFAR-100 classes of the cross-dataset evaluation)."""
        self.text_features = self._normalise(text_features).to(self.text_features.device)

    @property
    def num_classes(self) -> int:
        return self.text_features.shape[0]

    def train(self, mode: bool = True) -> PromptedCLIP:
        super().train(mode)
        self.clip_model.eval()  # frozen: no dropout / statistics updates in the CLIP, ever
        return self

    def keep_frozen_in(self, dtype: torch.dtype) -> PromptedCLIP:
        """Keep the frozen CLIP's weights in ``dtype`` (e.g. bfloat16 on a GPU: half the memory, the tensor cores'
        input); the prompt, the text classifier and the temperature stay float32."""
        self.clip_model.to(dtype)
        return self

    def skip_draws(self, n: int) -> None:
        """Advance a random-patch prompt's location generator by ``n`` forward passes (a no-op for other prompts): a
        rank that scored fewer evaluation batches than rank 0 stays in step with it."""
        draw = getattr(self.prompt_learner, "sample_location", None)
        for _ in range(n if draw is not None else 0):
            draw()

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Names and parameters that require gradients (only the prompt's)."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def load_prompt(self, state: Mapping[str, Any], source: str = "the checkpoint") -> None:
        """Load a saved prompt into ``prompt_learner``; one that does not fit is a one-line DL1Error."""
        try:
            self.prompt_learner.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise DL1Error(f"the prompt in {source} does not fit this model: {first_line(exc)}") from None

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C), float32
        features = self.encode_image(images)                  # (B, D), the tower's or autocast's dtype
        with _float32_region(features.device):
            features = features.float() / features.float().norm(dim=-1, keepdim=True)  # out of place
            return self.logit_scale * features @ self.text_features.t()


class VisualPromptCLIP(PromptedCLIP):
    """``logits = scale * cos(encode_image(prompter(x)), text)``: a visual prompt in front of a frozen CLIP."""

    def __init__(self, clip_model: nn.Module, text_features: torch.Tensor, prompter: nn.Module):
        super().__init__(clip_model, text_features)
        self.prompt_learner = prompter

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        prompted = self.prompt_learner(images)  # (B, 3, H, W), prompt added in float32
        return self.clip_model.encode_image(prompted.to(tower_dtype(self.clip_model)))


class DeepPrompt(nn.Module):
    """The learnable deep prompt tokens ``deep_prompt`` of shape ``(prompt_num, 1, width)`` (the course's layout)."""

    def __init__(self, prompt_num: int, width: int, init_method: str = "random"):
        super().__init__()
        if prompt_num < 1:
            raise ValueError(f"prompt_num must be at least 1, got {prompt_num}")
        self.deep_prompt = init_prompt((prompt_num, 1, width), init_method)

    def tokens(self, batch: int, dtype: torch.dtype) -> torch.Tensor:  # -> (B, prompt_num, width)
        return self.deep_prompt.to(dtype).permute(1, 0, 2).expand(batch, -1, -1)


class DeepPromptCLIP(PromptedCLIP):
    """CLIP whose visual transformer sees ``prompt_num`` extra learnt tokens from block ``injection_layer`` on."""

    def __init__(self, clip_model: nn.Module, text_features: torch.Tensor, prompt_num: int = 4,
                 injection_layer: int = 0, init_method: str = "random"):
        super().__init__(clip_model, text_features)
        visual = clip_model.visual
        if not (hasattr(visual, "class_embedding") and hasattr(visual, "transformer")):
            raise ValueError(f"deep prompts need a ViT visual tower; {type(visual).__name__} has no token sequence")
        self.num_blocks = len(visual.transformer.resblocks)
        if not 0 <= injection_layer < self.num_blocks:
            raise ValueError(f"injection_layer must be in [0, {self.num_blocks - 1}] for this {self.num_blocks}-block "
                             f"visual transformer, got {injection_layer}")
        self.injection_layer, self.prompt_num = int(injection_layer), int(prompt_num)
        self.prompt_learner = DeepPrompt(prompt_num, visual.class_embedding.shape[-1], init_method)

    @property
    def deep_prompt(self) -> nn.Parameter:
        return self.prompt_learner.deep_prompt

    def _embed(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 1 + HW, width)
        v = self.clip_model.visual
        x = v.conv1(images.to(tower_dtype(self.clip_model)))  # (B, width, h, w)
        x = x.flatten(2).permute(0, 2, 1)                      # (B, hw, width)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, width)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # (B, 1 + hw, width)
        x = v.patch_dropout(x)
        return v.ln_pre(x)

    def custom_encode_image(self, images: torch.Tensor, inject: bool = True) -> torch.Tensor:  # -> (B, D)
        """The course's ``custom_encode_image``: embed, run the blocks (injecting before block k), pool, project."""
        v = self.clip_model.visual
        x = self._embed(images)                                  # (B, L, width), L = 1 + hw
        n_tokens = x.shape[1]
        batch_first = getattr(v.transformer, "batch_first", True)
        for i, block in enumerate(v.transformer.resblocks):
            if inject and i == self.injection_layer:
                x = torch.cat([x, self.prompt_learner.tokens(x.shape[0], x.dtype)], dim=1)  # (B, L + P, width)
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)      # LND blocks
        x = x[:, :n_tokens]                                      # drop the prompt tokens before pooling
        pooled, _ = v._pool(x)                                   # ln_post + CLS token (B, width)
        return pooled @ v.proj if v.proj is not None else pooled  # (B, D)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.custom_encode_image(images)


def count_parameters(model: PromptedCLIP) -> dict[str, int]:
    """Trainable (prompt) and frozen (CLIP) parameter counts."""
    trainable = sum(p.numel() for _, p in model.trainable_parameters())
    frozen = sum(p.numel() for p in model.clip_model.parameters())
    return {"trainable": trainable, "frozen": frozen}


def build_prompted_clip(clip_model: nn.Module, text_features: torch.Tensor, prompt: Mapping[str, Any]) -> PromptedCLIP:
    """The prompted CLIP that ``prompt`` describes (the keys of a clip-prompt config: ``prompt_type``, ``method``,
    ``prompt_size``, ``image_size``, ``prompt_init_method``, ``prompt_num``, ``injection_layer``, ``seed``).  The
    prompt's initial values depend on ``seed`` only; the global RNG is left as it was.  Bad sizes: ValueError."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(prompt["seed"])
        if prompt["prompt_type"] == "deep_prompt":
            return DeepPromptCLIP(clip_model, text_features, prompt["prompt_num"], prompt["injection_layer"],
                                  prompt["prompt_init_method"])
        prompter = build_prompter(prompt["method"], prompt["prompt_size"], prompt["image_size"],
                                  prompt["prompt_init_method"], seed=prompt["seed"])
        return VisualPromptCLIP(clip_model, text_features, prompter)


def evaluate(model: nn.Module, batches: Iterable, device: torch.device, allow_empty: bool = False) -> dict[str, Any]:
    """Sample-weighted cross-entropy and top-1 (percent) of ``model`` over ``(images, targets)`` batches, in the
    caller's precision (the engine's autocast, or ``trainer.autocast()`` around it), and ``n`` (images scored).  No
    images is a DL1Error unless ``allow_empty`` (a rank's empty part of a tiny split: ``n`` = 0)."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for images, targets in batches:
            images, targets = images.to(device, non_blocking=True), targets.to(device)
            logits = model(images)  # (B, C) float32
            loss_sum += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
            correct += int((logits.argmax(dim=-1) == targets).sum())
            n += targets.numel()
    if n == 0 and not allow_empty:
        raise DL1Error("evaluation saw no images (empty split?)")
    return {"loss": loss_sum / max(n, 1), "top1": 100.0 * correct / max(n, 1), "n": n}
