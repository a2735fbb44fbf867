"""One `make run` per data folder: two stacks on one folder would corrupt it.

The embedded servers fall back to free ports when theirs are taken, so nothing else would
stop a second run from starting a second Redis and PostgreSQL on the same files. An
``flock`` on ``<data>/.lock`` is held for the runner's lifetime; the kernel drops it when
the process dies, however it dies, so a crash never leaves a stale lock behind.

The lock belongs to the open file, not to a process: the runner hands the descriptor
(``fd``) to every child it starts, so the lock is held as long as any of them lives. A
runner that dies without stopping them (SIGKILL, a closed terminal before SIGHUP was
handled) therefore leaves the folder locked until its orphaned Redis, PostgreSQL, gateway
and flusher are gone too, and a second run cannot start servers on the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from core.settings import env_name


class DataDirInUse(RuntimeError):
    """Another process holds the folder's lock; the message names it and the way out."""


class DataLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data folder {self.path.parent} is in use by another `make run` (pid {holder});"
                f" stop it, or set {env_name('data_dir')} to another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @property
    def fd(self) -> int:
        """The locked descriptor, for children to inherit (``pass_fds``)."""
        assert self._fd is not None, "the lock is not held"
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # drops the flock, unless a child still holds the file
            self._fd = None
