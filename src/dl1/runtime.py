"""Seeding, device choice, environment capture and the run folder (``Run``).

A run folder ``runs/<experiment>/<timestamp>/`` holds ``config.json`` (every flag's value: ``dl1 run NAME --config``
replays it), ``argv.txt`` (the command as typed, one line per start), ``env.json`` (versions, device, threads, the
git commit of a dl1 checkout), ``metrics.jsonl`` (one JSON line per logged step and split), ``summary.json``,
``figures/`` and ``checkpoints/``.  ``metrics.jsonl`` is the only record of the run's numbers: figures and reports
are computed from it.  With ``tensorboard=True`` the same numbers, images (:meth:`Run.log_image`), text metrics (a
GPT's samples) and, at :meth:`Run.finish`, the configuration with the final metrics (TensorBoard's HParams tab) also
go to ``tensorboard/``.

While a process writes a run folder it holds ``run.lock`` there (the file holds its pid): a second process is refused,
a lock left by a process that no longer exists is taken over with a note.  A run folder that already holds a run is
continued, never overwritten: its ``config.json``, ``env.json`` and ``argv.txt`` are rewritten (and ``metrics.jsonl``
cut back to the checkpoint's step) only after the checkpoint has been read and loaded (:meth:`Run.commit`).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from dl1.errors import DL1Error, UsageError, first_line


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if imported) torch, CPU and CUDA."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)


def choose_device(preference: str = "auto"):
    """The torch device to use: ``auto`` picks CUDA, then MPS, then CPU (recorded for ``env.json``)."""
    device = _pick_device(preference)
    _PROCESS["device"], _PROCESS["picks"] = str(device), _PROCESS["picks"] + 1
    return device


def _pick_device(preference: str):
    import torch

    if preference != "auto":
        if preference.startswith("cuda") and not torch.cuda.is_available():
            raise DL1Error(f"device {preference!r} requested but CUDA is not available on this machine")
        if preference == "cuda" and world_size() > 1:  # under torchrun: this rank's own GPU
            return torch.device("cuda", local_rank())
        try:
            return torch.device(preference)
        except RuntimeError as exc:  # e.g. "tpu7": torch names the device types it knows
            raise UsageError(f"--device: {first_line(exc)}") from None
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank()) if world_size() > 1 else torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _torchrun_env(name: str, default: int) -> int:
    """One of the integers torchrun sets for every process (``default`` without torchrun, or when unreadable)."""
    try:
        return int(os.environ.get(name, "") or default)
    except ValueError:
        return default


def world_size() -> int:
    """The number of processes of this run (torchrun's ``WORLD_SIZE``; 1 without torchrun)."""
    return max(1, _torchrun_env("WORLD_SIZE", 1))


def rank() -> int:
    """This process's rank (torchrun's ``RANK``; 0 without torchrun)."""
    return _torchrun_env("RANK", 0)


def local_rank() -> int:
    """This process's index on its node (torchrun's ``LOCAL_RANK``; 0 without torchrun)."""
    return _torchrun_env("LOCAL_RANK", 0)


def local_world_size() -> int:
    """The processes on this node (torchrun's ``LOCAL_WORLD_SIZE``; the world size when unset)."""
    return max(1, _torchrun_env("LOCAL_WORLD_SIZE", world_size()))


def available_memory(device: Any) -> int | None:
    """Bytes free for new tensors on ``device``: CUDA's free memory, the system's available memory on CPU (Linux
    MemAvailable, else free pages); None where unknown (then nothing is checked)."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    if kind != "cpu":
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# distribution name -> env.json key: the versions recorded (read from the installed metadata, nothing imported)
PACKAGES = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "open_clip_torch": "open_clip",
            "transformers": "transformers", "dl1": "dl1"}
# the device choose_device picked last and how often it picked one; the git state, once looked up
_PROCESS: dict[str, Any] = {"device": None, "picks": 0}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on (absent ones left out), read without importing them."""
    from importlib import metadata

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
    if "git" in _PROCESS:
        return _PROCESS["git"]
    _PROCESS["git"] = {}
    package = Path(__file__).resolve().parent
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
        _PROCESS["git"] = {"commit": head.stdout.strip(),
                           "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}
    return _PROCESS["git"]


def env_info(device: str | None = None) -> dict[str, Any]:
    """Versions (python, torch, torchvision, numpy, open_clip, transformers, dl1: the installed ones), the device,
    threads, the git commit of a dl1 checkout and the machine: written to ``env.json`` of every run."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        **package_versions(),
        "device": device or _PROCESS["device"] or "cpu",
        "threads": {"cpu_count": os.cpu_count()},
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "time": _now(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "TORCH_HOME", "DL1_DATA")
                if k in os.environ},
    }
    git = git_state()
    if git:
        info["git"] = git
    info["world_size"] = 1  # processes of this run (more under torchrun, see "distributed")
    if "torch" in sys.modules:  # only once the run has imported it (threads and CUDA are torch's)
        import torch

        info["threads"]["torch"] = torch.get_num_threads()
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
            info["cuda_version"] = torch.version.cuda
        if "torch.distributed" in sys.modules:
            from dl1.train.distributed import describe

            group = describe()
            if group:  # under torchrun: the backend, the number of ranks (this folder is rank 0's)
                info["distributed"] = group
                info["world_size"] = group["world_size"]
    return info


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and hasattr(value, "numel") and value.numel() == 1:  # torch scalar tensor
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """``write(file)`` into a temporary file beside ``path``, flushed to disk and renamed to ``path`` only when it
    returns: a failure or an interruption leaves neither a partial ``path`` nor the temporary file (the previous file,
    if any, stays as it was).  Exceptions propagate unchanged; the temporary name is unique per writer."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:  # the usual permissions (a mkstemp file would be private to its owner)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (see :func:`write_atomic`); a failed write is one-line :class:`DL1Error`."""
    try:
        return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))
    except OSError as exc:
        raise DL1Error(f"cannot write {path} (the previous file is kept): {first_line(exc)}") from None


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON text dl1 writes (NumPy and torch scalars as numbers, inf/nan as strings)."""
    return json.dumps(_jsonable(obj), indent=2) + "\n"


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename); a failed write leaves no temp file and the old file as it was."""
    write_text_atomic(path, json_text(obj))


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path`` (UTF-8).  A missing file raises ``FileNotFoundError``; a cut, binary or unreadable
    one raises one-line :class:`DL1Error` naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DL1Error(f"{path} is not a readable JSON file ({first_line(exc, 120)})") from None


