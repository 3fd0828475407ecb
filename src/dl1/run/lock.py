"""``run.lock``: the one process that writes a run folder holds it (an advisory lock plus its pid in the file).

A second process is refused with one line; a lock left by a process that no longer exists is taken over with a note.
Torch-free.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

from dl1.errors import DL1Error, first_line
from dl1.run.files import check_no_links

try:  # an advisory lock the system releases when its process dies, however it dies
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the pid in the file decides
    fcntl = None

LOCK_NAME = "run.lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
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


def _open_lock_file(path: Path) -> int:
    """The lock file opened for reading and writing (created if missing), never through a symbolic link."""
    try:
        return os.open(check_no_links(path), os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
    except OSError as exc:
        if path.is_symlink():
            check_no_links(path)  # raced into a link: the same one line
        raise DL1Error(f"cannot open the lock file {path}: {first_line(exc)}") from None


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
            fd = _open_lock_file(self.path)
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: the lock is given up, and its empty file removed, at once
            self.path.unlink(missing_ok=True)  # we hold it: nobody else is using it
            os.close(fd)
            raise DL1Error(f"cannot write the lock file {self.path}: {first_line(exc)}") from None
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
        fd = os.open(key / LOCK_NAME, os.O_RDONLY | _NOFOLLOW)
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


