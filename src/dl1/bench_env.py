"""Where a benchmark ran: the CPU (model name, the ISA level torch uses, cores), NumPy's BLAS, torch and oneDNN.

Every script in ``benchmarks/`` and ``dl1 bench`` records :func:`machine` in its JSON (key ``machine``) and prints
:func:`describe` under its table, so that a speed figure always says which CPU it was measured on::

    from dl1.bench_env import describe, machine, write_json
    write_json(out, {"benchmark": "gpt", ...})   # adds "machine": machine()
    print(describe())                            # "CPU: AMD EPYC (torch ISA AVX512), 2 cores; NumPy BLAS: ..."

Nothing here is measured: it reads ``/proc/cpuinfo``, ``threadpoolctl`` and torch's build configuration (each one
"unknown" where it cannot be read, e.g. without the optional ``threadpoolctl``).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def cpu_ids() -> dict[str, int]:
    """``cpu family`` and ``model`` numbers of ``/proc/cpuinfo`` (they tell CPU generations apart where a virtual
    machine reports a bare model name, e.g. AMD family 25 model 17 = Zen 4); empty elsewhere."""
    ids: dict[str, int] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("cpu family", "model") and key not in ids and value.strip().isdigit():
                ids[key] = int(value)
            if not line.strip() and ids:
                break
    except OSError:
        pass
    return {"family": ids["cpu family"], "model": ids["model"]} if len(ids) == 2 else {}


def numpy_blas() -> dict[str, Any]:
    """NumPy's BLAS library as threadpoolctl sees it: name, version, the kernel architecture it chose, threads."""
    try:
        import numpy  # noqa: F401  (loads the BLAS library threadpoolctl then finds)
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"library": UNKNOWN, "note": "threadpoolctl is not installed (pip install threadpoolctl)"}
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    numpy_libs = [i for i in libs if "numpy" in i.get("filepath", "")] or libs
    if not numpy_libs:
        return {"library": UNKNOWN}
    i = numpy_libs[0]
    return {"library": i.get("internal_api", UNKNOWN), "version": i.get("version"),
            "architecture": i.get("architecture"), "threads": i.get("num_threads")}


def torch_info() -> dict[str, Any]:
    """torch's version, the CPU ISA level its kernels use, its threads, and its oneDNN (and MKL) versions."""
    try:
        import torch
    except ImportError:
        return {"version": None}
    config = torch.__config__.show()
    onednn = re.search(r"(?:MKL-DNN|oneDNN)\D*v?(\d+(?:\.\d+)+)", config)
    mkl = re.search(r"Math Kernel Library Version (\d+(?:\.\d+)+)", config)
    return {"version": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "onednn": onednn.group(1) if onednn and torch.backends.mkldnn.is_available() else None,
            "mkl": mkl.group(1) if mkl else None}


@functools.cache
def _static() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    import numpy

    return {"cpu_model": cpu_model(), "cpu_ids": cpu_ids(), "cpu_count": os.cpu_count(), "usable_cpus": usable,
            "platform": platform.platform(), "python": platform.python_version(), "numpy": numpy.__version__}


def machine() -> dict[str, Any]:
    """The record every benchmark JSON holds under ``machine``."""
    t = torch_info()
    return {**_static(), "cpu_capability": t.get("cpu_capability"), "numpy_blas": numpy_blas(), "torch": t}


def describe(m: dict[str, Any] | None = None) -> str:
    """One line naming the CPU and the libraries, for under a printed table."""
    m = m or machine()
    t, b = m["torch"], m["numpy_blas"]
    blas = " ".join(str(v) for v in (b.get("library"), b.get("version")) if v)
    if b.get("architecture"):
        blas += f" ({b['architecture']} kernels)"
    cores = f"{m['cpu_count']} cores" + (f", {m['usable_cpus']} usable" if m["usable_cpus"] != m["cpu_count"] else "")
    torch_text = (f"torch {t['version']} (oneDNN {t.get('onednn') or 'absent'}, MKL {t.get('mkl') or 'absent'})"
                  if t.get("version") else "torch absent")
    return (f"CPU: {_name(m)} (torch ISA {m.get('cpu_capability') or UNKNOWN}), {cores}; NumPy {m['numpy']} "
            f"BLAS: {blas}; {torch_text}")


def cpu_label(m: dict[str, Any] | None = None) -> str:
    """Short CPU name for a table row: model name, ISA level and core count."""
    m = m or machine()
    return f"{_name(m)}, {m.get('cpu_capability') or UNKNOWN}, {m['cpu_count']} cores"


def _name(m: dict[str, Any]) -> str:
    ids = m.get("cpu_ids") or {}
    return m["cpu_model"] + (f" family {ids['family']} model {ids['model']}" if ids else "")


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with ``machine`` added (unless present) as indented JSON; creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**payload, "machine": payload.get("machine") or machine()}, indent=2) + "\n")
    return path
