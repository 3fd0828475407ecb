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


def in_ci() -> bool:
    """``CI=true`` (or 1): the environment promises everything the suite needs."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def need(resource: str, available: bool, setup: str = "make test") -> None:
    """The one gate for a test that needs something beside the code (a data set, Chromium, SLURM): nothing happens
    when it is ``available``; otherwise the test skips with the reason and the set-up command, and under ``CI=true``
    it FAILS with the same line (CI must not go green on a machine that lacks what the README's commands set up)."""
    if available:
        return
    message = f"{resource} not found on this machine (set it up with: {setup})"
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def fashion_mnist_here() -> bool:
    """Whether the real Fashion-MNIST is on this machine (``./data``, ``$DL1_DATA`` or Debian's package)."""
    from dl1.data import vision
    from dl1.errors import DL1Error

    try:
        vision.prepare("fashion-mnist", None, download=False)
    except DL1Error:
        return False
    return True


def chromium() -> str | None:
    """The headless browser the report test drives, if installed."""
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


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
