"""``run``'s stdin when it is not a terminal: a FIFO the command reads, fed from our stdin.

As ``docker run -i`` (without ``-t``) or ``ssh host cmd < file``: the command's stdin is a
pipe carrying our stdin byte for byte, and our stdin's end is its end (EOF); its stdout and
stderr stay the session's terminal (that is what the session records).

Embedded, the FIFO lives in a private directory (0700) of this process and the session's start
script opens it (``SessionSpec.stdin_path``). Through a daemon (on this computer or not) the
daemon makes the FIFO and this process streams our stdin to it over the API
(:func:`stdin_chunks`, ``PUT /v1/sessions/{id}/stdin``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from .._fifo import make_fifo, open_fifo_writer

#: bytes read from our stdin at once (a pipe's read returns what is there: no waiting); 64 KiB
#: halved the throughput (thread round trips, HTTP chunks): see docs/decisions.md
_CHUNK = 1 << 20


@contextmanager
def stdin_fifo() -> Iterator[Path]:
    """A fresh FIFO in a private directory, removed (with the directory) at the end."""
    directory = Path(tempfile.mkdtemp(prefix="trio-bridge-stdin-"))
    try:
        yield make_fifo(directory / "stdin")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def title_of(cmd: list[str]) -> str:
    """What ``ls`` shows for a run whose stdin is piped: the command, as a shell would quote it."""
    return shlex.join(cmd)[:200]


async def stdin_chunks(stdin_fd: int = 0) -> AsyncIterator[bytes]:
    """``stdin_fd`` read to its end, one chunk at a time, as it comes (a request body).

    Read in a thread: stdin may be a regular file (no epoll) or a blocking pipe shared with
    others. Nothing is read ahead: the next read starts when the caller asks for the next chunk.
    """
    while True:
        data = await trio.to_thread.run_sync(os.read, stdin_fd, _CHUNK, abandon_on_cancel=True)
        if not data:
            return
        yield data


async def feed_stdin(fifo: Path, stdin_fd: int = 0) -> None:
    """Copy ``stdin_fd`` into ``fifo`` until its end, then close the FIFO (the command's EOF).

    Waits (polling) for the command to open its end first; returns early if the command
    closes its stdin (a broken pipe is its business, not an error). Cancel to stop.
    """
    stream = await open_fifo_writer(fifo)
    try:
        async for data in stdin_chunks(stdin_fd):
            await stream.send_all(data)
    except (BrokenPipeError, trio.BrokenResourceError):
        return
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
