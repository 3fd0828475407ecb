"""The training engine keeps freed memory for the next step on glibc (no page faults on every step's tensors)."""

import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

# a "step": allocate, touch and free 16 MiB in 2 MiB blocks, as a training step's tensors; the page faults of the third
PROBE = """
import resource, sys, ctypes
from dl1.train.heap import keep_freed_memory
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
result = keep_freed_memory() if sys.argv[1] == "keep" else "-"
def step():
    blocks = [libc.malloc(2 << 20) for _ in range(8)]
    for b in blocks:
        ctypes.memset(b, 1, 2 << 20)
    for b in blocks:
        libc.free(b)
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(result, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout.rsplit(maxsplit=1)
    return out[0], int(out[1])


@glibc
def test_freed_blocks_are_reused_without_page_faults():
    result, faults = _probe("keep")
    assert result == "set" and faults < 100  # 16 MiB of fresh pages would be 4,096 faults
    _, default_faults = _probe("default")  # glibc's own rule: the freed 16 MiB go back and are faulted in again
    assert default_faults > 2000


@glibc
@pytest.mark.parametrize("name,value", [("MALLOC_MMAP_THRESHOLD_", "131072"), ("GLIBC_TUNABLES", "")])
def test_glibcs_own_settings_win(name, value):
    result, faults = _probe("keep", **{name: value})
    assert result == f"left to {name}" and faults > 2000


def test_a_cpu_trainer_sets_it(tmp_path, monkeypatch):
    import torch

    from dl1.run.folder import Run
    from dl1.train import engine

    calls = []
    monkeypatch.setattr(engine, "keep_freed_memory", lambda: calls.append(1) or "set")
    model = torch.nn.Linear(2, 2)
    engine.Trainer(Run("heap", {}, root=tmp_path, quiet=True), {"m": model},
                   {"o": torch.optim.SGD(model.parameters(), lr=0.1)}, epochs=1)
    assert calls == [1]
