"""A session's output log: fixed-size segment files whose names give their first byte offset.

tmux's ``pipe-pane`` feeds the pane's raw bytes to GNU ``split``, which cuts them into
``seg.00000000``, ``seg.00000001``, ... of exactly ``segment_size`` bytes each (the last one
growing). Segment *n* starts at byte offset ``n * segment_size``, so a byte's offset is its
position in the session's whole output, offsets only grow, and dropping the oldest output is
deleting the oldest files. tmux owns the writer, so the log keeps growing while trio-bridge
is down or restarting: nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import attrs

__all__ = ["OffsetDroppedError", "SegmentLog", "split_command"]

_SEGMENT = re.compile(r"^seg\.(\d{8})$")
PREFIX = "seg."


class OffsetDroppedError(Exception):
    """The asked-for offset was dropped by retention; ``first_offset`` is the first one kept."""

    def __init__(self, offset: int, first_offset: int) -> None:
        self.offset = offset
        self.first_offset = first_offset
        super().__init__(f"offset {offset} was dropped; the log starts at {first_offset}")


def split_command(directory: Path, segment_size: int) -> str:
    """The ``pipe-pane`` shell command that writes the log into ``directory``."""
    target = shlex.quote(str(directory / PREFIX))
    return f"exec split -b {int(segment_size)} -a 8 -d - {target}"


@attrs.frozen
class SegmentLog:
    """Read access to one session's segment files (the writer is ``split``, owned by tmux).

    All methods are plain synchronous file operations on small directories; callers on the
    event loop run them in a worker thread when the disk may be slow.
    """

    directory: Path
    segment_size: int = 1 << 20

    def __attrs_post_init__(self) -> None:
        if self.segment_size < 1:
            raise ValueError("segment_size must be positive")

    def _segments(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(m[1]) for name in names if (m := _SEGMENT.match(name)))

    def _path(self, index: int) -> Path:
        return self.directory / f"{PREFIX}{index:08d}"

    def first_offset(self) -> int:
        """The offset of the oldest byte still kept (0 until something is dropped)."""
        segments = self._segments()
        return segments[0] * self.segment_size if segments else 0

    def end_offset(self) -> int:
        """The offset just past the last byte written so far."""
        segments = self._segments()
        if not segments:
            return 0
        last = segments[-1]
        try:
            size = self._path(last).stat().st_size
        except FileNotFoundError:
            size = 0
        return last * self.segment_size + size

    def end_from(self, index: int) -> int:
        """The end offset, knowing that segment ``index`` is the last or an earlier one (one
        ``stat`` per segment from there: the last one, usually; a listing of the directory if
        ``index`` is gone)."""
        while True:
            try:
                size = self._path(index).stat().st_size
            except FileNotFoundError:
                # Not created yet (the previous one is exactly full), or dropped: a trim ran
                # while the writer went more than the kept segments past ``index`` (measuring
                # from it stayed behind for good, and the feed's end with it). The directory
                # says which.
                return self.end_offset()
            if size < self.segment_size or not self._path(index + 1).exists():
                return index * self.segment_size + size
            index += 1

    def read(self, offset: int, max_bytes: int = 1 << 16) -> bytes:
        """Up to ``max_bytes`` bytes from ``offset`` (fewer at the end of what is written).

        Raises:
            OffsetDroppedError: ``offset`` is older than the first kept byte.
            ValueError: a negative offset.
        """
        if offset < 0:
            raise ValueError("offset must be >= 0")
        out = bytearray()
        while len(out) < max_bytes:
            index, within = divmod(offset + len(out), self.segment_size)
            try:
                with self._path(index).open("rb") as f:
                    f.seek(within)
                    chunk = f.read(min(max_bytes - len(out), self.segment_size - within))
            except FileNotFoundError:
                if not out and offset < (first := self.first_offset()):
                    raise OffsetDroppedError(offset, first) from None
                break  # not written yet
            if not chunk:
                break
            out += chunk
            if within + len(chunk) < self.segment_size:
                break  # the segment still grows: that is the end for now
        return bytes(out)

    def drop_to(self, max_bytes: int) -> int:
        """Delete the oldest segments until at most ``max_bytes`` are kept (never the newest).

        Returns the new first offset.
        """
        segments = self._segments()
        keep = max(1, max_bytes // self.segment_size)
        for index in segments[: max(0, len(segments) - keep)]:
            self._path(index).unlink(missing_ok=True)
        return self.first_offset()
