"""The session manager: owns every session of one state directory and the tasks serving them.

One control client, the hub's, serves all sessions' commands: every session's window is linked
into the hub session (``tb-hub``), and the client attaches with tmux's ``no-output`` (no
``%output``: the log is the truth). For each session it starts (or re-adopts after a restart)
the manager runs one watcher task in its own nursery: it watches the session's log directory
(inotify, :class:`~trio_bridge.output.LogWatch`), so that each growth of the log wakes the
session's readers, is counted and trimmed in one place (:meth:`OutputFeed.advance`); it waits
for the pane's process to exit (pidfd), then records how the session ended, keeps its last
screen, closes the pipe so the log is complete, and publishes the change. What the manager
holds in memory per session is one :class:`~._live.LiveSession`; agent tracking is
:class:`~.agents.AgentTracking`; events go out through :class:`~.events.EventLog`. Sessions
outlive the manager: cancelling it stops the watchers, never the sessions.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ..agents import DEFAULT_PROFILES, AgentProfile, AgentState, AgentTracker
from ..output import LogChanges, LogWatch, OutputFeed, SegmentLog
from ..process import ExitWatch, SubprocessTimeoutError, signal_session_but_leader
from ..tmux import (
    ControlClient,
    SessionNotFoundError,
    SessionSpec,
    TmuxServer,
    TmuxTimeoutError,
    new_session_id,
    open_control_client,
)
from ..tmux.server import read_exit_status
from ._answers import Answer
from ._files import ended_record, pipe_writer, without_dead_banner
from ._hub import HUB, Hub, pane_cursor, pane_screen, resize_pane, send_pane_bytes, send_pane_keys
from ._live import LiveSession, first
from ._start import prepare_start
from ._stdin import StdinPipe
from .agents import AgentStart, AgentTracking
from .errors import (
    HubHungError,
    HubLostError,
    NoStdinPipeError,
    NotAnAgentError,
    PromptBoxNotEmptyError,
    PromptNotConfirmedError,
    PromptQueuedError,
    SessionEndedError,
    UnknownAgentError,
    UnknownSessionError,
)
from .events import EventKind, EventLog, SessionEvent
from .store import SessionRecord, SessionState, SessionStore
from .tuning import SessionTuning

__all__ = [
    "HUB", "AgentStart", "EventKind", "HubHungError", "HubLostError", "NotAnAgentError",
    "PromptBoxNotEmptyError", "PromptNotConfirmedError", "PromptQueuedError", "SessionEndedError",
    "SessionEvent", "SessionManager", "SessionTuning", "UnknownAgentError", "UnknownSessionError",
]  # fmt: skip

log = logging.getLogger(__name__)


class SessionManager:
    """See the module docstring. Start it with ``await nursery.start(manager.run)``."""

    def __init__(
        self,
        server: TmuxServer,
        store: SessionStore,
        state_dir: Path,
        *,
        tuning: SessionTuning = SessionTuning(),  # noqa: B008 (frozen: one shared value is safe)
        event_buffer: int = 256,
        agent_profiles: Mapping[str, AgentProfile] = DEFAULT_PROFILES,
    ) -> None:
        self.server = server
        self.store = store
        self.sessions_dir = state_dir / "sessions"
        #: the knobs; a test may replace the value on a running manager (``attrs.evolve``)
        self.tuning = tuning
        self.agent_profiles = agent_profiles
        self._events = EventLog(event_buffer)
        #: in memory per session: see :class:`LiveSession` for when one is made and removed
        self._sessions: dict[str, LiveSession] = {}
        self._agents = AgentTracking(self)
        self._nursery: trio.Nursery | None = None
        self._hub = Hub(server)
        self._hung = False  # the last run ended because tmux stopped answering
        self._served = False  # the manager has started once (it serves or is restarted)
        self._record_lock = trio.Lock()  # read-modify-write of records (agent vs. end)
        #: output bytes written by sessions since start (for metrics)
        self.output_bytes = 0
        self._log_watch = LogWatch()  # wakes each watched session's _announce when its log grows

    @property
    def segment_size(self) -> int:
        return self.tuning.segment_size

    @property
    def log_max_bytes(self) -> int:
        return self.tuning.log_max_bytes

    # -- what is held per session -----------------------------------------------

    def live_session(self, session_id: str) -> LiveSession:
        """The session's in-memory record, made if there is none yet (the one place)."""
        live = self._sessions.get(session_id)
        if live is None:
            live = self._sessions[session_id] = LiveSession(session_id)
        return live

    def live_sessions(self) -> Mapping[str, LiveSession]:
        """Every session's in-memory record, by id (agent tracking walks them)."""
        return self._sessions

    def _drop(self, session_id: str) -> None:
        """Forget the session's in-memory record (the one place): it was removed, or never ran."""
        live = self._sessions.pop(session_id, None)
        if live is not None and live.stdin is not None:
            live.stdin.close()

    # -- running --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[SessionManager] = trio.TASK_STATUS_IGNORED) -> None:
        """Re-adopt the sessions the store knows, then serve until cancelled.

        Owns the hub's control client (one for all sessions), one watcher task per live
        session, and the agents' watch.

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
        await self.server.ensure_hub(HUB)
        async with (
            open_control_client(self.server, HUB, output=False) as hub,
            trio.open_nursery() as nursery,
        ):
            self._hub.started(hub)
            self._nursery = nursery
            try:
                await self._adopt_all()
                nursery.start_soon(self._agents.run)
                self._hung = False
                self._served = True
                self._hub.serving()
                task_status.started(self)
                await first(hub.closed.wait, hub.hung.wait)
                # Without its control client no session's output wakes readers: fail
                # loudly, so that the supervisor restarts us (and we re-adopt).
                if hub.hung.is_set():
                    self._hung = True
                    raise HubHungError(f"tmux did not answer the hub within {hub.timeout:g} s")
                raise HubLostError(f"the hub's control client ended ({hub.exit_reason})")
            finally:
                self._nursery = None
                self._hub.stopped()
                self._events.close_subscribers()
                if not self._hung:
                    with trio.CancelScope(shield=True), trio.move_on_after(self.server.timeouts.tmux):
                        await self._hub.retire_if_idle()

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

    async def _live_pane(self, session_id: str, command: str) -> tuple[ControlClient, str] | None:
        """The hub's client and the session's pane, for ``command``; None if the session has no
        pane followed by the hub (it ended, or has not started yet). While the hub is being
        replaced (after tmux hung), a running session waits for the new one, bounded.

        Raises:
            UnknownSessionError; TmuxTimeoutError: no hub again within the tmux timeout.
        """
        if not self._hub.ready and not (await self.get(session_id)).state.ended:
            await self._hub.wait_ready(command)
        live, hub = self._sessions.get(session_id), self._hub.client
        pane_id = None if live is None else live.pane_id
        if pane_id is None or hub is None:
            return None
        return hub, pane_id

    def _session_dir(self, session_id: str) -> Path:
        return self.sessions_dir / session_id

    def session_dir(self, session_id: str) -> Path:
        """The session's directory (its log, its last screen, its agent's answers)."""
        return self._session_dir(session_id)

    def feed(self, session_id: str) -> OutputFeed:
        """The output feed of a session (its log stays readable after it ended)."""
        live = self._sessions.get(session_id)
        feed = None if live is None else live.feed
        if feed is None:
            log_dir = self._session_dir(session_id) / "log"
            if not log_dir.is_dir():
                raise UnknownSessionError(session_id)
            feed = OutputFeed(SegmentLog(log_dir, self.segment_size))
            feed.close()  # not watched: nothing more will come
            self.live_session(session_id).feed = feed
        return feed

    async def screen(self, session_id: str) -> str:
        """The rendered screen: live through the hub's control client, or the last one kept."""
        live = await self._live_pane(session_id, "capture-pane")
        if live is not None and (screen := await pane_screen(*live)) is not None:
            return screen  # (None: it ended just now, and its last screen has been kept)
        path = self._session_dir(session_id) / "screen.txt"
        if not await trio.Path(path).exists():
            raise UnknownSessionError(session_id)
        return await trio.Path(path).read_text()

    async def cursor(self, session_id: str) -> tuple[int, int] | None:
        """The live session's cursor (column, row, from 0); None once it has ended."""
        if (live := await self._live_pane(session_id, "display-message")) is not None:
            return await pane_cursor(*live)
        return None

    async def resize(self, session_id: str, width: int, height: int) -> None:
        """Resize a running session's window (an attached client's terminal size changed).
        Raises UnknownSessionError, SessionEndedError."""
        await self._live(session_id)
        live = await self._live_pane(session_id, "resize-window")
        if live is None:
            raise SessionEndedError(await self.get(session_id))
        if not await resize_pane(*live, width, height):
            raise SessionEndedError(await self.get(session_id))

    async def send_pane_keys(self, session_id: str, keys: Sequence[str]) -> bool:
        """Press tmux keys (as given, unchecked: ours, not a caller's) in the session's pane
        through the hub's client; False if no pane of it is followed (agent tracking's)."""
        live, hub = self._sessions.get(session_id), self._hub.client
        if live is None or live.pane_id is None or hub is None:
            return False
        await send_pane_keys(hub, live.pane_id, keys)
        return True

    def live_readers(self) -> int:
        """Readers following some session's output now."""
        return sum(live.feed.readers for live in self._sessions.values() if live.feed is not None)

    # -- events -----------------------------------------------------------------

    def subscribe(self) -> trio.MemoryReceiveChannel[SessionEvent]:
        """Session events from now on. A subscriber that falls behind is cut off (its channel ends)."""
        return self._events.subscribe()

    def subscribe_after(self, last_id: str | None) -> tuple[trio.MemoryReceiveChannel[SessionEvent], bool]:
        """Session events after the one with id ``last_id`` (None: from now on), and whether
        that is all of them: False when ``last_id`` is not among the last events kept (too old,
        or from another run of the daemon: then every event kept is replayed, the oldest first,
        and the subscriber should look at the sessions' records for what it may have missed).
        """
        return self._events.subscribe_after(last_id)

    def publish(self, kind: EventKind, record: SessionRecord, agent: AgentState | None = None) -> None:
        """Tell every subscriber; an end also wakes the waits for it (and ends its agent)."""
        if record.state.ended and (live := self._sessions.get(record.id)) is not None:
            live.end_recorded()
            self._agents.ended(live)
        self._events.publish(kind, record, agent)

    # -- agents (see agents.py) ---------------------------------------------------

    def agent(self, session_id: str) -> AgentTracker | None:
        """The session's agent tracker (None: not an agent session, and no hook yet)."""
        return self._agents.agent(session_id)

    async def agent_hook(self, session_id: str, event: str, payload: dict[str, Any]) -> AgentTracker:
        """An agent's hook fired in this session: see :meth:`AgentTracking.hook`."""
        return await self._agents.hook(session_id, event, payload)

    async def agent_answer(self, session_id: str, turn: int | None = None) -> Answer | None:
        """A final answer of the session's agent, as kept: see :meth:`AgentTracking.answer`."""
        return await self._agents.answer(session_id, turn)

    async def wait_agent(self, session_id: str, states: Sequence[AgentState]) -> SessionRecord:
        """Wait until the session's agent is in one of ``states``: see :meth:`AgentTracking.wait`."""
        return await self._agents.wait(session_id, states)

    async def submit_prompt(self, session_id: str, text: str) -> None:
        """Submit a prompt to the session's agent, verified: see :meth:`AgentTracking.submit_prompt`."""
        await self._agents.submit_prompt(session_id, text)

    async def update_record(
        self, session_id: str, change: Callable[[SessionRecord], SessionRecord]
    ) -> SessionRecord | None:
        """Store ``change(record)`` under the record lock (agent news vs. the end); None if the
        session's record is gone."""
        async with self._record_lock:
            record = await self.store.get(session_id)
            if record is None:
                return None
            record = change(record)
            await self.store.update(record)
            return record

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
        async with self.ending(session_id):
            await self.server.send_text(record.tmux_name, text, enter=enter)

    async def send_keys(self, session_id: str, keys: Sequence[str]) -> None:
        """Press named keys in a running session. Raises like :meth:`send_text`, and
        InvalidKeyError."""
        record = await self._live(session_id)
        async with self.ending(session_id):
            await self.server.send_keys(record.tmux_name, keys)

    @asynccontextmanager
    async def ending(self, session_id: str) -> AsyncIterator[None]:
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

    async def stdin_pipe(self, session_id: str) -> StdinPipe:
        """The running session's stdin pipe, for its feeder (:meth:`StdinPipe.claim`, ``feed``).

        Raises:
            UnknownSessionError, SessionEndedError; NoStdinPipeError: it was not started with
            one (or not by this process: a pipe does not outlive the daemon).
        """
        await self._live(session_id)
        live = self._sessions.get(session_id)
        if live is None or live.stdin is None:
            raise NoStdinPipeError(f"session {session_id} reads its terminal, not a stdin pipe")
        return live.stdin

    async def send_bytes(self, session_id: str, data: bytes) -> None:
        """Write raw bytes to the session's terminal, as typed keys (an attached terminal's
        input: control characters and escape sequences included), through the hub's client."""
        await self._live(session_id)
        live = await self._live_pane(session_id, "send-keys")
        if live is None:
            raise SessionEndedError(await self.get(session_id))
        await send_pane_bytes(*live, data)

    async def wait(self, session_id: str) -> SessionRecord:
        """Wait until the session has ended; return its final record."""
        record = await self.get(session_id)
        while not record.state.ended:
            event = self.live_session(session_id).ended
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
        stdin_pipe: bool = False,
    ) -> SessionRecord:
        """Start a new session and return its record (state ``running``); ``name``: one it is
        addressed by too (NameTakenError if another session has it); ``stdin_pipe``: its
        command reads a FIFO as stdin, fed through :meth:`stdin_pipe` (see :mod:`._stdin`),
        instead of its terminal.

        With ``agent``, ``argv`` is ignored: the session runs the profile's agent, with its
        hooks configured in the session's own directory (see :func:`trio_bridge.agents.launch`),
        and has an agent state from the start (``starting``).

        Raises what :meth:`TmuxServer.new_session` raises (``OSError`` of a full disk too);
        then nothing is left behind: no record, no directory, no session.
        """
        if not self._served:
            raise RuntimeError("the session manager is not running")
        if not self._hub.ready:  # being restarted (tmux hung, or the hub lost)
            await self._hub.wait_ready("new-session")
        nursery = self._nursery
        assert nursery is not None
        prepared = await prepare_start(
            self._session_dir(new_session_id()), argv, cwd=cwd, env=env, title=title, width=width,
            height=height, origin=origin, agent=agent, name=name, segment_size=self.segment_size,
            cleanup_within=self.server.timeouts.tmux, stdin_pipe=stdin_pipe,
        )  # fmt: skip
        spec, record, directory = prepared.spec, prepared.record, prepared.directory
        session_id = record.id
        try:
            if spec.stdin_path is not None:
                self.live_session(session_id).stdin = StdinPipe(spec.stdin_path)
            await self.store.add(record)
            if agent is not None:
                self._agents.started(record, agent, first_turn=prepared.first_turn)
            info = await self.server.new_session(spec)
        except BaseException:
            # A refused create changes nothing: no record, no directory, no event.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + self.server.timeouts.tmux):
                self._drop(session_id)
                await self._forget_unstarted(session_id, directory)
            raise
        self.publish(EventKind.CREATED, record)
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
        self.publish(EventKind.RUNNING, running)
        return running

    async def _failed_to_start(self, record: SessionRecord) -> None:
        """The session never ran: its record says ``exited`` with no exit code."""
        failed = attrs.evolve(
            record, state=SessionState.EXITED, ended_at=time.time(),
            agent_state=str(AgentState.EXITED) if record.agent is not None else None,
        )  # fmt: skip
        await self.store.update(failed)
        self.publish(EventKind.EXITED, failed)  # (wakes the waits for its end)
        self._drop(record.id)

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
        start = self._agents.resuming(record, model=model, prompt=prompt, extra_args=extra_args)
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
        self.live_session(session_id).killing = True
        # Killing the window takes its screen along: keep the last one first.
        try:
            screen = await self.server.capture(record.tmux_name, history=200)
        except SessionNotFoundError:
            pass  # it ended just now; its watcher keeps the screen
        else:
            path = trio.Path(self._session_dir(session_id) / "screen.txt")
            try:
                await path.write_text(without_dead_banner(screen))
            except OSError as exc:
                # (e.g. a full disk) the session stops all the same: it may be what fills it
                log.warning("session %s: its last screen could not be kept: %s", session_id, exc)
        await self.server.kill_window(record.tmux_name)

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
        live = self.live_session(record.id)
        live.watched = True
        feed = self._watch_feed(record.id)
        try:
            hub = self._hub.client
            assert hub is not None
            # The log is watched before the gate opens: no growth is missed.
            with ExitWatch(pane_pid) as exited, self._log_watch.watch(feed.log.directory) as changes:
                # (linked into the hub: its client answers commands on the pane)
                await self.server.link_window(record.tmux_name, HUB)
                live.pane_id = pane_id
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._announce, record.id, feed, changes)
                    if live.stdin is not None and not live.stdin.closed:
                        # closed at the latest when the session ends (this nursery's end)
                        nursery.start_soon(live.stdin.serve, self.server.timeouts.stdin_attach, record.id)
                    if spec is not None:
                        await self.server.release(spec)
                    task_status.started()
                    await exited.wait()
                    nursery.cancel_scope.cancel()
            await self._finish(record, feed)
        finally:
            live.watched = False
            live.pane_id = None

    def _watch_feed(self, session_id: str) -> OutputFeed:
        """The feed a watcher wakes: a new one, or, for a session re-adopted after a restart of
        the manager (tmux hung, the hub lost), the one its readers already follow."""
        live = self.live_session(session_id)
        feed = live.feed
        if feed is None or feed.closed:
            feed = OutputFeed(SegmentLog(self._session_dir(session_id) / "log", self.segment_size))
            live.feed = feed
        return feed

    async def _finish(self, record: SessionRecord, feed: OutputFeed) -> None:
        """The pane's process exited: record how, keep the screen, complete the log."""
        directory = self._session_dir(record.id)
        await self.server.wait_drained(record.tmux_name)
        try:
            screen = await self.server.capture(record.tmux_name, history=200)
            await trio.Path(directory / "screen.txt").write_text(without_dead_banner(screen))
        except SessionNotFoundError:
            pass  # killed: the screen went with it
        await self.server.kill_window(record.tmux_name)
        # Closing the pane closed the pipe: split writes its last bytes and exits.
        writer = pipe_writer(directory)
        if writer is not None:
            with ExitWatch(writer) as done, trio.move_on_after(self.server.timeouts.tmux):
                await done.wait()
        # counted and trimmed before the end is told: what a reader finds once it knows of the
        # end is final
        grown = await feed.advance(self.log_max_bytes)
        self.output_bytes += grown  # (not `+= await`: that reads the total before the await)
        feed.close()
        await self._record_end(record, directory)

    async def _record_end(self, record: SessionRecord, directory: Path) -> None:
        # before the end is told (a resume right after it finds what the agent created), and
        # outside the lock (a copy across filesystems may take a while)
        await self._agents.keep_files(record, directory)
        async with self._record_lock:
            # The stored record, not the watcher's copy: agent news came in meanwhile.
            record = await self.store.get(record.id) or record
            await self._record_end_locked(record, directory)

    async def _record_end_locked(self, record: SessionRecord, directory: Path) -> None:
        killed = False
        if (live := self._sessions.get(record.id)) is not None:
            killed, live.killing = live.killing, False
        ended = ended_record(record, read_exit_status(directory / "exit"), killed=killed)
        state = ended.state
        try:
            await self.store.update(ended)
        except sqlite3.OperationalError as exc:
            # (a full disk) the end is known and told all the same; a restart finds the session
            # gone and records it as lost
            log.error("session %s ended (%s); the database could not record it: %s", record.id, state, exc)  # noqa: TRY400
        self.publish(EventKind(state.value), ended)

    # -- adoption -------------------------------------------------------------

    async def _adopt_all(self) -> None:
        """Re-adopt live sessions the store knows; record the fate of those that ended meanwhile.

        Sessions on the tmux server that the store does not know are never touched.
        """
        assert self._nursery is not None
        live = {s.name: s for s in await self.server.list_sessions()}
        for record in await self.store.all([SessionState.STARTING, SessionState.RUNNING]):
            if (known := self._sessions.get(record.id)) is not None and known.watched:
                continue
            info = live.get(record.tmux_name)
            directory = self._session_dir(record.id)
            if info is None:
                if known is not None and known.feed is not None:
                    known.feed.close()  # followed before a restart of the manager: its readers finish
                if read_exit_status(directory / "exit") is not None:
                    await self._record_end(record, directory)
                else:
                    await self._agents.keep_files(record, directory)
                    lost = attrs.evolve(record, state=SessionState.LOST, ended_at=time.time())
                    await self.store.update(lost)
                    self.publish(EventKind.LOST, lost)
                continue
            if await self.server.pane_dead(record.tmux_name):
                self._nursery.start_soon(self._finish, record, self._watch_feed(record.id))
                continue
            if known is None or known.stdin is None:
                # a pipe of an earlier daemon process: its command must not wait for a writer
                # forever (it may not have opened it yet)
                self.live_session(record.id).stdin = StdinPipe.adopt(directory)
            running = attrs.evolve(record, state=SessionState.RUNNING)
            if record.state is SessionState.STARTING:
                # Crashed between creating and releasing it: let it start now.
                await self.server.release_gate(record.id)
                await self.store.update(running)
            if running.agent is not None:
                self._agents.tracker(running)  # its state as last recorded; hooks take it from there
            await self._nursery.start(self._watch, running, info.pane_pid, info.pane_id, None)
            self.publish(EventKind.ADOPTED, running)

    async def _announce(self, session_id: str, feed: OutputFeed, changes: LogChanges) -> None:
        """Each time the log grows (``changes``: inotify on its directory, so the bytes are in
        the file), wake the feed's readers, count the bytes, keep the log within bounds
        (:meth:`OutputFeed.advance`) and tell "output seen". No ``%output`` is needed: the hub
        attaches with tmux's no-output."""
        live = self.live_session(session_id)
        pulse = live.output
        while True:
            await changes.wait()
            if not (grown := await feed.advance(self.log_max_bytes, changes)):
                continue
            self.output_bytes += grown
            pulse.fire()
            if (tracker := live.agent) is not None and (
                changed := tracker.on_output(trio.current_time())
            ) is not None:
                await self._agents.changed(session_id, tracker, changed)

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
        async with self.ending(session_id):
            (pane_pid,) = await self.server.display(record.tmux_name, "#{pane_pid}")
        signal_session_but_leader(int(pane_pid), signum)

    async def remove(self, session_id: str) -> None:
        """Forget an ended session: its record and its files (used by retention)."""
        self._drop(session_id)
        await trio.to_thread.run_sync(shutil.rmtree, self._session_dir(session_id), True)
