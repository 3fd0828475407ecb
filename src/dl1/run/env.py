"""What ``env.json`` records: versions, the device, threads, the git state of a dl1 checkout and the machine.

The facts of a joined process group (backend, world size) are given to :func:`env_info` by whoever joined it
(:func:`dl1.train.distributed.describe`); this module imports nothing of dl1's training side, and torch only when the
run has imported it already.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

# distribution name -> env.json key: the versions recorded (read from the installed metadata, nothing imported)
PACKAGES = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "open_clip_torch": "open_clip",
            "transformers": "transformers", "dl1": "dl1"}
_GIT: dict[str, Any] = {}  # the git state, once looked up ({"state": {...}})


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on (absent ones left out), read without importing them."""
    out = {}
    for dist, key in PACKAGES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state() -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout dl1 runs from (``git rev-parse HEAD``, 2 s at most); ``{}`` when
    dl1 is not run from its own checkout (an installed package) or git is missing.  Computed once per process."""
    if "state" in _GIT:
        return _GIT["state"]
    _GIT["state"] = {}
    package = Path(__file__).resolve().parent.parent  # src/dl1/run/env.py -> src/dl1
    root = package.parent.parent  # src/dl1 -> the repository
    if not (root / ".git").exists() or (root / "src" / "dl1").resolve() != package:
        return {}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=2)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return {}
    if head.returncode == 0 and head.stdout.strip():
        _GIT["state"] = {"commit": head.stdout.strip(),
                         "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}
    return _GIT["state"]


def env_info(device: Any = None, distributed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions (python, torch, torchvision, numpy, open_clip, transformers, dl1: the installed ones), the device
    (``cpu`` when none is given), threads, the git commit of a dl1 checkout and the machine: written to ``env.json``
    of every run.  ``distributed``: the joined process group's ``{"backend", "world_size", ...}`` (none: one
    process)."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        **package_versions(),
        "device": str(device) if device is not None else "cpu",
        "threads": {"cpu_count": os.cpu_count()},
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "time": now(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "TORCH_HOME", "DL1_DATA")
                if k in os.environ},
    }
    git = git_state()
    if git:
        info["git"] = git
    info["world_size"] = 1  # processes of this run (more under torchrun, see "distributed")
    if distributed:  # under torchrun: the backend, the number of ranks (this folder is rank 0's)
        info["distributed"] = dict(distributed)
        info["world_size"] = distributed.get("world_size", 1)
    if "torch" in sys.modules:  # only once the run has imported it (threads and CUDA are torch's)
        import torch

        info["threads"]["torch"] = torch.get_num_threads()
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
            info["cuda_version"] = torch.version.cuda
    return info
