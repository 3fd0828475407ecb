"""MkDocs hook: dl1's docstrings use Sphinx roles (``:func:`name```); on the API pages they read as plain code.

mkdocstrings renders ``:func:`x``` as the text ``:func:`` followed by ``<code>x</code>``; this hook drops the role
name and keeps the code.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj|py:\w+):(?=<code>)")


def on_page_content(content: str, page: Any, config: Any, files: Any) -> str:
    return ROLE.sub("", content)
