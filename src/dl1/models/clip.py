"""CLIP models through open_clip: the bundle (model, preprocessing, tokenizer), text classifiers, zero-shot logits.

:class:`ClipBundle` holds a frozen float32 open_clip model in eval mode, its image preprocessing and its BPE
tokenizer.  ``build_clip`` makes one of an open_clip architecture with random weights, ready to be loaded
(``dl1.hub.clip.load_clip`` finds and reads the weights); ``tiny_clip`` builds a small *random* CLIP with the real
tokenizer, for tests and smoke runs only, never as a fallback; ``build_mini_clip`` builds dl1's mini-CLIP (a small
ViT and text transformer that ``dl1 run mini-clip`` trains on Fashion-MNIST captions) from its model config.
``text_features`` and ``ZeroshotCLIP`` turn class names into a classifier; logits are ``logit_scale.exp()`` x
cosine(image, class text).

``import open_clip`` costs seconds (it brings timm and transformers when they are installed): only the CLIP
experiments' runners and the CLIP loaders in ``dl1.hub.clip`` import this module, and each of them builds an open_clip
model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn

from dl1.errors import DL1Error

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
Template = str | Callable[[str], str]


@dataclass
class ClipBundle:
    """A CLIP model with its image preprocessing and text tokenizer (the open_clip bundle)."""

    model: nn.Module  # open_clip CLIP: encode_image, encode_text, logit_scale (log-temperature)
    preprocess: Callable[[Any], torch.Tensor]  # PIL image -> (3, S, S) normalised tensor
    tokenizer: Callable[[Sequence[str]], torch.Tensor]  # list of N strings -> (N, context_length) token ids
    arch: str  # the name asked for (course or open_clip spelling)
    pretrained: str | None = "openai"  # weights tag, None for random weights
    weights: str | None = None  # file the weights were read from
    random_init: bool = False  # True only for tiny_clip / explicitly unloaded models
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1])

    def summary(self) -> dict[str, Any]:
        """What a run's summary records about this CLIP."""
        return {"arch": self.arch, "pretrained": self.pretrained, "weights": self.weights,
                "random_weights": bool(self.random_init)}


