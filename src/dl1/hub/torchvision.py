"""torchvision weight files: ResNet-18's ImageNet weights (torch's hub cache, else a download) or a local file.

``--weights imagenet`` means torchvision's ``ResNet18_Weights.IMAGENET1K_V1``: the file
``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``, downloaded there (SHA-256 prefix checked) when it is missing
and the host can be reached.  Offline and without the file, :func:`check_weights` fails in about a second with one
line naming the file to download and the folder to put it in, so torchvision never starts a download that would hang.
``--weights PATH`` is a local state dict (optionally under a ``state_dict`` or ``model`` key).

Every weight file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a file that
would run code when unpickled is refused with one line (torchvision's own loader unpickles its cached file without
that restriction, so dl1 reads the file itself).  Its keys and shapes are checked against torchvision's ResNet-18.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dl1.errors import DL1Error, first_line
from dl1.hub import online

WEIGHTS_ENUM = "IMAGENET1K_V1"  # = ResNet18_Weights.DEFAULT


def weights_url() -> str:
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights[WEIGHTS_ENUM].url


def weights_file() -> Path:
    """Where torchvision keeps the ImageNet weights: ``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights_url())


def missing_weights_message() -> str:
    path = weights_file()
    return (f"ResNet-18 ImageNet weights not found and cannot be downloaded (offline): download {weights_url()} "
            f"and put it in {path.parent}/ as {path.name} (set TORCH_HOME to use another cache), "
            f"or pass --weights PATH")


def check_weights(weights: str | Path | None = "imagenet") -> None:
    """Fail fast (about a second) with one line if the weights are neither on disk nor downloadable."""
    if weights is None or str(weights) == "random":
        return
    if str(weights) == "imagenet":
        if not weights_file().is_file() and not online(weights_url()):
            raise DL1Error(missing_weights_message())
    elif not Path(weights).is_file():
        raise DL1Error(f"--weights: file not found: {weights}")


def resnet18_state_dict(weights: str | Path | None = "imagenet") -> dict[str, Any] | None:
    """ResNet-18 backbone weights: ``"imagenet"`` (cache, else download), ``"random"``/``None`` (returns None: the
    model keeps its random initialisation), or a state-dict file; checked against torchvision's ResNet-18."""
    if weights is None or str(weights) == "random":
        return None
    if str(weights) == "imagenet":
        check_weights(weights)
        path = weights_file()
        if not path.is_file():
            _download(path)
        what = "ResNet-18 ImageNet weights"
    else:
        path, what = Path(weights), "--weights"
        if not path.is_file():
            raise DL1Error(f"--weights: file not found: {path}")
    state = read_state_dict(path, what)
    _check_resnet18(state, path, what)
    return state


def read_state_dict(path: Path, what: str = "--weights") -> dict[str, Any]:
    """The tensors of ``path`` (``torch.load(weights_only=True)``; a ``state_dict``/``model`` entry is unwrapped)."""
    import torch

    from dl1.train.checkpoint import torch_load

    try:
        state = torch_load(path, map_location="cpu")  # weights_only=True
    except Exception as exc:  # any unreadable, truncated or refused file: one line
        raise DL1Error(f"{what}: cannot read {path}: {first_line(exc)}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DL1Error(f"{what}: {path} is not a torchvision ResNet-18 state dict (not a dict of tensors)")
    return state


def _check_resnet18(state: dict[str, Any], path: Path, what: str) -> None:
    """Same keys and shapes as torchvision's ``resnet18()`` (checked on the meta device: no memory, no init)."""
    import torch
    from torchvision.models import resnet18

    with torch.device("meta"):
        reference = {k: tuple(v.shape) for k, v in resnet18().state_dict().items()}
    missing = sorted(reference.keys() - state.keys())
    unexpected = sorted(state.keys() - reference.keys())
    wrong = [k for k in reference.keys() & state.keys() if tuple(state[k].shape) != reference[k]]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}" if unexpected
                  else f"{wrong[0]!r} has shape {tuple(state[wrong[0]].shape)}, expected {reference[wrong[0]]}")
        raise DL1Error(f"{what}: {path} is not a torchvision ResNet-18 state dict ({detail}; "
                       f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped keys)")


def _download(path: Path) -> None:
    """Download the ImageNet weights to ``path`` (torch writes a temporary file and checks the SHA-256 prefix in the
    file name before moving it into place)."""
    import torch

    from dl1.train.engine import show_progress

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(weights_url(), str(path), hash_prefix=path.stem.rsplit("-", 1)[-1],
                                       progress=show_progress())
    except Exception as exc:
        raise DL1Error(f"cannot download ResNet-18 ImageNet weights ({type(exc).__name__}: {first_line(exc)}); "
                       f"{missing_weights_message()}") from None
