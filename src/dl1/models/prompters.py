"""Visual prompts (Bahng et al., 2022): a learnt image ``v`` added to every input, ``x' = x + v``.

The prompt lives in CLIP's *normalised* pixel space (it is added after preprocessing) and is shared by all images:

* ``FixedPatchPrompter``: a ``p x p`` patch at the top-left corner (``p = 1`` is 3 parameters);
* ``RandomPatchPrompter``: the same patch at a location drawn anew at every forward pass from a seeded generator;
* ``PadPrompter``: a frame of width ``p`` around the image (``p = 30`` on 224 px is 69,840 parameters; the corners
  belong to the top and bottom strips).

Every prompter adds out of place (the input batch is never modified) and builds its prompt from its own parameters
with ``F.pad``/``torch.cat``, so it runs on whatever device and dtype the input has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INIT_METHODS = ("random", "zeros")


def init_prompt(shape: tuple[int, ...], method: str) -> nn.Parameter:
    """A prompt parameter: ``random`` ~ N(0, 1) (the course's ``randn``) or ``zeros`` (an identity prompt)."""
    if method == "random":
        return nn.Parameter(torch.randn(shape))
    if method == "zeros":
        return nn.Parameter(torch.zeros(shape))
    raise ValueError(f"prompt init method must be one of {INIT_METHODS}, got {method!r}")


class _Prompter(nn.Module):
    """Shared checks: a square ``image_size`` input with 3 channels."""

    def __init__(self, prompt_size: int, image_size: int):
        super().__init__()
        self.prompt_size, self.image_size = int(prompt_size), int(image_size)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"{type(self).__name__} expects images (B, 3, {self.image_size}, {self.image_size}), "
                             f"got {tuple(x.shape)}")

    def prompt(self) -> torch.Tensor:
        """The additive prompt ``(1, 3, H, W)`` (for the random patch: at a freshly drawn location)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 3, H, W)
        self._check_input(x)
        return x + self.prompt().to(x.dtype)  # out of place; broadcast over the batch

    def extra_repr(self) -> str:
        return f"prompt_size={self.prompt_size}, image_size={self.image_size}"


class FixedPatchPrompter(_Prompter):
    """A learnt ``(1, 3, p, p)`` patch added at the top-left corner ``[..., :p, :p]``."""

    def __init__(self, prompt_size: int = 1, image_size: int = 224, init_method: str = "random"):
        super().__init__(prompt_size, image_size)
        if not 1 <= self.prompt_size <= self.image_size:
            raise ValueError(f"patch size must be in [1, {self.image_size}], got {self.prompt_size}")
        self.patch = init_prompt((1, 3, self.prompt_size, self.prompt_size), init_method)

    def prompt(self) -> torch.Tensor:  # (1, 3, H, W), zero outside the patch
        rest = self.image_size - self.prompt_size
        return F.pad(self.patch, (0, rest, 0, rest))


class RandomPatchPrompter(_Prompter):
    """A learnt ``(1, 3, p, p)`` patch at a location ``(i, j) ~ U{0..H-p}^2`` drawn at every forward pass.

    The locations come from the module's own ``torch.Generator`` seeded with ``seed``; its state is part of the
    ``state_dict`` (extra state), so a resumed run draws the same locations as an uninterrupted one.
    """

    def __init__(self, prompt_size: int = 1, image_size: int = 224, init_method: str = "random", seed: int = 0):
        super().__init__(prompt_size, image_size)
        if not 1 <= self.prompt_size <= self.image_size:
            raise ValueError(f"patch size must be in [1, {self.image_size}], got {self.prompt_size}")
        self.patch = init_prompt((1, 3, self.prompt_size, self.prompt_size), init_method)
        self.generator = torch.Generator().manual_seed(seed)
        self.last_location: tuple[int, int] | None = None

    def sample_location(self) -> tuple[int, int]:
        """Draw the next ``(row, column)`` of the patch's top-left corner."""
        i, j = torch.randint(0, self.image_size - self.prompt_size + 1, (2,), generator=self.generator).tolist()
        self.last_location = (i, j)
        return i, j

    def prompt(self, location: tuple[int, int] | None = None) -> torch.Tensor:  # (1, 3, H, W)
        """The patch at ``location`` (for figures; the generator is untouched) or at a freshly drawn one."""
        i, j = self.sample_location() if location is None else location
        if not (0 <= i <= self.image_size - self.prompt_size and 0 <= j <= self.image_size - self.prompt_size):
            raise ValueError(f"patch location {(i, j)} is outside the {self.image_size} px image")
        rest = self.image_size - self.prompt_size
        return F.pad(self.patch, (j, rest - j, i, rest - i))

    def get_extra_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state.cpu())


class PadPrompter(_Prompter):
    """A learnt frame of width ``p``: ``pad_up``, ``pad_down`` (1,3,p,W); ``pad_left``, ``pad_right`` (1,3,H-2p,p)."""

    def __init__(self, prompt_size: int = 30, image_size: int = 224, init_method: str = "random"):
        super().__init__(prompt_size, image_size)
        p, size = self.prompt_size, self.image_size
        if not 1 <= p or 2 * p > size:
            raise ValueError(f"pad size must be in [1, {size // 2}] for {size} px images, got {p}")
        self.base_size = size - 2 * p
        self.pad_up = init_prompt((1, 3, p, size), init_method)
        self.pad_down = init_prompt((1, 3, p, size), init_method)
        self.pad_left = init_prompt((1, 3, self.base_size, p), init_method)
        self.pad_right = init_prompt((1, 3, self.base_size, p), init_method)

    def prompt(self) -> torch.Tensor:  # (1, 3, H, W), zero inside the frame
        base = self.pad_left.new_zeros(1, 3, self.base_size, self.base_size)
        middle = torch.cat([self.pad_left, base, self.pad_right], dim=3)  # (1, 3, H-2p, W)
        return torch.cat([self.pad_up, middle, self.pad_down], dim=2)     # (1, 3, H, W)


PROMPT_TYPES: dict[str, type[_Prompter]] = {
    "padding": PadPrompter,
    "fixed_patch": FixedPatchPrompter,
    "random_patch": RandomPatchPrompter,
}


def build_prompter(method: str, prompt_size: int, image_size: int, init_method: str = "random",
                   seed: int = 0) -> _Prompter:
    """The prompter named by the course's ``--method`` (``padding``, ``fixed_patch``, ``random_patch``)."""
    if method not in PROMPT_TYPES:
        raise ValueError(f"unknown visual prompt method {method!r}; choose from {', '.join(PROMPT_TYPES)}")
    if method == "random_patch":
        return RandomPatchPrompter(prompt_size, image_size, init_method, seed=seed)
    return PROMPT_TYPES[method](prompt_size, image_size, init_method)
