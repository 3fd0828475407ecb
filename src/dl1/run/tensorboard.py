"""TensorBoard event files beside ``metrics.jsonl`` (``--tensorboard``): the same numbers, images, text metrics (a
GPT's samples) and, at the end, the configuration with the final metrics (TensorBoard's HParams tab).

torch's ``SummaryWriter`` is imported only when a run asks for TensorBoard.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dl1.run.files import jsonable


def open_writer(folder: Path) -> Any:
    """A ``SummaryWriter`` writing into ``folder``."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder))


def add_record(writer: Any, record: dict[str, Any], metrics: dict[str, Any], extra: dict[str, Any]) -> None:
    """One ``metrics.jsonl`` record: its numbers as scalars ``split/key``, its text metrics in the text tab."""
    split = record["split"]
    for k, v in record.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("step", "time"):
            writer.add_scalar(f"{split}/{k}", v, record["step"])
        elif isinstance(v, str) and k in metrics:  # e.g. a GPT's generated sample: TensorBoard's text tab
            tag = f"{split}/{k}" + (f"/{extra['index']}" if "index" in extra else "")
            writer.add_text(tag, markdown_verbatim(v), record["step"])
    writer.flush()


def add_image(writer: Any, tag: str, image: Any, step: int) -> None:
    """A uint8 (or [0, 1] float) array, ``(H, W)`` grey or ``(H, W, 3)`` colour, in the images tab."""
    image = np.asarray(image)
    writer.add_image(tag, image, int(step), dataformats="HW" if image.ndim == 2 else "HWC")
    writer.flush()


def add_final(writer: Any, config: dict[str, Any], summary: dict[str, Any]) -> None:
    """The configuration with the summary's final numbers, for the HParams tab."""
    writer.add_hparams(hparams(config), final_metrics(summary), run_name=".")
    writer.flush()


def markdown_verbatim(text: str) -> str:
    """``text`` as a Markdown code block (TensorBoard renders text as Markdown: newlines and spaces kept)."""
    return "\n".join("    " + line for line in text.splitlines() or [""])


def hparams(config: dict[str, Any]) -> dict[str, Any]:
    """A run's configuration as TensorBoard hyper-parameters (numbers, strings and booleans; lists as text)."""
    out: dict[str, Any] = {}
    for k, v in jsonable(config).items():
        out[k] = v if isinstance(v, bool | int | float | str) else json.dumps(v)
    return out


def final_metrics(summary: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, float]:
    """The finite numbers of a summary (nested sections as ``section/key``), for TensorBoard's HParams tab."""
    out: dict[str, float] = {}
    for k, v in summary.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 3:
            out.update(final_metrics(v, f"{key}/", depth + 1))
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and k != "wall_time_s":
            out[f"final/{key}"] = float(v)
    return out
