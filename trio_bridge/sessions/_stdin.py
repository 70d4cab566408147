"""A session's stdin pipe (created with ``"stdin": "pipe"``): a FIFO in the session's private
directory that its command reads as its stdin, fed by one client (``PUT .../stdin``).

The session's start script opens the FIFO for reading (the open waits for a writer); the daemon
opens its write end as soon as that reader is there (polling: a non-blocking open for writing
fails with ENXIO until then). Only then: a writer that came and went before the reader would
leave the reader waiting for the next one forever. The daemon's end is closed, which is the
command's EOF, by the first of:

- the feeder's body ended (``eof``), or the command closed its stdin (a write fails);
- the feeder's request was cancelled (its connection dropped, the daemon stops);
- no feeder claimed it within ``timeouts.stdin_attach`` seconds of the start;
- the session ended, or the manager stopped (its watcher's nursery, where :meth:`StdinPipe.serve`
  runs, was cancelled).

Backpressure is the pipe's own: a write waits while the pipe is full (the command does not
read), and the feeder reads the next chunk of its body only once the last one is written.

A daemon that stops closes its end with its process (the command's EOF); one that re-adopts the
session serves the FIFO again (:meth:`StdinPipe.adopt`), in case its command was still waiting
to open it: then it goes on (and a feeder may still come, as at the start).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterable
from pathlib import Path

import attrs
import trio

from .._fifo import make_fifo, open_fifo_writer
from .errors import StdinBusyError, StdinClosedError

__all__ = ["FIFO_NAME", "StdinFed", "StdinPipe", "make_session_fifo"]

log = logging.getLogger(__name__)

#: the FIFO's name in the session's directory
FIFO_NAME = "stdin"


def make_session_fifo(directory: Path) -> Path:
    """The session's stdin FIFO (0600) in its directory (private: the state directory is 0700)."""
    return make_fifo(directory / FIFO_NAME)


@attrs.frozen
class StdinFed:
    """How a feed ended: ``delivered`` bytes written into the pipe; ``eof``: the body's end was
    the command's end of input (False: the pipe was closed first)."""

    delivered: int
    eof: bool


class StdinPipe:
    """The daemon's end of one session's stdin FIFO (see the module docstring)."""

    def __init__(self, path: Path, *, adopted: bool = False) -> None:
        self._path = path
        #: re-adopted after a restart: its command may have opened (and closed) the FIFO already
        self._adopted = adopted
        self._stream: trio.lowlevel.FdStream | None = None
        self._opened = trio.Event()
        self._claimed = trio.Event()
        self._done = trio.Event()
        #: the feeder's copy (cancelled by :meth:`close`)
        self._feeding: trio.CancelScope | None = None

    @classmethod
    def adopt(cls, directory: Path) -> StdinPipe | None:
        """The pipe of a session re-adopted after a restart, if it has a FIFO."""
        path = directory / FIFO_NAME
        return cls(path, adopted=True) if path.is_fifo() else None

    @property
    def closed(self) -> bool:
        return self._done.is_set()

    def close(self) -> None:
        """Close the daemon's end (the command's EOF); stops a feeder. Idempotent."""
        if self._done.is_set():
            return
        self._done.set()
        if self._feeding is not None:
            self._feeding.cancel()
        if self._stream is not None:
            self._stream.close()  # (wakes a write waiting on it: ClosedResourceError)

    async def _open(self) -> None:
        """Open the write end once the command has opened its end (polling)."""
        self._stream = await open_fifo_writer(self._path)
        self._opened.set()

    async def serve(self, attach_within: float, session_id: str) -> None:
        """Open the write end once the command opened its end; close it if no feeder claims it
        within ``attach_within`` seconds; return once it is closed. Runs in the session's
        watcher nursery: cancelled (and then the pipe closed) when the session ends."""
        deadline = trio.current_time() + attach_within
        try:
            # A new session's command opens the FIFO as it starts (else it ends: this is
            # cancelled); an adopted one's may have done so before, and not again.
            with trio.move_on_at(deadline if self._adopted else math.inf):
                await self._open()
            if not self._opened.is_set():
                return
            with trio.move_on_at(deadline):
                await self._claimed.wait()
            if not self._claimed.is_set():
                log.info("session %s: no stdin feeder within %g s; its stdin ends", session_id, attach_within)
                return
            await self._done.wait()
        except OSError as exc:
            log.warning("session %s: its stdin pipe failed: %s", session_id, exc)
        finally:
            self.close()

    def claim(self) -> None:
        """Take the pipe for one feeder, who must then :meth:`feed` it (or :meth:`close` it).

        Raises:
            StdinBusyError: another feeder has it; StdinClosedError: it is closed already (a
            feeder came and went, or none came in time, or the session ended).
        """
        if self._done.is_set():
            raise StdinClosedError("the session's stdin is closed already (its command got EOF)")
        if self._claimed.is_set():
            raise StdinBusyError("the session's stdin has its feeder already")
        self._claimed.set()

    async def feed(self, chunks: AsyncIterable[bytes]) -> StdinFed:
        """Copy ``chunks`` into the claimed pipe, each once the last is written, then close it."""
        assert self._claimed.is_set(), "claim() first"
        delivered = 0
        try:
            with trio.CancelScope() as self._feeding:
                await self._opened.wait()
                assert self._stream is not None
                try:
                    async for chunk in chunks:
                        await self._stream.send_all(chunk)
                        delivered += len(chunk)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pass  # closed meanwhile (the session ended), or the command closed its stdin
                else:
                    return StdinFed(delivered, eof=True)
            return StdinFed(delivered, eof=False)
        finally:
            self.close()
