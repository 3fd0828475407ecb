"""Text from a GPT: encode a prompt, sample a continuation (:meth:`dl1.models.gpt.GPT.generate`), decode it.

Any tokenizer with ``encode(str) -> list[int]`` and ``decode(ids) -> str`` will do (dl1's ``CharTokenizer``, a GPT-2
tokenizer behind that interface).
"""

from __future__ import annotations

from typing import Any

import torch

from dl1.errors import DL1Error


def generate_text(model: Any, tokenizer: Any, prompt: str, num_samples: int = 1, max_new_tokens: int = 200,
                  temperature: float = 1.0, do_sample: bool = True, top_k: int | None = None,
                  top_p: float | None = None, seed: int = 0) -> list[str]:
    """``num_samples`` decoded continuations of ``prompt`` (prompt included), drawn with a generator of their own
    seeded with ``seed`` (no global stream is touched); the model is left in eval mode."""
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt)
    if not ids:
        raise DL1Error("the prompt encodes to no tokens")
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)  # (n, P)
    g = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    out = model.generate(idx, max_new_tokens, temperature=temperature, do_sample=do_sample, top_k=top_k,
                         top_p=top_p, generator=g)  # (n, P + max_new_tokens)
    return [tokenizer.decode(row) for row in out.tolist()]
