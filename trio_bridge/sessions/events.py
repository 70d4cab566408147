"""Session events: what changed (created, running, ended, an agent's state), numbered, kept for
a while (a subscriber resumes after the last one it saw) and sent to every subscriber."""

from __future__ import annotations

import collections
import enum

import attrs
import trio

from ..agents import AgentState
from ..tmux import new_session_id
from .store import SessionRecord

__all__ = ["EventKind", "EventLog", "SessionEvent"]


class EventKind(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    KILLED = "killed"
    LOST = "lost"
    ADOPTED = "adopted"
    #: an agent session's state changed (``SessionEvent.agent`` says to what)
    AGENT = "agent"


@attrs.frozen
class SessionEvent:
    kind: EventKind
    record: SessionRecord
    #: for ``AGENT`` events: the agent's new state
    agent: AgentState | None = None
    #: the event's id: ``<manager's run>-<number>``, numbers counting up from 1 (see
    #: :meth:`SessionManager.subscribe_after`)
    id: str = ""


class EventLog:
    """Numbers events, keeps the last ``buffer`` of them, and sends each to every subscriber.

    A subscriber that falls behind (``buffer`` events unread) is cut off: its channel ends.
    """

    def __init__(self, buffer: int) -> None:
        self._buffer = buffer
        # Event ids: this manager's own prefix (a daemon's next run numbers its events anew),
        # and the last events, replayed to a subscriber resuming after one of them.
        self._prefix = new_session_id()[:8]
        self._published = 0
        self._recent: collections.deque[SessionEvent] = collections.deque(maxlen=buffer)
        self._subscribers: list[trio.MemorySendChannel[SessionEvent]] = []

    def subscribe(self) -> trio.MemoryReceiveChannel[SessionEvent]:
        """Events from now on."""
        send, receive = trio.open_memory_channel[SessionEvent](self._buffer)
        self._subscribers.append(send)
        return receive

    def subscribe_after(self, last_id: str | None) -> tuple[trio.MemoryReceiveChannel[SessionEvent], bool]:
        """Events after the one with id ``last_id`` (None: from now on), and whether that is
        all of them: False when ``last_id`` is not among the last events kept (too old, or from
        another run of the daemon: then every event kept is replayed, the oldest first)."""
        send, receive = trio.open_memory_channel[SessionEvent](self._buffer)
        complete = True
        if last_id is not None:
            ids = [event.id for event in self._recent]
            complete = last_id in ids
            for event in list(self._recent)[ids.index(last_id) + 1 if complete else 0 :]:
                send.send_nowait(event)  # (at most buffer of them: the channel's size)
        self._subscribers.append(send)
        return receive, complete

    def publish(self, kind: EventKind, record: SessionRecord, agent: AgentState | None = None) -> None:
        """Number the event, keep it, send it to every subscriber (never blocks)."""
        self._published += 1
        event = SessionEvent(kind, record, agent, id=f"{self._prefix}-{self._published}")
        self._recent.append(event)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(channel)
                channel.close()

    def close_subscribers(self) -> None:
        """End every subscriber's channel (the manager stopped serving)."""
        for channel in self._subscribers:
            channel.close()
