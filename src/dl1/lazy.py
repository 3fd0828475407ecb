"""A function named by ``"package.module:function"`` and imported when first called: how light modules (an
experiment's spec, the export formats) name code that needs torch or matplotlib without importing it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ref:
    """``Ref("dl1.models.mlp:MLP")``: the object ``MLP`` of ``dl1.models.mlp``, imported by :meth:`resolve` or on
    the first call (``Ref(...)(*args)`` calls it)."""

    target: str

    def resolve(self) -> Any:
        module, _, name = self.target.partition(":")
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)
