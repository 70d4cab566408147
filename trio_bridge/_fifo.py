"""A command's stdin FIFO, shared by the daemon's stdin pipe (``sessions/_stdin.py``) and an
embedded ``run`` (``cli/_stdin.py``): made private, and its write end opened only once the
command has opened its read end."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import trio

__all__ = ["make_fifo", "open_fifo_writer"]

#: seconds between tries to open the write end, until the command has opened its end
_POLL = 0.01


def make_fifo(path: Path) -> Path:
    """A new FIFO at ``path``, 0600 (its directory keeps it private)."""
    os.mkfifo(path, 0o600)
    return path


async def open_fifo_writer(path: Path) -> trio.lowlevel.FdStream:
    """The write end of the FIFO at ``path``, once a reader has opened it (polled: a
    non-blocking open for writing fails with ENXIO until then). Opening it earlier would let a
    writer that comes and goes before the reader leave that reader waiting for the next one
    forever. Cancel to stop waiting.

    Raises:
        OSError: other than "no reader yet".
    """
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        else:
            return trio.lowlevel.FdStream(fd)
        await trio.sleep(_POLL)
