"""What the manager holds in memory for one session (:class:`LiveSession`), and the small
waiting helpers its watcher and the agent tracking share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from ..agents import AgentTracker
from ..output import OutputFeed
from ._stdin import StdinPipe

__all__ = ["LiveSession", "Pulse", "first", "quiet", "set_after"]


class Pulse:
    """Wakes every waiter each time it fires (output seen, a hook arrived, ...)."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self.count = 0

    def fire(self) -> None:
        self.count += 1
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


@attrs.define(eq=False)
class LiveSession:
    """Everything the manager holds in memory for one session (its record, on disk, is the
    store's).

    Lifetime: made (by :meth:`SessionManager.live_session`, the one place) the first time the
    process needs it: the session is created or re-adopted, its feed is read, its end waited
    on, an agent hook arrives; removed (by :meth:`SessionManager._drop`, the one place) when
    the session is forgotten (retention, ``rm``) or failed to start. So it outlives the
    session's watcher: an ended session's feed stays readable, its agent's last state
    answerable, and a wait for its end may begin before any watcher exists (a restart). The
    fields whose lifetime is shorter say so.
    """

    id: str
    #: the feed its readers follow: a live one while watched (a new one per watcher, see
    #: ``SessionManager._watch_feed``), closed once the log is complete; for a session never
    #: watched by this process, a closed one over its log (made by ``SessionManager.feed``)
    feed: OutputFeed | None = None
    #: a watcher task follows it (from the watcher's start to its end)
    watched: bool = False
    #: the pane the hub's client follows: set while followed (within the watcher), else None
    pane_id: str | None = None
    #: a kill was asked for: its end is recorded as ``killed`` (cleared once recorded)
    killing: bool = False
    #: set when its end is recorded and published; replaced then, so that a later wait (its
    #: end recorded, but not in the store: a full disk) waits for the next record of an end
    ended: trio.Event = attrs.Factory(trio.Event)
    #: fires each time its log grows (while watched)
    output: Pulse = attrs.Factory(Pulse)
    #: agent sessions (and any that sent a hook): its agent's tracker
    agent: AgentTracker | None = None
    #: fires when a hook arrived / its agent's state changed
    hook_pulse: Pulse = attrs.Factory(Pulse)
    agent_pulse: Pulse = attrs.Factory(Pulse)
    #: one prompt submission at a time (pastes would interleave)
    prompt_lock: trio.Lock = attrs.Factory(trio.Lock)
    #: its stdin pipe, for a session started with one by this process (closed, not removed,
    #: once its command got EOF; closed when the record is dropped)
    stdin: StdinPipe | None = None

    def end_recorded(self) -> None:
        """Its end is recorded: wake every wait for it."""
        self.ended.set()
        self.ended = trio.Event()


async def set_after(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def first(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:
            nursery.start_soon(set_after, wait, nursery.cancel_scope)


async def quiet(pulse: Pulse, seconds: float) -> None:
    """Return once ``pulse`` has not fired for ``seconds``."""
    while True:
        with trio.move_on_after(seconds) as quiet:
            await pulse.wait()
        if quiet.cancelled_caught:
            return
