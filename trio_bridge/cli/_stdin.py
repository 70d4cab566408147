"""``run``'s stdin when it is not a terminal: a FIFO the command reads, fed from our stdin.

As ``docker run -i`` (without ``-t``) or ``ssh host cmd < file``: the command's stdin is a
pipe carrying our stdin byte for byte, and our stdin's end is its end (EOF); its stdout and
stderr stay the session's terminal (that is what the session records). The FIFO lives in a
private directory (0700) of this process; the command opens it through a one-line ``sh``
wrapper (``exec "$@" <FIFO``), so it needs a session on this computer (embedded, or a daemon
reached over its unix socket or loopback).
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

#: ``sh -c`` script: $0 is the FIFO, "$@" the command (never parsed by the shell)
_WRAPPER = 'exec "$@" <"$0"'
_POLL = 0.02


@contextmanager
def stdin_fifo() -> Iterator[Path]:
    """A fresh FIFO in a private directory, removed (with the directory) at the end."""
    directory = Path(tempfile.mkdtemp(prefix="trio-bridge-stdin-"))
    try:
        fifo = directory / "stdin"
        os.mkfifo(fifo, 0o600)
        yield fifo
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def wrap_command(cmd: list[str], fifo: Path) -> list[str]:
    """``cmd`` run with its stdin read from ``fifo``."""
    return ["/bin/sh", "-c", _WRAPPER, str(fifo), *cmd]


def title_of(cmd: list[str]) -> str:
    """What ``ls`` shows for a wrapped command: the command itself."""
    return shlex.join(cmd)[:200]


async def feed_stdin(fifo: Path, stdin_fd: int = 0) -> None:
    """Copy ``stdin_fd`` into ``fifo`` until its end, then close the FIFO (the command's EOF).

    Waits (polling) for the command to open its end first; returns early if the command
    closes its stdin (a broken pipe is its business, not an error). Cancel to stop.
    """
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        await trio.sleep(_POLL)
    stream = trio.lowlevel.FdStream(fd)
    try:
        while True:
            # a thread: stdin may be a regular file (no epoll) or a blocking pipe shared with others
            data = await trio.to_thread.run_sync(os.read, stdin_fd, 65536, abandon_on_cancel=True)
            if not data:
                return
            await stream.send_all(data)
    except (BrokenPipeError, trio.BrokenResourceError):
        return
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