# -- building models --------------------------------------------------------------------------------------------------
def freeze(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` as float32, in eval mode, without gradients, on ``device``."""
    model = model.float().eval().to(device)
    model.requires_grad_(False)
    return model


def build_clip(arch: str, oc_name: str, quick_gelu: bool, prep: dict[str, Any]) -> ClipBundle:
    """An open_clip model of ``oc_name`` (random init, to be loaded) with its eval preprocessing (``prep``: the
    weights' mean, std, interpolation, resize mode) and tokenizer."""
    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly": the weights are loaded next
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            oc_name, pretrained=None, force_quick_gelu=quick_gelu, **{f"image_{k}": v for k, v in prep.items()})
    finally:
        logging.disable(logging.NOTSET)
    return ClipBundle(model, preprocess, open_clip.get_tokenizer(oc_name), arch, None, None)


def tiny_clip(embed_dim: int = 32, width: int = 64, layers: int = 2, heads: int = 2, image_size: int = 64,
              patch_size: int = 16, context_length: int = 77, seed: int = 0,
              device: str | torch.device = "cpu") -> ClipBundle:
    """A tiny CLIP with RANDOM weights (ViT image tower, text transformer, the real offline BPE tokenizer).

    For tests and smoke runs only; its predictions mean nothing.  Seeded, and leaves the global RNG untouched.
    """
    vision = {"image_size": image_size, "patch_size": patch_size, "width": width, "layers": layers,
              "head_width": width // heads}
    text = {"context_length": context_length, "vocab_size": 49408, "width": width, "heads": heads, "layers": layers}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=True)
    preprocess = open_clip.image_transform(image_size, is_train=False, mean=OPENAI_MEAN, std=OPENAI_STD)
    tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    return ClipBundle(freeze(model, device), preprocess, tokenizer, "tiny-test", None, None, random_init=True,
                      info={"note": "random weights, for tests and smoke runs only"})


def mini_clip_config(*, image_size: int = 28, patch_size: int = 7, width: int = 64, layers: int = 4,
                     text_width: int = 64, text_layers: int = 2, embed_dim: int = 64,
                     context_length: int = 32) -> dict[str, Any]:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) of dl1's mini-CLIP: a small ViT on
    ``image_size`` px images cut into ``patch_size`` px patches and a small causal text transformer over open_clip's
    BPE vocabulary, both with attention heads of width 32 (one head when narrower).  The defaults (28 px, 7 px
    patches: 16 patch tokens + CLS) train in minutes on a CPU."""
    heads = max(1, width // 32)
    return {"embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": width, "layers": layers,
                           "head_width": width // heads},
            "text_cfg": {"context_length": context_length, "vocab_size": MINI_VOCAB, "width": text_width,
                         "heads": max(1, text_width // 32), "layers": text_layers},
            "quick_gelu": False}


MINI_VOCAB = 49408  # open_clip's BPE tokenizer (SimpleTokenizer): the mini-CLIP's text vocabulary


def build_mini_clip(model_cfg: dict[str, Any], mean: Sequence[float] = OPENAI_MEAN,
                    std: Sequence[float] = OPENAI_STD, seed: int | None = None) -> ClipBundle:
    """A mini-CLIP with fresh (trainable) weights from ``model_cfg`` (:func:`mini_clip_config`), built by open_clip's
    own ``CLIP`` class, with open_clip's eval preprocessing for its input size and its BPE tokenizer.  ``seed`` fixes
    the initial weights without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = open_clip.CLIP(embed_dim=model_cfg["embed_dim"], vision_cfg=dict(model_cfg["vision_cfg"]),
                               text_cfg=dict(model_cfg["text_cfg"]), quick_gelu=bool(model_cfg.get("quick_gelu")))
    size = int(model_cfg["vision_cfg"]["image_size"])
    preprocess = open_clip.image_transform(size, is_train=False, mean=tuple(mean), std=tuple(std))
    tokenizer = open_clip.SimpleTokenizer(context_length=int(model_cfg["text_cfg"]["context_length"]))
    return ClipBundle(model.float(), preprocess, tokenizer, "mini", None, None)


# -- text side ---------------------------------------------------------------------------------------------------------
def build_prompts(classnames: Sequence[str], templates: Sequence[Template]) -> list[str]:
    """``len(templates) * len(classnames)`` prompts, template-major; ``_`` in class names becomes a space."""
    names = [c.replace("_", " ") for c in classnames]
    return [t(c) if callable(t) else t.format(c) for t in templates for c in names]


@torch.no_grad()
def text_features(model: nn.Module, tokenizer: Callable, classnames: Sequence[str],
                  templates: Sequence[Template] = ("This is a photo of a {}",), device: str | torch.device = "cpu",
                  chunk: int = 512) -> torch.Tensor:
    """Unit-norm class embeddings ``(C, D)``: per template, normalised text features; averaged over the templates
    (a prompt ensemble) and renormalised.  Tokenises every prompt exactly once.

    Runs under ``no_grad`` (not ``inference_mode``) so the result can sit in a graph that trains prompts.
    """
    if not classnames or not templates:
        raise DL1Error("text_features needs at least one class name and one template")
    prompts = build_prompts(classnames, templates)
    tokens = tokenizer(prompts)  # (T*C, L)
    feats = []
    for start in range(0, len(prompts), chunk):
        f = model.encode_text(tokens[start:start + chunk].to(device))  # (n, D)
        feats.append(F.normalize(f.float(), dim=-1))
    per_prompt = torch.cat(feats).view(len(templates), len(classnames), -1)  # (T, C, D)
    return F.normalize(per_prompt.mean(dim=0), dim=-1)  # (C, D)


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor | float) -> torch.Tensor:
    """``exp(logit_scale) * cosine(image, text)``: ``(B, D), (C, D) -> (B, C)``; ``logit_scale`` is CLIP's learned
    log-temperature (``model.logit_scale``, exp = 100 for OpenAI's models).  Out of place, autograd-safe."""
    scale = logit_scale.exp() if isinstance(logit_scale, torch.Tensor) else torch.tensor(logit_scale).exp()
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    return scale.to(img.device, img.dtype) * img @ txt.t()


def encode_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``encode_image`` with float16 autocast on CUDA (float32 elsewhere); returns float32 ``(B, D)``."""
    on_cuda = images.device.type == "cuda"
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=on_cuda):
        return model.encode_image(images).float()


class ZeroshotCLIP(nn.Module):
    """Zero-shot classifier (the course's ``clipzs.ZeroshotCLIP``): text features computed once at construction,
    ``model_inference(images) -> logits (B, C)``."""

    def __init__(self, clip: ClipBundle, classnames: Sequence[str],
                 templates: Sequence[Template] = ("This is a photo of a {}",), device: str | torch.device = "cpu"):
        super().__init__()
        self.clip_model = clip.model
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.prompts = build_prompts(self.classnames, self.templates)
        features = self.precompute_text_features(clip.model, clip.tokenizer, self.classnames, self.templates, device)
        self.register_buffer("text_features", features, persistent=False)  # (C, D)
        self.logit_scale = clip.model.logit_scale.exp().detach()  # the temperature itself (= 100), as the course

    @staticmethod
    def precompute_text_features(clip_model: nn.Module, tokenizer: Callable, classnames: Sequence[str],
                                 templates: Sequence[Template], device: str | torch.device) -> torch.Tensor:
        """Normalised class text features ``(C, D)`` (a prompt ensemble when several templates are given)."""
        return text_features(clip_model, tokenizer, classnames, templates, device)

    def model_inference(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` preprocessed images -> logits ``(B, C)`` = 100 x cosine(image, class text)."""
        features = encode_images(self.clip_model, images)  # (B, D)
        return clip_logits(features, self.text_features, self.clip_model.logit_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model_inference(images)


# -- training and scoring a CLIP on class captions (dl1's mini-CLIP) ---------------------------------------------------
def caption_contrastive_loss(model: nn.Module, images: torch.Tensor, captions: torch.Tensor,
                             caption_index: torch.Tensor, loss_fn: Callable | None = None) -> torch.Tensor:
    """CLIP's symmetric contrastive loss (open_clip's ``ClipLoss``) of a batch of images and their captions.

    ``images`` ``(B, 3, S, S)`` preprocessed; ``captions`` ``(K, L)`` the token ids of every distinct caption;
    ``caption_index`` ``(B,)`` which caption belongs to each image.  Each distinct caption is encoded once per step
    (``K`` is small: templates x classes) and gathered per image, with gradients through the text tower."""
    text = F.normalize(model.encode_text(captions)[caption_index], dim=-1)  # (B, D)
    image = F.normalize(model.encode_image(images), dim=-1)                # (B, D)
    return (loss_fn or ClipLoss())(image, text, model.logit_scale.exp())


@torch.no_grad()
def zeroshot_top1(model: nn.Module, tokenizer: Callable, batches: Any, classnames: Sequence[str],
                  templates: Sequence[Template] = ("This is a photo of a {}",),
                  device: str | torch.device = "cpu") -> dict[str, float]:
    """Zero-shot top-1 (percent) and count over ``(images, labels)`` batches, with the text classifier of
    ``classnames`` x ``templates``; the model is put in eval mode and back in its previous mode afterwards."""
    was_training = model.training
    model.eval()
    text = text_features(model, tokenizer, classnames, templates, device)  # (C, D)
    correct, n = 0, 0
    for images, labels in batches:
        logits = clip_logits(encode_images(model, images.to(device)), text, model.logit_scale)
        correct += int((logits.argmax(dim=-1) == labels.to(device)).sum())
        n += len(labels)
    model.train(was_training)
    return {"top1": 100.0 * correct / max(n, 1), "n": n}


def contrastive_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW as open_clip trains CLIP: weight decay on the weight matrices only (not on gains, biases, embeddings or
    the temperature)."""
    def decays(name: str, p: torch.Tensor) -> bool:
        return p.ndim >= 2 and "embedding" not in name

    params = list(model.named_parameters())
    return torch.optim.AdamW([{"params": [p for n, p in params if decays(n, p)], "weight_decay": weight_decay},
                              {"params": [p for n, p in params if not decays(n, p)], "weight_decay": 0.0}], lr=lr)


MAX_LOGIT_SCALE = 4.6052  # ln(100): CLIP caps its learnt temperature at 100


@torch.no_grad()
def clamp_temperature(model: nn.Module) -> torch.Tensor:
    """Cap the learnt temperature at 100 after a step, as CLIP does; returns it (exp of ``logit_scale``)."""
    model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
    return model.logit_scale.detach().exp()
