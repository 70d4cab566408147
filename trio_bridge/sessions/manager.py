"""The session manager: owns every session of one state directory and the tasks serving them.

For each session it starts (or re-adopts after a restart) it runs one watcher task in its own
nursery. The watcher holds a tmux control-mode client whose ``%output`` wakes the session's
readers, waits for the pane's process to exit (pidfd), then records how the session ended,
keeps its last screen, closes the pipe so the log is complete, and publishes the change.
Sessions outlive the manager: cancelling it stops the watchers, never the sessions.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import os
import re
import shutil
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ..agents import DEFAULT_PROFILES, AgentProfile, AgentState, AgentTracker, keep_agent_files, launch
from ..agents.payload import safe_path
from ..agents.state import ScreenPatterns, ScreenReading, read_screen
from ..output import LogWatch, OutputFeed, SegmentLog
from ..output.log import split_command
from ..process import ExitWatch, SubprocessFailedError, SubprocessTimeoutError
from ..tmux import (
    ControlClient,
    ControlClientClosedError,
    SessionNotFoundError,
    SessionSpec,
    TmuxCommandError,
    TmuxServer,
    TmuxTimeoutError,
    new_session_id,
    open_control_client,
)
from ..tmux.server import read_exit_status, unix_session_members
from .store import SessionRecord, SessionState, SessionStore

__all__ = [
    "HUB", "AgentStart", "EventKind", "HubHungError", "HubLostError", "NotAnAgentError",
    "PromptBoxNotEmptyError", "PromptNotConfirmedError", "PromptQueuedError", "SessionEndedError",
    "SessionEvent", "SessionManager", "UnknownAgentError", "UnknownSessionError",
]  # fmt: skip

log = logging.getLogger(__name__)

_SIGNALS = {128 + n for n in range(1, 65)}
_PIPE_PID = "pipe.pid"
#: the tmux session all sessions' windows are linked into (not a trio-bridge session itself)
HUB = "tb-hub"


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


class HubLostError(RuntimeError):
    """The hub's control client ended; the manager must be restarted (it re-adopts)."""


class HubHungError(HubLostError):
    """tmux did not answer a command of the hub's control client in time (the server is hung):
    the manager must be restarted (once tmux answers again, it re-adopts; no session is lost)."""


class UnknownSessionError(KeyError):
    """No session with this id is known."""

    def __str__(self) -> str:
        return f"no session {self.args[0]!r}"


@attrs.frozen
class AgentStart:
    """How to start an agent session: its profile and what to start it with."""

    profile: AgentProfile
    model: str | None = None
    #: submitted at start (passed on the command line, as the profile says)
    prompt: str | None = None
    #: the agent's own id of a conversation to resume
    native_id: str | None = None
    extra_args: tuple[str, ...] = ()


class UnknownAgentError(KeyError):
    """No agent profile with this name."""

    def __str__(self) -> str:
        return f"no agent profile {self.args[0]!r} (known: {', '.join(self.args[1])})"


class NotAnAgentError(RuntimeError):
    """The session does not run an agent (or one that can be resumed)."""


class PromptNotConfirmedError(RuntimeError):
    """A prompt was pasted and Enter pressed twice, and the agent showed no sign of taking it:
    the prompt may not have been submitted (it may still sit in the agent's prompt box)."""


class PromptQueuedError(RuntimeError):
    """The agent was busy: it took the prompt out of its box and queued it for after its turn
    (Gemini CLI shows "Queued"), and had not started it when the wait ended. It will run:
    sending it again would run it twice."""


class PromptBoxNotEmptyError(RuntimeError):
    """The agent's prompt box holds text (a draft, a prompt put back after an interrupt) that
    could not be cleared: a prompt pasted now would be merged with it."""


class _Pulse:
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


class SessionEndedError(RuntimeError):
    """The session has ended: it takes no more input."""

    def __init__(self, record: SessionRecord) -> None:
        self.record = record
        super().__init__(f"session {record.id} has ended ({record.state})")


