"""The one place that finds, downloads and reads weight files: open_clip (``hub.clip``), torchvision
(``hub.torchvision``) and transformers (``hub.gpt2``, ``hub.gpt2_export``), with one online/offline policy; and dl1's
own GPT checkpoints (``hub.gpt_checkpoint``: ``models/`` does no file IO).

Offline policy: dl1 is offline when any of ``DL1_OFFLINE``, ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a
true value, or when the host of the file to download cannot be reached within ``timeout`` seconds.  Offline, a missing
weight fails at once with one line saying what to download and where to put it; nothing retries for a minute.
"""

from __future__ import annotations

import os
import socket
import threading

OFFLINE_VARS = ("DL1_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_requested() -> bool:
    """True when the environment says there is no network (see the module docstring)."""
    return any(os.environ.get(v, "0").strip().lower() not in ("0", "", "false", "no", "off") for v in OFFLINE_VARS)


def online(target: str, timeout: float = 1.0) -> bool:
    """Can we reach ``target`` (a URL or a host name)?  False at once when :func:`offline_requested`; otherwise
    bounded by ``timeout`` even when name resolution hangs."""
    if offline_requested():
        return False
    host = target.split("/")[2] if "://" in target else target
    port = 80 if target.startswith("http://") else 443
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)