def read_jsonl_counted(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a ``metrics.jsonl`` file and the number of lines that are not one (binary, cut or foreign).

    A record is a JSON object with an integer ``step`` and a string ``split``."""
    records: list[dict[str, Any]] = []
    bad = 0
    path = Path(path)
    if not path.is_file():
        return records, bad
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            bad += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("split"), str) \
                and isinstance(record.get("step"), int) and not isinstance(record.get("step"), bool):
            records.append(record)
        else:
            bad += 1
    return records, bad


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (a truncated last line, or any line that is not a record, is
    ignored)."""
    return read_jsonl_counted(path)[0]


def checkpoint_file(source: str | Path, prefer: str = "best") -> Path:
    """The checkpoint a path names: a file as it is; a run folder's ``checkpoints/best.pt`` then ``last.pt``
    (``prefer="last"``, for resuming: ``last.pt`` then ``best.pt``).  Raises :class:`DL1Error` when there is none."""
    path = Path(source)
    if path.is_file():
        return path
    if not path.exists():
        raise DL1Error(f"checkpoint not found: {path}")
    order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
    for folder in (path / "checkpoints", path):
        for name in order:
            if (folder / name).is_file():
                return folder / name
    raise DL1Error(f"no checkpoint in {path} (looked for checkpoints/{order[0]} and checkpoints/{order[1]})")


RUN_FILES = ("config.json", "metrics.jsonl", "summary.json")
LOCK_NAME = "run.lock"


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` already holds a run (its config, metrics, summary or a checkpoint)."""
    folder = Path(folder)
    if any((folder / name).exists() for name in RUN_FILES):
        return True
    checkpoints = folder / "checkpoints"
    return checkpoints.is_dir() and any(checkpoints.iterdir())


def check_output_folder(path: str | Path, flag: str) -> None:
    """Refuse, before anything is created, a folder that cannot be made or written: a file in its place or above it
    (:class:`UsageError`) or a nearest existing folder that is not writable (:class:`DL1Error`)."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:  # exists() is also False below a file
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DL1Error(f"{flag} {path}: {probe} is not writable")


try:  # an advisory lock the system releases when its process dies, however it dies
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the pid in the file decides
    fcntl = None

_LOCKS: dict[Path, list[int]] = {}  # resolved run folder -> [file descriptor, Run objects on it, owner pid]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except OSError:
        return False
    return True


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _try_lock(fd: int) -> bool:
    """Take the lock on ``fd`` without waiting: False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:  # a file system without locks: fall back to the pid in the file
            pass
    pid = _read_pid(fd)
    return pid is None or pid == os.getpid() or not _pid_alive(pid)


class RunLock:
    """``run.lock`` in a run folder, holding the pid of the one process that writes the folder.

    A second process is refused with one line; a lock whose process has ended is taken over with a note.  Several
    :class:`Run` objects of one process may share a folder (the lock counts them)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.key = self.folder.resolve()
        self.held = False

    def acquire(self) -> None:
        if self.held:
            return
        if self.key in _LOCKS:
            _LOCKS[self.key][1] += 1
            self.held = True
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _try_lock(fd):
                    owner = _read_pid(fd)
                    raise DL1Error(f"run folder {self.folder} is in use by process {owner or '?'} (lock file "
                                   f"{self.path}); wait for it to end or choose another folder")
                if os.path.exists(self.path) and os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # released and removed while we waited: lock the new file
        stale = _read_pid(fd)
        if stale is not None:
            print(f"note: taking over the lock of run folder {self.folder} from process {stale}, which no longer "
                  f"runs", file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _LOCKS[self.key] = [fd, 1, os.getpid()]
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        entry = _LOCKS.get(self.key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            _unlock(self.key)


def lock_holder(folder: str | Path) -> int | None:
    """The pid of the live process that holds ``folder``'s lock (-1 if unknown), or None when nobody does."""
    key = Path(folder).resolve()
    if key in _LOCKS:
        return os.getpid()
    try:
        fd = os.open(key / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        return None if _try_lock(fd) else (_read_pid(fd) or -1)
    finally:
        os.close(fd)  # also drops the probe's own lock


def _unlock(key: Path) -> None:
    fd, _, pid = _LOCKS.pop(key)
    if pid == os.getpid():  # not a forked child's copy
        try:
            (key / LOCK_NAME).unlink(missing_ok=True)
        except OSError:
            pass
    os.close(fd)  # closing the file releases the system lock


@atexit.register
def _release_all_locks() -> None:
    for key in list(_LOCKS):
        _unlock(key)


def _format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Run:
    """One run folder; every experiment logs through ``log`` and ends with ``finish``.

    ``enabled=False`` (non-zero distributed ranks) keeps everything in memory and writes nothing.  A folder that
    already holds a run (``resumed``) is left as it is until :meth:`commit`, which the Trainer calls once the
    checkpoint has been loaded (and which ``log``, ``save_json`` and ``finish`` call first).  ``close()`` releases
    the folder's lock (also done at exit).
    """

    def __init__(self, experiment: str, config: dict[str, Any] | None = None, root: str | Path = "runs",
                 argv: list[str] | None = None, directory: str | Path | None = None, enabled: bool = True,
                 quiet: bool = False, tensorboard: bool = False):
        self.experiment = experiment
        self.enabled = enabled
        self.quiet = quiet
        if directory is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            directory = Path(root) / experiment / stamp
            n = 1
            while directory.exists():
                n += 1
                directory = Path(root) / experiment / f"{stamp}-{n}"
        self.dir = Path(directory)
        self.figures = self.dir / "figures"
        self.checkpoints = self.dir / "checkpoints"
        self.resumed = holds_run(self.dir)
        self._config, self._argv, self._tensorboard = config, argv, tensorboard
        self._records: list[dict[str, Any]] = []
        self._scratch: Path | None = None  # synthetic_dir() of a rank that writes no run folder
        self._made: list[Path] = []        # what this Run created, newest last (removed by discard())
        self._made_root: Path | None = None  # the outermost folder it created
        self._committed = False
        self._lock = RunLock(self.dir)
        self._tb = None
        self._t0 = time.time()
        self._picks = _PROCESS["picks"]  # a device chosen after this is the run's (env.json)
        self._env: dict[str, Any] = {}
        if enabled:
            self._make_folder()
            try:
                self._lock.acquire()
            except BaseException:
                self.discard()
                raise
            self._records = read_jsonl(self.dir / "metrics.jsonl")
            if not self.resumed:
                self.commit()

    def _make_folder(self) -> None:
        missing = self.dir
        while not missing.parent.exists() and missing.parent != missing.parent.parent:
            missing = missing.parent
        try:
            if not self.dir.exists():
                self._made_root = missing
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DL1Error(f"cannot create run folder {self.dir}: {first_line(exc)}") from None

    def _new(self, path: Path) -> Path:
        if not path.exists():
            self._made.append(path)
        return path

    def commit(self) -> None:
        """Write ``config.json``, ``argv.txt`` and ``env.json`` (a continued run: once its checkpoint is loaded)."""
        if self._committed or not self.enabled:
            return
        self._committed = True
        for folder in (self.figures, self.checkpoints):
            self._new(folder).mkdir(parents=True, exist_ok=True)
        if self._config is not None:
            write_json(self._new(self.dir / "config.json"), {"experiment": self.experiment, **self._config})
        argv = self._argv if self._argv is not None else sys.argv
        _append(self._new(self.dir / "argv.txt"), shlex.join(argv) + "\n")
        self._env = env_info(device=self._device())
        write_json(self._new(self.dir / "env.json"), self._env)
        if self._tensorboard:  # optional TensorBoard event files beside metrics.jsonl
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self._new(self.dir / "tensorboard")))

    def _device(self, summary: dict[str, Any] | None = None) -> str:
        """The run's device: what its summary says, else the one chosen since the run began, else the CPU."""
        if summary and isinstance(summary.get("device"), str):
            return summary["device"]
        return _PROCESS["device"] if _PROCESS["picks"] > self._picks else "cpu"

    def recorded(self) -> bool:
        """Whether the folder holds anything of this run's work (a metric line, a checkpoint, a figure, a summary)."""
        files = (self.dir / "metrics.jsonl", self.dir / "summary.json")
        return any(p.exists() for p in files) or any(d.is_dir() and any(d.iterdir())
                                                     for d in (self.checkpoints, self.figures))

    def discard(self) -> bool:
        """Remove what this Run wrote if it recorded nothing (it failed before its first log or checkpoint): the
        folder itself when it made it.  A continued or a non-writing run is never touched.  True if removed."""
        if not self.enabled or self.resumed or self.recorded():
            return False
        self.close()
        if self._made_root is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            folder = self.dir.parent
            while self.dir != self._made_root and folder != self._made_root.parent:  # empty parents it made
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent
            return True
        for path in reversed(self._made):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return True

    def close(self) -> None:
        """Release the run folder's lock and flush TensorBoard; the Run still answers ``metrics()``."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self._lock.release()

    # -- logging ---------------------------------------------------------------------------------------------------
    def log(self, step: int, split: str, metrics: dict[str, Any], **extra: Any) -> None:
        """Append one line ``{"step", "split", **extra, **metrics}`` to metrics.jsonl and print it."""
        record = {"step": int(step), "split": split, **_jsonable(extra), **_jsonable(metrics),
                  "time": round(time.time() - self._t0, 3)}
        self._records.append(record)
        if self.enabled:
            self.commit()
            _append(self.dir / "metrics.jsonl", json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("step", "time"):
                    self._tb.add_scalar(f"{split}/{k}", v, record["step"])
                elif isinstance(v, str) and k in metrics:  # e.g. a GPT's generated sample: TensorBoard's text tab
                    tag = f"{split}/{k}" + (f"/{extra['index']}" if "index" in extra else "")
                    self._tb.add_text(tag, _markdown_verbatim(v), record["step"])
            self._tb.flush()
        if not self.quiet:
            shown = " ".join(f"{k}={_format_value(v)}" for k, v in record.items() if k not in ("split", "time"))
            print(f"[{self.experiment}] {split:>5} {shown}", flush=True)

    def log_image(self, tag: str, image: Any, step: int) -> None:
        """Show an image in TensorBoard's images tab (with ``--tensorboard``; otherwise nothing happens): a uint8 (or
        [0, 1] float) array, ``(H, W)`` grey or ``(H, W, 3)`` colour.  The run folder keeps its own record of it."""
        if self._tb is None:
            return
        image = np.asarray(image)
        self._tb.add_image(tag, image, int(step), dataformats="HW" if image.ndim == 2 else "HWC")
        self._tb.flush()

    def metrics(self, split: str | None = None) -> list[dict[str, Any]]:
        """Records logged so far (optionally of one split)."""
        return [r for r in self._records if split is None or r["split"] == split]

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (used when resuming from a checkpoint taken at ``step``); commits a
        continued run first."""
        self._records = [r for r in self._records if r["step"] <= step]
        if self.enabled:
            self.commit()
            path = self.dir / "metrics.jsonl"
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in self._records))

    # -- files -----------------------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.dir / name

    def synthetic_dir(self) -> Path:
        """Where a smoke run writes its tiny fake data files: ``synthetic_data/`` in the run folder; on a torchrun
        rank other than 0 (which writes nothing in the run folder) a temporary folder of its own, removed when the
        process ends (the files are seeded: every rank writes the same ones)."""
        if self.enabled:
            return self.path("synthetic_data")
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="dl1-synthetic-"))
            atexit.register(shutil.rmtree, self._scratch, ignore_errors=True)
        return self._scratch

    def figure_path(self, name: str) -> Path:
        return self.figures / name

    def save_json(self, name: str, obj: Any) -> Path:
        path = self.dir / name
        if self.enabled:
            self.commit()
            write_json(path, obj)
        return path

    def finish(self, **sections: Any) -> dict[str, Any]:
        """Write ``summary.json`` (the run's final numbers) and return it."""
        summary = {"experiment": self.experiment, "run_dir": str(self.dir),
                   "wall_time_s": round(time.time() - self._t0, 2), **_jsonable(sections)}
        if self.enabled:
            self.commit()
            write_json(self.dir / "summary.json", summary)
            # the device and threads are known now (torch is imported inside the experiment)
            write_json(self.dir / "env.json", {**env_info(device=self._device(summary)),
                                               "time": self._env.get("time"), "finished": _now()})
        if self._tb is not None:
            self._tb.add_hparams(_hparams(self._config or {}), _final_metrics(summary), run_name=".")
            self._tb.flush()
        if not self.quiet:
            print(f"[{self.experiment}] done: {self.dir}/summary.json", flush=True)
        return summary


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def _markdown_verbatim(text: str) -> str:
    """``text`` as a Markdown code block (TensorBoard renders text as Markdown: newlines and spaces kept)."""
    return "\n".join("    " + line for line in text.splitlines() or [""])


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    """A run's configuration as TensorBoard hyper-parameters (numbers, strings and booleans; lists as text)."""
    out: dict[str, Any] = {}
    for k, v in _jsonable(config).items():
        out[k] = v if isinstance(v, bool | int | float | str) else json.dumps(v)
    return out


def _final_metrics(summary: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, float]:
    """The finite numbers of a summary (nested sections as ``section/key``), for TensorBoard's HParams tab."""
    out: dict[str, float] = {}
    for k, v in summary.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 3:
            out.update(_final_metrics(v, f"{key}/", depth + 1))
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and k != "wall_time_s":
            out[f"final/{key}"] = float(v)
    return out


def _append(path: Path, text: str) -> None:
    try:
        with open(path, "a") as fh:
            fh.write(text)
    except OSError as exc:
        raise DL1Error(f"cannot write {path}: {first_line(exc)}") from None