class SessionManager:
    """See the module docstring. Start it with ``await nursery.start(manager.run)``."""

    def __init__(
        self,
        server: TmuxServer,
        store: SessionStore,
        state_dir: Path,
        *,
        segment_size: int = 1 << 20,
        log_max_bytes: int = 64 << 20,
        event_buffer: int = 256,
        agent_profiles: Mapping[str, AgentProfile] = DEFAULT_PROFILES,
    ) -> None:
        self.server = server
        self.store = store
        self.sessions_dir = state_dir / "sessions"
        self.segment_size = segment_size
        self.log_max_bytes = log_max_bytes
        self._event_buffer = event_buffer
        # Event ids: this manager's own prefix (a daemon's next run numbers its events anew),
        # and the last events, replayed to a subscriber resuming after one of them.
        self._events_prefix = new_session_id()[:8]
        self._events_published = 0
        self._recent_events: collections.deque[SessionEvent] = collections.deque(maxlen=event_buffer)
        self._feeds: dict[str, OutputFeed] = {}
        self._watched: set[str] = set()
        self._killing: set[str] = set()
        self._subscribers: list[trio.MemorySendChannel[SessionEvent]] = []
        self._nursery: trio.Nursery | None = None
        self._panes: dict[str, str] = {}  # session id -> pane id, while watched
        self._hub: ControlClient | None = None
        self._hub_ready = trio.Event()  # set while the hub's client serves (replaced after)
        self._hung = False  # the last run ended because tmux stopped answering
        self._served = False  # the manager has started once (it serves or is restarted)
        self._ended: dict[str, trio.Event] = {}  # set when the session's end is recorded
        self.agent_profiles = agent_profiles
        self._agents: dict[str, AgentTracker] = {}  # agent sessions (and any that sent a hook)
        self._output_pulse: dict[str, _Pulse] = {}  # per watched session: output seen
        self._hook_pulse: dict[str, _Pulse] = {}  # per agent session: a hook arrived
        self._agent_pulse: dict[str, _Pulse] = {}  # per agent session: its state changed
        self._record_lock = trio.Lock()  # read-modify-write of records (agent vs. end)
        self._prompt_locks: dict[str, trio.Lock] = {}  # one prompt submission at a time
        #: seconds an agent may be ``working`` with no output and no hook before it is ``stuck``
        self.agent_stuck_after = 120.0
        #: prompt submission: seconds to wait for a sign that a paste / an Enter was taken
        self.prompt_paste_timeout = 2.0
        #: how long a prompt waits for an agent that is still ``starting`` (its start hook)
        self.prompt_ready_timeout = 30.0
        self.prompt_confirm_timeout = 5.0
        #: quiet output for this long after a paste means the agent has taken it in
        self.prompt_paste_settle = 0.3
        #: how long an agent is quiet before a screen showing its prompt box (or a dialog) is
        #: believed (a turn's pause between words is shorter)
        self.agent_screen_after = 1.5
        #: how often agents' states are checked (the clock, transcripts, screens)
        self.agent_check_interval = 0.5
        #: a prompt given to a busy agent that queued it: how long to wait for the agent to take
        #: it (then confirmed) before answering "queued" (:class:`PromptQueuedError`)
        self.prompt_queue_wait = 30.0
        self._screen_patterns: dict[str, ScreenPatterns] = {}  # per profile name
        #: output bytes written by sessions since start (for metrics)
        self.output_bytes = 0
        self._log_watch = LogWatch()  # wakes each watched session's _announce when its log grows

    # -- running --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[SessionManager] = trio.TASK_STATUS_IGNORED) -> None:
        """Re-adopt the sessions the store knows, then serve until cancelled.

        Owns the hub's control client (one for all sessions) and one watcher task per live
        session.

        After a run that ended because tmux stopped answering, it first waits (asking tmux
        again every second, each question bounded) until tmux answers: re-adopting
        meanwhile would only fail, and the supervisor would count each failure as a crash.

        Raises:
            HubLostError: the hub's control client ended (tmux server gone, hub killed).
            HubHungError: tmux did not answer one of the hub's commands in time.
        """
        if self._hung:
            await self._wait_until_tmux_answers()
        try:
            await self._serve(task_status)
        except* (SubprocessTimeoutError, TmuxTimeoutError):
            # After the first start (a failing first start fails the daemon's start instead)
            if self._served:
                self._hung = True
            raise

    async def _serve(self, task_status: trio.TaskStatus[SessionManager]) -> None:
        await self._ensure_hub()
        async with (
            open_control_client(self.server, HUB, output=False) as hub,
            trio.open_nursery() as nursery,
        ):
            self._hub = hub
            self._nursery = nursery
            try:
                await self._adopt_all()
                nursery.start_soon(self._watch_agents)
                self._hung = False
                self._served = True
                self._hub_ready.set()
                task_status.started(self)
                await _first(hub.closed.wait, hub.hung.wait)
                # Without its control client no session's output wakes readers: fail
                # loudly, so that the supervisor restarts us (and we re-adopt).
                if hub.hung.is_set():
                    self._hung = True
                    raise HubHungError(f"tmux did not answer the hub within {hub.timeout:g} s")
                raise HubLostError(f"the hub's control client ended ({hub.exit_reason})")
            finally:
                self._nursery = None
                self._hub = None
                if self._hub_ready.is_set():  # (an unset one has waiters: the next run sets it)
                    self._hub_ready = trio.Event()
                for channel in self._subscribers:
                    channel.close()
                if not self._hung:
                    with trio.CancelScope(shield=True), trio.move_on_after(self.server.timeouts.tmux):
                        await self._retire_idle_hub()

    async def _wait_until_tmux_answers(self) -> None:
        """Ask tmux (bounded each time) until it answers; the caller's scope bounds the whole."""
        while True:
            try:
                await self.server.list_sessions()
            except SubprocessTimeoutError:
                log.warning("tmux is still not answering; the sessions wait for it")
                await trio.sleep(1.0)
            else:
                return

    async def _wait_for_hub(self, command: str) -> None:
        """Wait (within the tmux timeout) until the manager serves: its hub followed, its
        sessions adopted. Raises :class:`TmuxTimeoutError` naming ``command`` if it does not."""
        with trio.move_on_after(self.server.timeouts.tmux):
            await self._hub_ready.wait()
        if not self._hub_ready.is_set():
            raise TmuxTimeoutError(command, self.server.timeouts.tmux)

    async def _live_pane(self, session_id: str, command: str) -> tuple[ControlClient, str] | None:
        """The hub's client and the session's pane, for ``command``; None if the session has no
        pane followed by the hub (it ended, or has not started yet). While the hub is being
        replaced (after tmux hung), a running session waits for the new one, bounded.

        Raises:
            UnknownSessionError; TmuxTimeoutError: no hub again within the tmux timeout.
        """
        if not self._hub_ready.is_set() and not (await self.get(session_id)).state.ended:
            await self._wait_for_hub(command)
        pane_id, hub = self._panes.get(session_id), self._hub
        if pane_id is None or hub is None:
            return None
        return hub, pane_id

    async def _retire_idle_hub(self) -> None:
        """With no session left, remove the hub, so that the tmux server can exit too."""
        try:
            if not await self.server.list_sessions():
                await self.server.kill_session(HUB, missing_ok=True)
        except Exception:
            log.warning("could not remove the idle hub session", exc_info=True)

    async def _ensure_hub(self) -> None:
        """The hub: a tmux session into which every session's window is linked, so that one
        control client sees all their output (one client instead of one per session)."""
        self.server.write_config()
        if not await self.server.has_session(HUB):
            try:
                # Its own window just idles; it is not a trio-bridge session (no id option).
                await self.server.run("new-session", "-d", "-s", HUB, "--", "sleep", "infinity")
            except SubprocessFailedError as exc:
                if b"duplicate session" not in exc.stderr:
                    raise

    def _session_dir(self, session_id: str) -> Path:
        return self.sessions_dir / session_id

    def feed(self, session_id: str) -> OutputFeed:
        """The output feed of a session (its log stays readable after it ended)."""
        feed = self._feeds.get(session_id)
        if feed is None:
            log_dir = self._session_dir(session_id) / "log"
            if not log_dir.is_dir():
                raise UnknownSessionError(session_id)
            feed = OutputFeed(SegmentLog(log_dir, self.segment_size))
            feed.close()  # not watched: nothing more will come
            self._feeds[session_id] = feed
        return feed

    async def screen(self, session_id: str) -> str:
        """The rendered screen: live through the session's control client, or the last one kept."""
        if (live := await self._live_pane(session_id, "capture-pane")) is not None:
            hub, pane_id = live
            try:
                lines = await hub.command("capture-pane", "-p", "-t", pane_id)
                return "".join(line.decode("utf-8", "replace") + "\n" for line in lines)
            except (TmuxCommandError, ControlClientClosedError):
                pass  # it ended just now: its last screen has been kept
        path = self._session_dir(session_id) / "screen.txt"
        if not await trio.Path(path).exists():
            raise UnknownSessionError(session_id)
        return await trio.Path(path).read_text()

    async def cursor(self, session_id: str) -> tuple[int, int] | None:
        """The live session's cursor (column, row, from 0); None once it has ended."""
        if (live := await self._live_pane(session_id, "display-message")) is not None:
            hub, pane_id = live
            try:
                (line,) = await hub.command("display-message", "-p", "-t", pane_id, "#{cursor_x} #{cursor_y}")
                x, y = line.split()
                return int(x), int(y)
            except (TmuxCommandError, ControlClientClosedError, ValueError):
                pass  # it ended just now
        return None

    async def resize(self, session_id: str, width: int, height: int) -> None:
        """Resize a running session's window (an attached client's terminal size changed).
        Raises UnknownSessionError, SessionEndedError."""
        await self._live(session_id)
        live = await self._live_pane(session_id, "resize-window")
        if live is None:
            raise SessionEndedError(await self.get(session_id))
        hub, pane_id = live
        try:
            await hub.command("resize-window", "-t", pane_id, "-x", str(width), "-y", str(height))
        except (TmuxCommandError, ControlClientClosedError):
            raise SessionEndedError(await self.get(session_id)) from None

    def live_readers(self) -> int:
        """Readers following some session's output now."""
        return sum(feed.readers for feed in self._feeds.values())

    def subscribe(self) -> trio.MemoryReceiveChannel[SessionEvent]:
        """Session events from now on. A subscriber that falls behind is cut off (its channel ends)."""
        send, receive = trio.open_memory_channel[SessionEvent](self._event_buffer)
        self._subscribers.append(send)
        return receive

    def subscribe_after(self, last_id: str | None) -> tuple[trio.MemoryReceiveChannel[SessionEvent], bool]:
        """Session events after the one with id ``last_id`` (None: from now on), and whether
        that is all of them: False when ``last_id`` is not among the last events kept (too old,
        or from another run of the daemon: then every event kept is replayed, the oldest first,
        and the subscriber should look at the sessions' records for what it may have missed).
        """
        send, receive = trio.open_memory_channel[SessionEvent](self._event_buffer)
        complete = True
        if last_id is not None:
            ids = [event.id for event in self._recent_events]
            complete = last_id in ids
            for event in list(self._recent_events)[ids.index(last_id) + 1 if complete else 0 :]:
                send.send_nowait(event)  # (at most event_buffer of them: the channel's size)
        self._subscribers.append(send)
        return receive, complete

    def agent(self, session_id: str) -> AgentTracker | None:
        """The session's agent tracker (None: not an agent session, and no hook yet)."""
        return self._agents.get(session_id)

    def _tracker(self, record: SessionRecord) -> AgentTracker:
        """The record's tracker, made (from what the record kept) if there is none yet."""
        tracker = self._agents.get(record.id)
        if tracker is None:
            # What a record kept is read back with care: a bad value must never crash-loop us.
            known = {str(s) for s in AgentState}
            state = AgentState(record.agent_state) if record.agent_state in known else AgentState.STARTING
            if record.agent_state and record.agent_state not in known:
                state = AgentState.UNKNOWN
            now = trio.current_time()
            tracker = AgentTracker(
                stuck_after=self.agent_stuck_after, state=state, native_id=record.native_id,
                transcript_path=safe_path(record.transcript_path), last_sign_of_life=now,
                screen_quiet=self.agent_screen_after, changed_at=now, evidence="as recorded",
            )  # fmt: skip
            profile = self.agent_profiles.get(record.agent) if record.agent else None
            tracker.hookless = profile is not None and profile.hooks == "none"
            if record.state.ended:
                tracker.on_exit()
            self._agents[record.id] = tracker
            self._hook_pulse.setdefault(record.id, _Pulse())
            self._agent_pulse.setdefault(record.id, _Pulse())
        return tracker

    async def agent_hook(self, session_id: str, event: str, payload: dict[str, Any]) -> AgentTracker:
        """An agent's hook fired in this session: update its state; record and publish a change.

        Raises:
            UnknownSessionError: no such session.
        """
        record = await self.get(session_id)
        tracker = self._tracker(record)
        known = (tracker.native_id, tracker.transcript_path)
        changed = tracker.on_hook(event, payload, trio.current_time())
        self._hook_pulse[session_id].fire()
        if changed is not None or known != (tracker.native_id, tracker.transcript_path):
            await self._agent_changed(session_id, tracker, changed)
        return tracker

    async def _agent_changed(
        self, session_id: str, tracker: AgentTracker, changed: AgentState | None
    ) -> None:
        """Keep the tracker's news in the session's record; publish a state change."""
        async with self._record_lock:
            record = await self.store.get(session_id)
            if record is None:
                return
            record = attrs.evolve(
                record, agent_state=str(tracker.state), native_id=tracker.native_id,
                transcript_path=tracker.transcript_path,
            )  # fmt: skip
            await self.store.update(record)
        if changed is not None:
            log.info("session %s: agent %s", session_id, changed)
            log.debug("session %s: agent %s because of %s", session_id, changed, tracker.evidence)
            self._agent_pulse[session_id].fire()
            self._publish(EventKind.AGENT, record, agent=changed)

    async def _watch_agents(self) -> None:
        """Every ``agent_check_interval``, for each agent: ``working`` without a sign of life for
        too long is ``stuck``; a transcript that grew is a sign of life, and the end of a turn
        when what it appended matches one of its profile's turn-end patterns; its screen tells
        what no hook does (see :meth:`AgentTracker.on_screen`). A quiet idle agent's screen is
        not read (nothing changed on it)."""
        sizes: dict[str, int] = {}
        looked: dict[str, float] = {}  # when each agent's screen was last read
        failing: dict[str, type[Exception]] = {}  # agents whose last look failed, and how
        while True:
            await trio.sleep(self.agent_check_interval)
            now = trio.current_time()
            for table in (sizes, looked, failing):  # sessions removed meanwhile
                for gone in table.keys() - self._agents.keys():
                    del table[gone]
            for session_id, tracker in list(self._agents.items()):
                # One agent's trouble stays with it: logged once with its traceback, the agent
                # read `unknown` until a sign says otherwise; the others are watched on.
                try:
                    await self._check_agent(session_id, tracker, sizes, looked, now)
                except Exception as exc:
                    if failing.get(session_id) is not type(exc):
                        log.warning("session %s: watching its agent failed", session_id, exc_info=True)
                    failing[session_id] = type(exc)
                    if changed := tracker.on_watch_failed(repr(exc), now):
                        await self._agent_changed(session_id, tracker, changed)
                else:
                    failing.pop(session_id, None)

    async def _check_agent(
        self,
        session_id: str,
        tracker: AgentTracker,
        sizes: dict[str, int],
        looked: dict[str, float],
        now: float,
    ) -> None:
        """One look at one agent (see :meth:`_watch_agents`)."""
        if tracker.state is AgentState.EXITED:
            return
        if tracker.transcript_path is not None:
            size = await _file_size(tracker.transcript_path)
            if (before := sizes.setdefault(session_id, size)) != size:
                sizes[session_id] = size
                changed = tracker.on_transcript(now)
                profile = await self._profile_of(session_id)
                if profile is not None and profile.turn_end_patterns and size > before >= 0:
                    added = await trio.to_thread.run_sync(_read_range, tracker.transcript_path, before, size)
                    if any(re.search(p, added) for p in profile.turn_end_patterns):
                        changed = tracker.on_transcript_turn_end(now) or changed
                if changed is not None:
                    await self._agent_changed(session_id, tracker, changed)
        if (changed := tracker.check(now)) is not None:
            await self._agent_changed(session_id, tracker, changed)
        if session_id not in self._panes or (
            tracker.state is AgentState.IDLE and tracker.last_sign_of_life < looked.get(session_id, 0)
        ):
            return
        looked[session_id] = now
        try:
            reading = await self._read_screen(session_id)
        except UnknownSessionError:
            return
        if reading is not None and (changed := tracker.on_screen(reading, now)) is not None:
            await self._agent_changed(session_id, tracker, changed)

    async def _read_screen(self, session_id: str) -> ScreenReading | None:
        """What the agent's screen shows, by its profile's patterns (None: it has none)."""
        profile = await self._profile_of(session_id)
        if profile is None:
            return None
        patterns = self._screen_patterns.get(profile.name)
        if patterns is None:
            patterns = self._screen_patterns[profile.name] = ScreenPatterns.compile(
                profile.waiting_patterns, profile.busy_patterns, profile.prompt_box, profile.box_placeholders
            )
        if not (patterns.waiting or patterns.busy or patterns.prompt_box):
            return None
        return read_screen(patterns, await self.screen(session_id))

    async def _profile_of(self, session_id: str) -> AgentProfile | None:
        record = await self.store.get(session_id)
        if record is None or record.agent is None:
            return None
        return self.agent_profiles.get(record.agent)

    async def wait_agent(self, session_id: str, states: Sequence[AgentState]) -> SessionRecord:
        """Wait until the session's agent is in one of ``states`` (``exited``: or the session
        ended); return the record then.

        Raises:
            UnknownSessionError; NotAnAgentError if it is not an agent session and ``states``
            asks for more than ``exited``.
        """
        record = await self.get(session_id)
        if record.agent is None and session_id not in self._agents:
            if set(states) - {AgentState.EXITED}:
                raise NotAnAgentError(f"session {session_id} does not run an agent")
            return await self.wait(session_id)  # a plain session: exited is its end
        while True:
            record = await self.get(session_id)
            if record.state.ended:
                # Its state will not change any more: reached or not, the answer is now.
                return record
            tracker = self._tracker(record)
            if tracker.state in states:
                # (the record may not hold the new state yet: it is being written)
                return attrs.evolve(record, agent_state=str(tracker.state))
            ended = self._ended.setdefault(session_id, trio.Event())
            async with trio.open_nursery() as nursery:
                pulse = self._agent_pulse[session_id]
                nursery.start_soon(_set_after, pulse.wait, nursery.cancel_scope)
                nursery.start_soon(_set_after, ended.wait, nursery.cancel_scope)

    async def submit_prompt(self, session_id: str, text: str) -> None:
        """Submit a prompt to the session's agent, verified.

        The agent's prompt box is emptied first if it holds text (a draft, a prompt Claude Code
        put back after an interrupt), with its profile's clear keys. The text goes in as a
        bracketed paste (through a tmux buffer); once the agent has taken the paste in (its
        output settled), Enter is pressed on its own. The submission is confirmed by the
        agent's prompt hook, or by any output after Enter, as its profile says; without a sign
        within ``prompt_confirm_timeout``, Enter is pressed once more. A busy agent that took
        the prompt out of its box has queued it: confirmed when it starts it, within
        ``prompt_queue_wait``.

        Raises:
            UnknownSessionError, SessionEndedError, InvalidTextError;
            PromptBoxNotEmptyError: the box holds text that could not be cleared (nothing sent);
            PromptQueuedError: queued by the busy agent, not started yet (it will run);
            PromptNotConfirmedError: no sign of the prompt after the retry.
        """
        record = await self._live(session_id)
        if record.agent is None:
            raise NotAnAgentError(f"session {session_id} does not run an agent (use input)")
        lock = self._prompt_locks.setdefault(session_id, trio.Lock())
        async with lock, self._ending(session_id):  # one at a time: pastes would interleave
            await self._submit_prompt(record, text)

    async def _submit_prompt(self, record: SessionRecord, text: str) -> None:
        session_id = record.id
        profile = self.agent_profiles.get(record.agent or "")
        by_hook = profile is not None and profile.confirm == "hook" and profile.hooks != "none"
        output = self._output_pulse.setdefault(session_id, _Pulse())
        tracker = self._tracker(record)
        tracker.prompts.add(text)
        # A paste into an agent still drawing its prompt box is lost (seen with Claude Code and
        # Gemini CLI): wait for its start (hook or screen), then for its output to settle.
        if (by_hook or (profile is not None and profile.prompt_box)) and tracker.state is AgentState.STARTING:
            with trio.move_on_after(self.prompt_ready_timeout):
                while tracker.state is AgentState.STARTING:
                    await self._agent_pulse[session_id].wait()
        with trio.move_on_after(self.prompt_paste_timeout):
            await _quiet(output, self.prompt_paste_settle)
        await self._clear_box(session_id, profile, output)
        busy = tracker.state in (AgentState.WORKING, AgentState.STUCK)
        seen = output.count
        await self.server.send_text(record.tmux_name, text)
        # The paste is taken once the agent has echoed it and gone quiet (bounded: an agent
        # may echo nothing, e.g. with the box hidden).
        with trio.move_on_after(self.prompt_paste_timeout):
            while output.count == seen:
                await output.wait()
            await _quiet(output, self.prompt_paste_settle)
        wanted = _normalized(text)
        hooks = tracker.prompt_hooks

        async def confirmed(seconds: float) -> bool:
            with trio.move_on_after(seconds):
                if by_hook:
                    # this prompt's own hook, not just any hook (a turn ending, say)
                    pulse = self._hook_pulse[session_id]
                    while not (tracker.prompt_hooks > hooks and _normalized(tracker.last_prompt) == wanted):
                        await pulse.wait()
                else:
                    while output.count == outputs:
                        await output.wait()
                if (changed := tracker.on_prompt_submitted(trio.current_time())) is not None:
                    await self._agent_changed(session_id, tracker, changed)
                return True
            return False

        for attempt in range(2):
            hooks, outputs = tracker.prompt_hooks, output.count
            await self.server.send_keys(record.tmux_name, ["Enter"])
            if await confirmed(self.prompt_confirm_timeout):
                return
            await self._live(session_id)
            reading = await self._read_screen(session_id) if busy and by_hook else None
            if reading is not None and reading.box == "":
                # out of the box, not started: the busy agent queued it for after its turn
                log.info("session %s: the busy agent queued the prompt; waiting for it", session_id)
                if await confirmed(self.prompt_queue_wait):
                    return
                raise PromptQueuedError(
                    f"session {session_id}: the agent is busy and queued the prompt; it runs "
                    f"when the agent's turn ends (not yet after {self.prompt_queue_wait:g} s): "
                    "do not send it again"
                )
            log.warning("session %s: no sign of the prompt after Enter (attempt %d)", session_id, attempt + 1)
        raise PromptNotConfirmedError(
            f"session {session_id}: the prompt may not have been submitted: no sign of it from the "
            f"agent after Enter was pressed twice ({self.prompt_confirm_timeout:g} s each)"
        )

    async def _clear_box(self, session_id: str, profile: AgentProfile | None, output: _Pulse) -> None:
        """Empty the agent's prompt box if its screen shows text in it (never merged with a
        prompt): its profile's clear keys, a round of them for up to 20 lines at a time, each
        round checked on the screen.

        Raises:
            PromptBoxNotEmptyError: text still there after 10 rounds.
        """
        if profile is None or not profile.prompt_box or not profile.clear_keys:
            return
        pane_id = self._panes.get(session_id)
        for _ in range(10):
            reading = await self._read_screen(session_id)
            if reading is None or not reading.box or pane_id is None or self._hub is None:
                return  # empty (or no box on the screen: nothing known to clear)
            log.info("session %s: clearing the agent's prompt box (it held %r)", session_id, reading.box[:60])
            await self._hub.command("send-keys", "-t", pane_id, *(list(profile.clear_keys) * 20))
            with trio.move_on_after(self.prompt_paste_timeout):
                await _quiet(output, self.prompt_paste_settle)
        raise PromptBoxNotEmptyError(
            f"session {session_id}: the agent's prompt box holds text that could not be cleared; "
            "clear it (attach) and send the prompt again"
        )

    def _publish(self, kind: EventKind, record: SessionRecord, agent: AgentState | None = None) -> None:
        if record.state.ended:
            ended = self._ended.pop(record.id, None)
            if ended is not None:
                ended.set()
        tracker = self._agents.get(record.id)
        if record.state.ended and tracker is not None and tracker.on_exit() is not None:
            self._agent_pulse[record.id].fire()
        self._events_published += 1
        event = SessionEvent(kind, record, agent, id=f"{self._events_prefix}-{self._events_published}")
        self._recent_events.append(event)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(channel)
                channel.close()

    # -- operations -----------------------------------------------------------

    async def get(self, session_id: str) -> SessionRecord:
        """The session's record. Raises :class:`UnknownSessionError`."""
        record = await self.store.get(session_id)
        if record is None:
            raise UnknownSessionError(session_id)
        return record

    async def _live(self, session_id: str) -> SessionRecord:
        record = await self.get(session_id)
        if record.state.ended:
            raise SessionEndedError(record)
        return record

    async def send_text(self, session_id: str, text: str, *, enter: bool = False) -> None:
        """Type text into a running session (see :meth:`TmuxServer.send_text`).

        Raises:
            UnknownSessionError, SessionEndedError; InvalidTextError for control characters.
        """
        record = await self._live(session_id)
        async with self._ending(session_id):
            await self.server.send_text(record.tmux_name, text, enter=enter)

    async def send_keys(self, session_id: str, keys: Sequence[str]) -> None:
        """Press named keys in a running session. Raises like :meth:`send_text`, and
        InvalidKeyError."""
        record = await self._live(session_id)
        async with self._ending(session_id):
            await self.server.send_keys(record.tmux_name, keys)

    @asynccontextmanager
    async def _ending(self, session_id: str) -> AsyncIterator[None]:
        """Within: tmux saying the session's window is gone means the session ended just now
        (after it was found running), not a tmux failure. Waits, bounded, for its watcher to
        record the end, then raises :class:`SessionEndedError`; if no end is recorded by then
        (say the tmux server itself is gone), the tmux error propagates."""
        try:
            yield
        except SessionNotFoundError:
            with trio.move_on_after(self.server.timeouts.tmux):
                await self.wait(session_id)
            record = await self.get(session_id)
            if not record.state.ended:
                raise
            raise SessionEndedError(record) from None

    async def send_bytes(self, session_id: str, data: bytes) -> None:
        """Write raw bytes to the session's terminal, as typed keys (an attached terminal's
        input: control characters and escape sequences included), through the hub's client."""
        await self._live(session_id)
        live = await self._live_pane(session_id, "send-keys")
        if live is None:
            raise SessionEndedError(await self.get(session_id))
        hub, pane_id = live
        for start in range(0, len(data), 512):
            hex_bytes = [f"{b:02x}" for b in data[start : start + 512]]
            await hub.command("send-keys", "-t", pane_id, "-H", *hex_bytes)

    async def wait(self, session_id: str) -> SessionRecord:
        """Wait until the session has ended; return its final record."""
        record = await self.get(session_id)
        while not record.state.ended:
            event = self._ended.setdefault(session_id, trio.Event())
            # Re-read after registering: the end may have been recorded in between.
            record = await self.get(session_id)
            if record.state.ended:
                break
            await event.wait()
            record = await self.get(session_id)
        return record

    async def create(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        title: str | None = None,
        width: int = 80,
        height: int = 24,
        origin: str = "local",
        agent: AgentStart | None = None,
        name: str | None = None,
    ) -> SessionRecord:
        """Start a new session and return its record (state ``running``); ``name``: one it is
        addressed by too (NameTakenError if another session has it).

        With ``agent``, ``argv`` is ignored: the session runs the profile's agent, with its
        hooks configured in the session's own directory (see :func:`trio_bridge.agents.launch`),
        and has an agent state from the start (``starting``).

        Raises what :meth:`TmuxServer.new_session` raises (``OSError`` of a full disk too);
        then nothing is left behind: no record, no directory, no session.
        """
        if not self._served:
            raise RuntimeError("the session manager is not running")
        if not self._hub_ready.is_set():  # being restarted (tmux hung, or the hub lost)
            await self._wait_for_hub("new-session")
        nursery = self._nursery
        assert nursery is not None
        session_id = new_session_id()
        directory = self._session_dir(session_id)
        await trio.Path(directory / "log").mkdir(parents=True)
        unset_env: tuple[str, ...] = ()
        if agent is not None:
            try:
                launched = await trio.to_thread.run_sync(
                    lambda: launch(
                        agent.profile, directory / "agent", model=agent.model, prompt=agent.prompt,
                        native_id=agent.native_id, extra_args=agent.extra_args,
                        environment={**os.environ, **(env or {})},
                    )
                )  # fmt: skip
            except BaseException:
                # no record names this directory: retention would never remove it
                with trio.CancelScope(shield=True, deadline=trio.current_time() + self.server.timeouts.tmux):
                    await trio.to_thread.run_sync(shutil.rmtree, directory, True)
                raise
            argv, unset_env = launched.argv, launched.unset_env
            # the profile's hook wiring (e.g. GEMINI_CLI_HOME) wins over the caller's
            env = {**(env or {}), **launched.env}
            if title is None:
                title = agent.profile.name + (f": {_one_line(agent.prompt)}" if agent.prompt else "")
        # started with a prompt and no start hook to say so (Codex): its first turn runs now
        first_turn = agent is not None and agent.prompt is not None and not agent.profile.start_hook
        spec = SessionSpec(
            argv, cwd, directory / "exit", env or {}, width=width, height=height, session_id=session_id,
            pipe_command=_pipe_command(directory, self.segment_size), unset_env=unset_env,
        )  # fmt: skip
        record = SessionRecord(
            id=session_id, title=title or " ".join(argv), command=tuple(argv), cwd=str(cwd),
            env_keys=tuple(sorted(env or {})), created_at=time.time(), state=SessionState.STARTING,
            origin=origin, tmux_name=spec.name,
            agent=agent.profile.name if agent is not None else None,
            agent_state=(
                None if agent is None else str(AgentState.WORKING if first_turn else AgentState.STARTING)
            ),
            native_id=agent.native_id if agent is not None else None, name=name,
        )  # fmt: skip
        try:
            await self.store.add(record)
            if agent is not None:
                tracker = self._tracker(record)
                tracker.evidence = "started with a prompt" if first_turn else "started"
                tracker.first_turn_unseen = first_turn
                if agent.prompt is not None:
                    tracker.prompt_at_start = agent.profile.start_hook
                    tracker.prompts.add(agent.prompt)
            info = await self.server.new_session(spec)
        except BaseException:
            # A refused create changes nothing: no record, no directory, no event.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + self.server.timeouts.tmux):
                self._agents.pop(session_id, None)
                await self._forget_unstarted(session_id, directory)
            raise
        self._publish(EventKind.CREATED, record)
        try:
            # (the run's nursery: if the manager restarted meanwhile, this fails, and cleans up)
            await nursery.start(self._watch, record, info.pane_pid, info.pane_id, spec)
        except BaseException:
            # Not running, not watched: take the session down again and say so in its record.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 2 * self.server.timeouts.tmux):
                try:
                    await self.server.kill_session(spec.name, missing_ok=True)
                except Exception:
                    log.warning("session %s: could not remove it (watcher failed)", session_id, exc_info=True)
                await self._failed_to_start(record)
            raise
        async with self._record_lock:
            current = await self.store.get(session_id) or record
            running = attrs.evolve(current, state=SessionState.RUNNING)
            await self.store.update(running)
        self._publish(EventKind.RUNNING, running)
        return running

    async def _failed_to_start(self, record: SessionRecord) -> None:
        """The session never ran: its record says ``exited`` with no exit code."""
        failed = attrs.evolve(
            record, state=SessionState.EXITED, ended_at=time.time(),
            agent_state=str(AgentState.EXITED) if record.agent is not None else None,
        )  # fmt: skip
        await self.store.update(failed)
        self._agents.pop(record.id, None)
        self._feeds.pop(record.id, None)
        self._publish(EventKind.EXITED, failed)

    async def resume(
        self,
        session_id: str,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        title: str | None = None,
        width: int = 80,
        height: int = 24,
        origin: str = "local",
        model: str | None = None,
        prompt: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> SessionRecord:
        """Start a new session that resumes the agent conversation of an earlier one (running
        or ended, even before a daemon restart), by the agent's own id its hooks reported;
        in the earlier session's directory unless ``cwd`` says otherwise.

        Raises:
            UnknownSessionError; NotAnAgentError: not an agent session, or its agent never
            reported its conversation id; UnknownAgentError: its profile is gone.
        """
        record = await self.get(session_id)
        if record.agent is None:
            raise NotAnAgentError(f"session {session_id} does not run an agent")
        if record.native_id is None:
            raise NotAnAgentError(
                f"session {session_id}: its agent never reported its conversation id (no hook came)"
            )
        profile = self.agent_profiles.get(record.agent)
        if profile is None:
            raise UnknownAgentError(record.agent, sorted(self.agent_profiles))
        start = AgentStart(
            profile, model=model, prompt=prompt, native_id=record.native_id, extra_args=extra_args
        )
        return await self.create(
            [], cwd=cwd or Path(record.cwd), env=env, title=title, width=width, height=height,
            origin=origin, agent=start,
        )  # fmt: skip

    async def _forget_unstarted(self, session_id: str, directory: Path) -> None:
        """Remove what a create that failed had made (its record may not exist)."""
        try:
            await self.store.delete(session_id)
        except Exception:
            # (a full disk can refuse even a delete) the record says ``starting`` with no tmux
            # session: the next start records it as lost
            log.warning("session %s did not start; could not forget its record", session_id, exc_info=True)
        await trio.to_thread.run_sync(shutil.rmtree, directory, True)

    async def kill(self, session_id: str) -> None:
        """Kill a running session (its watcher records it as ``killed``)."""
        record = await self.store.get(session_id)
        if record is None:
            raise UnknownSessionError(session_id)
        if record.state.ended:
            return
        self._killing.add(session_id)
        # Killing the window takes its screen along: keep the last one first.
        try:
            screen = await self.server.capture(record.tmux_name, history=200)
        except SessionNotFoundError:
            pass  # it ended just now; its watcher keeps the screen
        else:
            path = trio.Path(self._session_dir(session_id) / "screen.txt")
            try:
                await path.write_text(_without_dead_banner(screen))
            except OSError as exc:
                # (e.g. a full disk) the session stops all the same: it may be what fills it
                log.warning("session %s: its last screen could not be kept: %s", session_id, exc)
        await self._kill_window(record.tmux_name)

    # -- watching -------------------------------------------------------------

    async def _watch(
        self,
        record: SessionRecord,
        pane_pid: int,
        pane_id: str,
        spec: SessionSpec | None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Follow one session until it ends; record how. ``spec`` is set for a new session
        (released once followed). Reports started once the session runs, followed; what fails
        before that goes to the caller of ``nursery.start``."""
        self._watched.add(record.id)
        feed = self._watch_feed(record.id)
        try:
            hub = self._hub
            assert hub is not None
            with ExitWatch(pane_pid) as exited:
                await self._link(record.tmux_name)
                output = await hub.follow(pane_id)
                self._panes[record.id] = pane_id
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._announce, record.id, output, feed)
                        if spec is not None:
                            await self.server.release(spec)
                        task_status.started()
                        await exited.wait()
                        nursery.cancel_scope.cancel()
                finally:
                    hub.unsubscribe(pane_id)
            await self._finish(record, feed)
        finally:
            self._watched.discard(record.id)
            self._panes.pop(record.id, None)

    def _watch_feed(self, session_id: str) -> OutputFeed:
        """The feed a watcher wakes: a new one, or, for a session re-adopted after a restart of
        the manager (tmux hung, the hub lost), the one its readers already follow."""
        feed = self._feeds.get(session_id)
        if feed is None or feed.closed:
            feed = OutputFeed(SegmentLog(self._session_dir(session_id) / "log", self.segment_size))
            self._feeds[session_id] = feed
        return feed

    async def _finish(self, record: SessionRecord, feed: OutputFeed) -> None:
        """The pane's process exited: record how, keep the screen, complete the log."""
        directory = self._session_dir(record.id)
        await self.server.wait_drained(record.tmux_name)
        try:
            screen = await self.server.capture(record.tmux_name, history=200)
            await trio.Path(directory / "screen.txt").write_text(_without_dead_banner(screen))
        except SessionNotFoundError:
            pass  # killed: the screen went with it
        await self._kill_window(record.tmux_name)
        # Closing the pane closed the pipe: split writes its last bytes and exits.
        writer = _pipe_writer(directory)
        if writer is not None:
            with ExitWatch(writer) as done, trio.move_on_after(self.server.timeouts.tmux):
                await done.wait()
        # counted and trimmed before the end is told: what a reader finds once it knows of the
        # end is final
        grown = await feed.advance(self.log_max_bytes)
        self.output_bytes += grown  # (not `+= await`: that reads the total before the await)
        feed.close()
        await self._record_end(record, directory)

    async def _link(self, name: str) -> None:
        """Link the session's window into the hub (once), so the hub's client sees its output."""
        window_id, linked = await self.server.display(name, "#{window_id}", "#{window_linked_sessions}")
        if int(linked) < 2:
            await self.server.run("link-window", "-d", "-s", window_id, "-t", f"={HUB}:")

    async def _kill_window(self, name: str) -> None:
        """Kill the session's window: from its own session *and* the hub (which kill-session
        would leave running), hanging up its processes; the emptied session goes too."""
        try:
            (window_id,) = await self.server.display(name, "#{window_id}")
        except SessionNotFoundError:
            return  # already gone
        try:
            await self.server.run("kill-window", "-t", window_id)
        except SubprocessFailedError as exc:
            if b"can't find" not in exc.stderr:
                raise

    async def _pane_dead(self, name: str) -> bool:
        """Whether tmux has marked the pane dead (read its pty to the end); a missing one is."""
        try:
            return (await self.server.pane_status(name)).dead
        except SessionNotFoundError:
            return True

    async def _record_end(self, record: SessionRecord, directory: Path) -> None:
        # before the end is told (a resume right after it finds what the agent created), and
        # outside the lock (a copy across filesystems may take a while)
        await self._keep_agent_files(record, directory)
        async with self._record_lock:
            # The stored record, not the watcher's copy: agent news came in meanwhile.
            record = await self.store.get(record.id) or record
            await self._record_end_locked(record, directory)

    async def _record_end_locked(self, record: SessionRecord, directory: Path) -> None:
        status = read_exit_status(directory / "exit")
        killed = record.id in self._killing
        self._killing.discard(record.id)
        exit_code, exit_signal = status, None
        if status in _SIGNALS:
            exit_code, exit_signal = None, status - 128  # the shell's 128+N
        state = SessionState.KILLED if killed else SessionState.EXITED
        if status is None and not killed:
            state = SessionState.KILLED  # the wrapper itself was killed from outside
        elif status is None:
            # Killed by us: closing its window hung up its processes (tmux sends SIGHUP), the
            # start wrapper with them, so no status was written: the signal is ours to tell.
            exit_signal = int(signal.SIGHUP)
        ended = attrs.evolve(
            record, state=state, exit_code=exit_code, exit_signal=exit_signal, ended_at=time.time(),
            agent_state=str(AgentState.EXITED) if record.agent_state is not None else None,
        )  # fmt: skip
        try:
            await self.store.update(ended)
        except sqlite3.OperationalError as exc:
            # (a full disk) the end is known and told all the same; a restart finds the session
            # gone and records it as lost
            log.error("session %s ended (%s); the database could not record it: %s", record.id, state, exc)  # noqa: TRY400
        self._publish(EventKind(state.value), ended)

    async def _keep_agent_files(self, record: SessionRecord, directory: Path) -> None:
        """What an ended agent created in its session's home goes to the user's (see
        :func:`trio_bridge.agents.keep_agent_files`)."""
        if record.agent is None:
            return
        moved, failed = await trio.to_thread.run_sync(keep_agent_files, directory / "agent")
        if moved:
            log.info("session %s: agent's new %s moved to the user's home", record.id, ", ".join(moved))
        for name, error in failed:
            # the session's copy stays in its directory (until retention removes it)
            log.warning(
                "session %s: could not move the agent's new %s to the user's home: %s", record.id, name, error
            )

    # -- adoption -------------------------------------------------------------

    async def _adopt_all(self) -> None:
        """Re-adopt live sessions the store knows; record the fate of those that ended meanwhile.

        Sessions on the tmux server that the store does not know are never touched.
        """
        assert self._nursery is not None
        live = {s.name: s for s in await self.server.list_sessions()}
        for record in await self.store.all([SessionState.STARTING, SessionState.RUNNING]):
            if record.id in self._watched:
                continue
            info = live.get(record.tmux_name)
            directory = self._session_dir(record.id)
            if info is None:
                if (feed := self._feeds.get(record.id)) is not None:
                    feed.close()  # followed before a restart of the manager: its readers finish
                if read_exit_status(directory / "exit") is not None:
                    await self._record_end(record, directory)
                else:
                    await self._keep_agent_files(record, directory)
                    lost = attrs.evolve(record, state=SessionState.LOST, ended_at=time.time())
                    await self.store.update(lost)
                    self._publish(EventKind.LOST, lost)
                continue
            if await self._pane_dead(record.tmux_name):
                self._nursery.start_soon(self._finish, record, self._watch_feed(record.id))
                continue
            running = attrs.evolve(record, state=SessionState.RUNNING)
            if record.state is SessionState.STARTING:
                # Crashed between creating and releasing it: let it start now.
                await self.server.run("wait-for", "-S", f"tb-go-{record.id}")
                await self.store.update(running)
            if running.agent is not None:
                self._tracker(running)  # its state as last recorded; hooks take it from there
            await self._nursery.start(self._watch, running, info.pane_pid, info.pane_id, None)
            self._publish(EventKind.ADOPTED, running)

    async def _announce(
        self, session_id: str, output: trio.MemoryReceiveChannel[bytes], feed: OutputFeed
    ) -> None:
        """Each time the log grows (inotify on its directory: the bytes are in the file), wake
        the feed's readers, count the bytes, keep the log within bounds (:meth:`OutputFeed.advance`)
        and tell "output seen". No ``%output`` is needed: the hub attaches with tmux's no-output."""
        pulse = self._output_pulse.setdefault(session_id, _Pulse())

        async def drain(output: trio.MemoryReceiveChannel[bytes]) -> None:
            async for _ in output:
                pass  # nothing comes; were it to, a full channel would stop the hub's reader

        async with output, trio.open_nursery() as nursery:
            nursery.start_soon(drain, output)
            with self._log_watch.watch(feed.log.directory) as changes:
                while True:
                    await changes.wait()
                    if not (grown := await feed.advance(self.log_max_bytes, changes)):
                        continue
                    self.output_bytes += grown
                    pulse.fire()
                    if (tracker := self._agents.get(session_id)) is not None and (
                        changed := tracker.on_output(trio.current_time())
                    ) is not None:
                        await self._agent_changed(session_id, tracker, changed)

    async def forget(self, session_id: str) -> None:
        """Remove an ended session now: its record, then its files. Raises UnknownSessionError."""
        record = await self.get(session_id)
        assert record.state.ended, "only an ended session is forgotten"
        await self.store.delete(session_id)
        await self.remove(session_id)

    async def signal(self, session_id: str, signum: int) -> None:
        """Send ``signum`` to the running session's command: every process of its pane's Unix
        session but the start wrapper (which must live on to record the exit status).
        Raises UnknownSessionError, SessionEndedError."""
        record = await self._live(session_id)
        async with self._ending(session_id):
            (pane_pid,) = await self.server.display(record.tmux_name, "#{pane_pid}")
        wrapper = int(pane_pid)
        for pid in set(unix_session_members(wrapper)) - {wrapper}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    async def remove(self, session_id: str) -> None:
        """Forget an ended session: its record and its files (used by retention)."""
        self._feeds.pop(session_id, None)
        for table in (
            self._agents,
            self._hook_pulse,
            self._agent_pulse,
            self._output_pulse,
            self._prompt_locks,
        ):
            table.pop(session_id, None)
        await trio.to_thread.run_sync(shutil.rmtree, self._session_dir(session_id), True)


async def _set_after(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def _first(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:
            nursery.start_soon(_set_after, wait, nursery.cancel_scope)


async def _quiet(pulse: _Pulse, seconds: float) -> None:
    """Return once ``pulse`` has not fired for ``seconds``."""
    while True:
        with trio.move_on_after(seconds) as quiet:
            await pulse.wait()
        if quiet.cancelled_caught:
            return


def _read_range(path: str, start: int, end: int, limit: int = 1 << 16) -> str:
    """Bytes ``start`` to ``end`` of a file as text (at most the last ``limit`` of them)."""
    start = max(start, end - limit)
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start).decode(errors="replace")
    except (OSError, ValueError):
        return ""


async def _file_size(path: str) -> int:
    try:
        return (await trio.Path(path).stat()).st_size
    except (OSError, ValueError):  # ValueError: a path no file can have (NUL)
        return -1


def _normalized(text: str | None) -> str | None:
    """A prompt as an agent may report it back: line ends and outer blanks may differ."""
    return None if text is None else text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _one_line(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


_DEAD_BANNER = re.compile(r"\nPane is dead[^\n]*\n?$")


def _without_dead_banner(screen: str) -> str:
    """The screen without tmux's "Pane is dead (status N, <time>)" line (remain-on-exit's)."""
    return _DEAD_BANNER.sub("\n", screen)


def _pipe_command(directory: Path, segment_size: int) -> str:
    import shlex

    pidfile = shlex.quote(str(directory / _PIPE_PID))
    # The shell records its PID and becomes split (exec): one process per session, whose
    # exit says the log is complete.
    # umask: the log is private whoever started the tmux server (an embedded `run` from a
    # shell with umask 022, say).
    return f"umask 077; echo $$ > {pidfile}; {split_command(directory / 'log', segment_size)}"


def _pipe_writer(directory: Path) -> int | None:
    """The PID of the session's log writer (split), if it is still that process."""
    try:
        pid = int((directory / _PIPE_PID).read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError):
        return None
    if cmdline.startswith(b"split\0") and str(directory).encode() in cmdline:
        return pid
    return None  # exited, and maybe the PID was reused: nothing to wait for
