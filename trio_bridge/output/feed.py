"""Live readers of a session's output log, from any byte offset.

Every reader pulls from the log files itself: it reads what the log holds from its offset,
then waits to be woken when the log has grown (:meth:`OutputFeed.advance`, called by the
session's watcher when inotify says the log's directory changed, so the bytes are in the file
when readers wake), and reads again. So there is no seam between "history" and "live" (both
come from the same file, by offset: no gap, no duplicate), a slow reader costs the session and
the other readers nothing (it just reads later), and memory per reader is one chunk. A
reader whose offset was dropped by retention gets a :class:`Resync` and continues from the
first kept byte.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncGenerator

import attrs
import trio

from .log import OffsetDroppedError, SegmentLog
from .watch import LogChanges

__all__ = ["Chunk", "OutputFeed", "Resync"]

_CHUNK = 1 << 16
#: While output keeps coming, readers are woken at most this often, so that each wake (and
#: each event a reader sends on) carries more bytes: during a flood, about 5 times fewer wakes
#: (measured: ~2000 -> ~400 for 16.9 MB). Output after a quieter moment wakes them at once.
_WAKE_INTERVAL = 0.005


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
    """Wakes the readers of one session's :class:`SegmentLog`; knows how far it has grown.

    :meth:`advance` is the one place where the log's growth is measured, counted and trimmed
    to its retention limit.
    """

    def __init__(self, log: SegmentLog) -> None:
        self.log = log
        self._changed = trio.Event()
        self._closed = False
        #: readers currently following (for metrics)
        self.readers = 0
        #: the end of the log as last measured by :meth:`advance` (0 before: a new feed
        #: counts what the log already holds as new)
        self.end = 0
        self._measured = False
        self._woken_at = -math.inf

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def advance(self, keep: int, changes: LogChanges | None = None) -> int:
        """Measure the log's end; if it grew, wake the readers, and when a segment was
        completed, delete the oldest ones beyond ``keep`` bytes. Returns the bytes it grew.

        Two ``stat`` calls at most (the last segment, and the next one once it is full):
        cheap enough for every change the writer makes. Less than ``_WAKE_INTERVAL`` after
        the last growth, it first waits for the rest of that interval (more bytes per wake),
        with ``changes`` (the log directory's watch, if given) muted meanwhile.
        """
        if self._measured:
            if trio.current_time() < (settled := self._woken_at + _WAKE_INTERVAL):
                with changes.muted() if changes is not None else contextlib.nullcontext():
                    await trio.sleep_until(settled)
            end = self.log.end_from(self.end // self.log.segment_size)
        else:
            end = await trio.to_thread.run_sync(self.log.end_offset)
            self._measured = True
        grown = end - self.end
        if grown <= 0:
            return 0
        self._wake()  # (readers read the files: they need nothing more from here)
        # A segment was begun (its last byte is in a newer segment than before): trim. Not when
        # the end only reached a segment's edge: the next segment's file does not exist yet,
        # and a trim then keeps the full one, which the bytes after it never trim again.
        if (end - 1) // self.log.segment_size > (self.end - 1) // self.log.segment_size:
            # Before the new end is recorded: cancelled here (the session ended), the next
            # advance counts these bytes (and trims) again; after it, nothing can cancel
            # until the growth is returned, so it is counted exactly once.
            await trio.to_thread.run_sync(self.log.drop_to, keep)
        self.end = end
        self._woken_at = trio.current_time()
        return grown

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
                await changed.wait()
        finally:
            self.readers -= 1
