"""MkDocs hook: the course's equations as MathML, rendered at build time.

``pymdownx.arithmatex`` (generic mode) marks ``$...$`` and ``$$...$$``; this hook turns each into MathML with
``latex2mathml``, which every current browser renders natively. No JavaScript and no network: the site reads the
same offline. An equation latex2mathml cannot convert fails the build.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert

INLINE = re.compile(r'<span class="arithmatex">\\\((.+?)\\\)</span>', re.S)
BLOCK = re.compile(r'<div class="arithmatex">\\\[(.+?)\\\]</div>', re.S)


def to_mathml(latex: str, display: str) -> str:
    return convert(html.unescape(latex).strip(), display=display)


def on_page_content(content: str, page: Any, config: Any, files: Any) -> str:
    content = BLOCK.sub(lambda m: f'<div class="math">{to_mathml(m.group(1), "block")}</div>', content)
    return INLINE.sub(lambda m: to_mathml(m.group(1), "inline"), content)
