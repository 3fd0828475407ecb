"""Preflight checks an experiment declares in its registry entry (``preflight=(...)``): each is ``check(cfg)`` and
names the flags it reads (``fields``), runs before the run folder is made, and fails with one line.

They import no torch (a missing dataset or weights file is reported in ~0.1 s); :class:`Precision` loads torch only
to ask the device about a precision other than fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dl1.data import catalog
from dl1.errors import DL1Error

NOT_A_FILE = ("", "imagenet", "random")  # weights values that name no file


@dataclass(frozen=True)
class WeightsFile:
    """``--FLAG FILE``: an explicit weights file must exist (names such as ``imagenet`` are not files)."""

    flag: str

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.flag,)

    def __call__(self, cfg: Any) -> None:
        value = getattr(cfg, self.flag)
        if isinstance(value, str) and value not in NOT_A_FILE and not Path(value).is_file():
            raise DL1Error(f"--{self.flag}: weights file not found: {value}")


@dataclass(frozen=True)
class VisionData:
    """The dataset of ``--dataset`` (one of :data:`dl1.data.catalog.DATASETS`; other values, such as ``synthetic``,
    are not checked) is in ``--data_dir`` or can be fetched; ``named`` checks that dataset whatever the flag says
    (a shifted Fashion-MNIST needs Fashion-MNIST), ``when`` limits it to these values of ``--dataset``.  Nothing
    is checked when the ``synthetic`` flag is set."""

    dataset: str | None = "dataset"
    data_dir: str = "data_dir"
    synthetic: str | None = None
    named: str | None = None
    when: tuple[str, ...] | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f for f in (self.dataset, self.data_dir, self.synthetic) if f)

    def __call__(self, cfg: Any) -> None:
        if self.synthetic and getattr(cfg, self.synthetic):
            return
        chosen = getattr(cfg, self.dataset) if self.dataset else None
        if self.when is not None and chosen not in self.when:
            return
        name = self.named or chosen
        if name in catalog.DATASETS:
            catalog.prepare(name, getattr(cfg, self.data_dir))


@dataclass(frozen=True)
class Precision:
    """``--precision`` other than fp32 must be one the chosen ``--device`` runs (fp16 needs CUDA)."""

    fields: tuple[str, ...] = ("precision", "device")

    def __call__(self, cfg: Any) -> None:
        precision, device = (getattr(cfg, f) for f in self.fields)
        if precision == "fp32":
            return
        from dl1.run.device import choose_device  # torch, only for a reduced precision
        from dl1.train.precision import check

        check(precision, choose_device(device))
