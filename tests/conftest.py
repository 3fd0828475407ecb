"""Test-wide settings: offline, headless, project-local caches, few threads."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TORCH_HOME", str(ROOT / ".torch_home"))
os.environ.setdefault("DL1_OFFLINE", "1")  # never try to download datasets in tests
os.environ["DL1_PROGRESS"] = "0"

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_threads():
    import numpy as np

    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(1)  # tiny ops: OpenMP threads only wait on each other
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture
def no_network(monkeypatch):
    """Fail any network connection attempt and record it: offline paths must not even try (no retry loops, no
    waiting on timeouts). Yields the list of attempted addresses."""
    import socket

    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a, **k: refuse(*a))
    yield attempts
