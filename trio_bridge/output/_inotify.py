"""A minimal binding of Linux's inotify (three libc calls through ctypes).

Only what :mod:`trio_bridge.output.watch` needs: one non-blocking instance, watches added
and removed by directory, and the watch descriptors of the events read. A binding of our
own rather than a dependency: it is thirty lines, and the ``inotify_simple`` package would
add an install for the same three calls (see docs/decisions.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from pathlib import Path

__all__ = ["IN_CREATE", "IN_DELETE_SELF", "IN_MODIFY", "IN_Q_OVERFLOW", "Inotify"]

IN_MODIFY = 0x00000002
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


class Inotify:
    """One inotify instance (a file descriptor, non-blocking, closed by :meth:`close`)."""

    def __init__(self) -> None:
        self.fd = _check(_libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))

    def add(self, directory: Path, mask: int) -> int:
        """Watch ``directory`` for ``mask``; its watch descriptor. Added again, the same
        directory keeps its descriptor and gets the new mask. Raises OSError (e.g. ENOENT,
        ENOSPC: out of watches)."""
        return _check(_libc.inotify_add_watch(self.fd, os.fsencode(directory), mask | IN_ONLYDIR))

    def remove(self, wd: int) -> None:
        """Stop a watch; one the kernel already ended (its directory was deleted) is fine."""
        if _libc.inotify_rm_watch(self.fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    def read(self) -> list[tuple[int, int]]:
        """The ``(wd, mask)`` of the events queued now (none when there are none)."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        events = []
        at = 0
        while at < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, at)
            events.append((wd, mask))
            at += _EVENT.size + length
        return events

    def close(self) -> None:
        os.close(self.fd)
