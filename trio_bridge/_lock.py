"""One owner per state directory: an exclusive, advisory lock file.

``flock`` is released by the kernel when the owner dies (even by SIGKILL), so a crashed
daemon never leaves a stale lock behind, and a second daemon can tell "running" from "was
running" without guessing from PID files. The holder's PID is written into the file only
to make the refusal message useful; the lock itself is the flock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["AlreadyRunningError", "hold_lock"]


class AlreadyRunningError(RuntimeError):
    """Another process holds the lock; ``pid`` is its PID when it could be read."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"{holder} already holds {path}: is a trio-bridge daemon running?")


@contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive lock at ``path`` for the block, or raise :class:`AlreadyRunningError`.

    Never truncates, removes or otherwise touches a lock file that someone else holds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW: a link planted in the directory must not make us truncate its target.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunningError(path, _read_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # the lock goes with the fd; the file may stay
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isascii() and text.isdigit() else None
