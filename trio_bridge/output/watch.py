"""Push notice that a session's log has grown: inotify on the log's directory.

The log's writer (``split``, fed by tmux's ``pipe-pane``) writes the bytes; the kernel then
queues an ``IN_MODIFY`` event. So a task woken by :meth:`LogChanges.wait` finds the bytes in
the file (no re-poll while the writer lags a notification, as with tmux's ``%output``, which
tmux sends before the pipe's reader has written anything), and nothing has to decode or
count what tmux prints.

One inotify instance serves every log of a manager (the kernel allows 128 instances per user
by default, so one per session would not scale). No task owns it: whichever waiter finds
nobody reading it reads it, wakes the watches its events name, and hands the reading over to
another waiter when its own watch has news (or it is cancelled).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from ._inotify import IN_CREATE, IN_DELETE_SELF, IN_MODIFY, IN_Q_OVERFLOW, Inotify

__all__ = ["LogChanges", "LogWatch"]

_EVENTS = IN_MODIFY | IN_CREATE  # a segment written, a segment made
#: a muted watch's mask: no write matches it (the watch stays; only its events stop)
_MUTED = IN_DELETE_SELF


class LogChanges:
    """One watched log directory: :meth:`wait` returns once it changed since the last call."""

    def __init__(self, owner: LogWatch, wd: int, directory: Path) -> None:
        self._owner = owner
        self.wd = wd
        self.directory = directory
        self._changed = True  # the first wait looks at once: bytes may predate the watch
        self._event: trio.Event | None = None

    def _set(self) -> None:
        self._changed = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        """Return once the directory changed (a segment was created or written) since the
        last return; the first call returns at once."""
        owner = self._owner
        try:
            while not self._changed:
                if owner._reader is not None:
                    self._event = trio.Event()
                    owner._waiting.add(self)
                    try:
                        await self._event.wait()
                    finally:
                        owner._waiting.discard(self)
                        self._event = None
                else:
                    await owner._read_until(self)
        finally:
            owner._hand_over()
        self._changed = False

    @contextmanager
    def muted(self) -> Iterator[None]:
        """No events of this directory during the block: for a caller that will not wait
        meanwhile and looks at the directory after it (during a flood, each of the writer's
        writes would otherwise wake the instance's reader for nothing)."""
        muted = self._owner._set_mask(self, _MUTED)
        try:
            yield
        finally:
            if muted:
                self._owner._set_mask(self, _EVENTS)


class LogWatch:
    """The inotify instance of many logs' directories (opened with the first watch, closed
    with the last)."""

    def __init__(self) -> None:
        self._inotify: Inotify | None = None
        self._by_wd: dict[int, set[LogChanges]] = {}
        self._reader: LogChanges | None = None  # the waiter reading the instance now
        self._waiting: set[LogChanges] = set()

    @contextmanager
    def watch(self, directory: Path) -> Iterator[LogChanges]:
        """Watch ``directory`` (which must exist) for the block's duration.

        Raises:
            OSError: it cannot be watched (missing; the user's inotify watches used up).
        """
        if self._inotify is None:
            self._inotify = Inotify()
        try:
            wd = self._inotify.add(directory, _EVENTS)
        except OSError:
            self._close_if_unused()
            raise
        changes = LogChanges(self, wd, directory)
        self._by_wd.setdefault(wd, set()).add(changes)
        try:
            yield changes
        finally:
            watchers = self._by_wd[wd]
            watchers.discard(changes)
            if not watchers:
                del self._by_wd[wd]
                self._inotify.remove(wd)
            self._close_if_unused()

    def _set_mask(self, changes: LogChanges, mask: int) -> bool:
        """Change the events of ``changes``' watch; False (nothing changed) when another watch
        shares it (the same directory watched twice) or the directory is gone."""
        if self._inotify is None or len(self._by_wd.get(changes.wd, ())) != 1:
            return False
        try:
            # the same directory: the same watch, its mask replaced
            return self._inotify.add(changes.directory, mask) == changes.wd
        except FileNotFoundError:
            return False

    def _close_if_unused(self) -> None:
        if self._inotify is not None and not self._by_wd:
            # Nobody waits on it: a reader is always a watch's waiter.
            self._inotify.close()
            self._inotify = None

    async def _read_until(self, mine: LogChanges) -> None:
        """Read events (waking their watches) until ``mine`` has one."""
        inotify = self._inotify
        assert inotify is not None
        self._reader = mine
        try:
            while not mine._changed:
                await trio.lowlevel.wait_readable(inotify.fd)
                for wd, mask in inotify.read():
                    if mask & IN_Q_OVERFLOW:
                        # The kernel's queue overflowed: any watch may have missed news.
                        for watchers in self._by_wd.values():
                            for changes in watchers:
                                changes._set()
                    for changes in self._by_wd.get(wd, ()):
                        changes._set()
        finally:
            self._reader = None

    def _hand_over(self) -> None:
        """Nobody reads while some wait: wake one of them to read."""
        if self._reader is None and self._waiting:
            waiter = next(iter(self._waiting))
            if waiter._event is not None:
                waiter._event.set()
