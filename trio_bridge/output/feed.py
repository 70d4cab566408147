"""Live readers of a session's output log, from any byte offset.

Every reader pulls from the log files itself: it reads what the log holds from its offset,
then waits to be woken when new output is announced (``notify``, fed by tmux's control-mode
``%output``), and reads again. So there is no seam between "history" and "live" (both come
from the same file, by offset: no gap, no duplicate), a slow reader costs the session and
the other readers nothing (it just reads later), and memory per reader is one chunk. A
reader whose offset was dropped by retention gets a :class:`Resync` and continues from the
first kept byte.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import attrs
import trio

from .log import OffsetDroppedError, SegmentLog

__all__ = ["Chunk", "OutputFeed", "Resync"]

#: While announced bytes are not yet in the file (the pipe writer lags the notification a
#: little), readers look again this often, and only then.
_LAG_RECHECK = 0.001
_CHUNK = 1 << 16


@attrs.frozen
class Chunk:
    """Output bytes and the log offset of the first of them."""

    offset: int
    data: bytes


@attrs.frozen
class Resync:
    """The reader asked for ``requested``, which was dropped; it continues at ``offset``."""

    requested: int
    offset: int


class OutputFeed:
    """Wakes the readers of one session's :class:`SegmentLog`."""

    def __init__(self, log: SegmentLog) -> None:
        self.log = log
        self._changed = trio.Event()
        self._announced_end = log.end_offset()
        self._closed = False
        #: readers currently following (for metrics)
        self.readers = 0

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def notify(self, nbytes: int) -> None:
        """``nbytes`` more bytes were produced (the writer may not have written them yet)."""
        self._announced_end += nbytes
        self._wake()

    def close(self) -> None:
        """The writer is done: readers finish at the end of the log."""
        self._closed = True
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    async def follow(self, start: int = 0) -> AsyncGenerator[Chunk | Resync, None]:
        """Chunks from ``start`` on, live, until the feed is closed and the log read to its end.

        An async generator: iterate it inside ``contextlib.aclosing``.
        """
        offset = start
        self.readers += 1
        try:
            while True:
                changed = self._changed
                closed = self._closed
                try:
                    data = self.log.read(offset, _CHUNK)
                except OffsetDroppedError as exc:
                    yield Resync(offset, exc.first_offset)
                    offset = exc.first_offset
                    continue
                if data:
                    yield Chunk(offset, data)
                    offset += len(data)
                    # A reader catching up reads without ever waiting: let the other
                    # tasks (other readers, the notifications) run between chunks.
                    await trio.lowlevel.checkpoint()
                    continue
                if closed:
                    return
                if offset < self._announced_end:
                    # Announced but not in the file yet: look again very soon.
                    with trio.move_on_after(_LAG_RECHECK):
                        await changed.wait()
                    continue
                await changed.wait()
        finally:
            self.readers -= 1
