"""Agent tracking: what the agent of each agent session is doing, and prompts submitted to it.

Owns the agents' trackers (kept in each session's :class:`LiveSession`), the hooks that reach
them, the watch over transcripts and screens (one task, :meth:`AgentTracking.run`), prompt
submission and waits for an agent's state. It reaches the sessions only through the narrow
:class:`AgentHost` interface, which the session manager implements.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from ..agents import AgentProfile, AgentState, AgentTracker, keep_agent_files
from ..agents.payload import safe_path
from ..agents.state import ScreenPatterns, ScreenReading, read_screen
from ..tmux import TmuxServer
from ._answers import Answer, last_kept_turn, read_answer, write_answer
from ._live import LiveSession, Pulse, quiet, set_after
from .errors import (
    NotAnAgentError,
    PromptBoxNotEmptyError,
    PromptNotConfirmedError,
    PromptQueuedError,
    SessionEndedError,
    UnknownAgentError,
    UnknownSessionError,
)
from .events import EventKind
from .store import SessionRecord
from .tuning import SessionTuning

__all__ = ["AgentHost", "AgentStart", "AgentTracking", "agent_title"]

log = logging.getLogger(__name__)


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


def agent_title(agent: AgentStart) -> str:
    """A new agent session's title (when none is given): its profile, and its prompt's start."""
    return agent.profile.name + (f": {_one_line(agent.prompt)}" if agent.prompt else "")


class AgentHost(Protocol):
    """What agent tracking needs of the session manager."""

    @property
    def tuning(self) -> SessionTuning: ...

    @property
    def agent_profiles(self) -> Mapping[str, AgentProfile]: ...

    @property
    def server(self) -> TmuxServer: ...

    def live_session(self, session_id: str) -> LiveSession:
        """The session's in-memory record (made if there is none yet)."""
        ...

    def live_sessions(self) -> Mapping[str, LiveSession]:
        """Every session's in-memory record, by id."""
        ...

    def session_dir(self, session_id: str) -> Path:
        """The session's directory (its log, its screen, its agent's answers)."""
        ...

    async def get(self, session_id: str) -> SessionRecord:
        """The stored record. Raises UnknownSessionError."""
        ...

    async def wait(self, session_id: str) -> SessionRecord:
        """Wait until the session has ended."""
        ...

    def ending(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """Within: tmux losing the session's window is its end (SessionEndedError)."""
        ...

    async def screen(self, session_id: str) -> str: ...

    async def send_pane_keys(self, session_id: str, keys: Sequence[str]) -> bool:
        """Press tmux keys (unchecked) in the session's followed pane; False: none followed."""
        ...

    async def update_record(
        self, session_id: str, change: Callable[[SessionRecord], SessionRecord]
    ) -> SessionRecord | None:
        """Change the stored record under the record lock; None if it is gone."""
        ...

    def publish(self, kind: EventKind, record: SessionRecord, agent: AgentState | None = None) -> None: ...


class AgentTracking:
    """See the module docstring. Serve it with ``nursery.start_soon(tracking.run)``."""

    def __init__(self, host: AgentHost) -> None:
        self._host = host
        self._screen_patterns: dict[str, ScreenPatterns] = {}  # per profile name

    def agent(self, session_id: str) -> AgentTracker | None:
        """The session's agent tracker (None: not an agent session, and no hook yet)."""
        live = self._host.live_sessions().get(session_id)
        return None if live is None else live.agent

    def tracker(self, record: SessionRecord) -> AgentTracker:
        """The record's tracker, made (from what the record kept) if there is none yet."""
        live = self._host.live_session(record.id)
        tracker = live.agent
        if tracker is None:
            # What a record kept is read back with care: a bad value must never crash-loop us.
            known = {str(s) for s in AgentState}
            state = AgentState(record.agent_state) if record.agent_state in known else AgentState.STARTING
            if record.agent_state and record.agent_state not in known:
                state = AgentState.UNKNOWN
            now = trio.current_time()
            tuning = self._host.tuning
            tracker = AgentTracker(
                stuck_after=tuning.agent_stuck_after, state=state, native_id=record.native_id,
                transcript_path=safe_path(record.transcript_path), last_sign_of_life=now,
                screen_quiet=tuning.agent_screen_after, changed_at=now, evidence="as recorded",
                answers=max(0, record.agent_answers, last_kept_turn(self._host.session_dir(record.id))),
            )  # fmt: skip
            profile = self._host.agent_profiles.get(record.agent) if record.agent else None
            tracker.hookless = profile is not None and profile.hooks == "none"
            if record.state.ended:
                tracker.on_exit()
            live.agent = tracker
        return tracker

    def resuming(
        self, record: SessionRecord, *, model: str | None, prompt: str | None, extra_args: tuple[str, ...]
    ) -> AgentStart:
        """How to start an agent resuming the conversation of ``record``'s agent.

        Raises:
            NotAnAgentError: not an agent session, or its agent never reported its
            conversation id; UnknownAgentError: its profile is gone.
        """
        if record.agent is None:
            raise NotAnAgentError(f"session {record.id} does not run an agent")
        if record.native_id is None:
            raise NotAnAgentError(
                f"session {record.id}: its agent never reported its conversation id (no hook came)"
            )
        profiles = self._host.agent_profiles
        profile = profiles.get(record.agent)
        if profile is None:
            raise UnknownAgentError(record.agent, sorted(profiles))
        return AgentStart(
            profile, model=model, prompt=prompt, native_id=record.native_id, extra_args=extra_args
        )

    def started(self, record: SessionRecord, agent: AgentStart, *, first_turn: bool) -> None:
        """A new agent session (its record stored, tmux's session not made yet): its tracker."""
        tracker = self.tracker(record)
        tracker.evidence = "started with a prompt" if first_turn else "started"
        tracker.first_turn_unseen = first_turn
        if agent.prompt is not None:
            tracker.prompt_at_start = agent.profile.start_hook
            tracker.prompts.add(agent.prompt)

    async def hook(self, session_id: str, event: str, payload: dict[str, Any]) -> AgentTracker:
        """An agent's hook fired in this session: update its state; record and publish a change.

        Raises:
            UnknownSessionError: no such session.
        """
        record = await self._host.get(session_id)
        tracker = self.tracker(record)
        known = (tracker.native_id, tracker.transcript_path)
        answers = tracker.answers
        changed = tracker.on_hook(event, payload, trio.current_time())
        self._host.live_session(session_id).hook_pulse.fire()
        answered = tracker.answers != answers and tracker.last_answer is not None
        if answered:
            await self._keep_answer(session_id, tracker.answers, tracker.last_answer or "")
        if changed is not None or answered or known != (tracker.native_id, tracker.transcript_path):
            await self.changed(session_id, tracker, changed, answered=answered)
        return tracker

    async def _keep_answer(self, session_id: str, turn: int, text: str) -> None:
        """Keep a turn's final answer on disk (before the record says it exists: whoever reads
        the record's ``agent_answers`` finds it). A disk that refuses loses only the copy: the
        answer is still told here (this computer's bot holds it in memory)."""
        directory = self._host.session_dir(session_id)
        try:
            await trio.to_thread.run_sync(write_answer, directory, turn, text)
        except OSError as exc:
            log.warning("session %s: the agent's answer of turn %d not kept: %s", session_id, turn, exc)

    async def answer(self, session_id: str, turn: int | None = None) -> Answer | None:
        """The final answer of the agent's turn ``turn`` (None: its last one), as kept on disk;
        None when there is none (no answer yet, or that turn's is no longer kept).

        Raises:
            UnknownSessionError; NotAnAgentError: not an agent session.
        """
        record = await self._host.get(session_id)
        if record.agent is None:
            raise NotAnAgentError(f"session {session_id} does not run an agent")
        tracker = self.agent(session_id)
        last = max(record.agent_answers, tracker.answers if tracker is not None else 0)
        turn = last if turn is None else turn
        if turn < 1 or turn > last:
            return None
        return await trio.to_thread.run_sync(read_answer, self._host.session_dir(session_id), turn)

    async def changed(
        self, session_id: str, tracker: AgentTracker, changed: AgentState | None, *, answered: bool = False
    ) -> None:
        """Keep the tracker's news in the session's record; publish a state change, or a new
        final answer (an ``agent`` event even when the state did not change)."""
        record = await self._host.update_record(
            session_id,
            lambda record: attrs.evolve(
                record,
                agent_state=str(tracker.state),
                native_id=tracker.native_id,
                transcript_path=tracker.transcript_path,
                agent_answers=max(record.agent_answers, tracker.answers),
            ),
        )
        if record is None:
            return
        if changed is not None:
            log.info("session %s: agent %s", session_id, changed)
            log.debug("session %s: agent %s because of %s", session_id, changed, tracker.evidence)
            self._host.live_session(session_id).agent_pulse.fire()
        if changed is not None or answered:
            self._host.publish(EventKind.AGENT, record, agent=changed or tracker.state)

    def ended(self, live: LiveSession) -> None:
        """The session's end is recorded: its agent (if any) has exited."""
        if live.agent is not None and live.agent.on_exit() is not None:
            live.agent_pulse.fire()

    async def keep_files(self, record: SessionRecord, directory: Path) -> None:
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

    # -- watching ---------------------------------------------------------------

    async def run(self) -> None:
        """Every ``agent_check_interval``, for each agent: ``working`` without a sign of life for
        too long is ``stuck``; a transcript that grew is a sign of life, and the end of a turn
        when what it appended matches one of its profile's turn-end patterns; its screen tells
        what no hook does (see :meth:`AgentTracker.on_screen`). A quiet idle agent's screen is
        not read (nothing changed on it). Never returns."""
        sizes: dict[str, int] = {}
        looked: dict[str, float] = {}  # when each agent's screen was last read
        failing: dict[str, type[Exception]] = {}  # agents whose last look failed, and how
        while True:
            await trio.sleep(self._host.tuning.agent_check_interval)
            now = trio.current_time()
            agents = {id: live for id, live in self._host.live_sessions().items() if live.agent is not None}
            for table in (sizes, looked, failing):  # sessions removed meanwhile
                for gone in table.keys() - agents.keys():
                    del table[gone]
            for session_id, live in agents.items():
                tracker = live.agent
                assert tracker is not None
                # One agent's trouble stays with it: logged once with its traceback, the agent
                # read `unknown` until a sign says otherwise; the others are watched on.
                try:
                    await self._check(live, tracker, sizes, looked, now)
                except Exception as exc:
                    if failing.get(session_id) is not type(exc):
                        log.warning("session %s: watching its agent failed", session_id, exc_info=True)
                    failing[session_id] = type(exc)
                    if changed := tracker.on_watch_failed(repr(exc), now):
                        await self.changed(session_id, tracker, changed)
                else:
                    failing.pop(session_id, None)

    async def _check(
        self,
        live: LiveSession,
        tracker: AgentTracker,
        sizes: dict[str, int],
        looked: dict[str, float],
        now: float,
    ) -> None:
        """One look at one agent (see :meth:`run`)."""
        session_id = live.id
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
                    await self.changed(session_id, tracker, changed)
        if (changed := tracker.check(now)) is not None:
            await self.changed(session_id, tracker, changed)
        if live.pane_id is None or (
            tracker.state is AgentState.IDLE and tracker.last_sign_of_life < looked.get(session_id, 0)
        ):
            return
        looked[session_id] = now
        try:
            reading = await self._read_screen(session_id)
        except UnknownSessionError:
            return
        if reading is not None and (changed := tracker.on_screen(reading, now)) is not None:
            await self.changed(session_id, tracker, changed)

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
        return read_screen(patterns, await self._host.screen(session_id))

    async def _profile_of(self, session_id: str) -> AgentProfile | None:
        try:
            record = await self._host.get(session_id)
        except UnknownSessionError:
            return None
        if record.agent is None:
            return None
        return self._host.agent_profiles.get(record.agent)

    async def wait(self, session_id: str, states: Sequence[AgentState]) -> SessionRecord:
        """Wait until the session's agent is in one of ``states`` (``exited``: or the session
        ended); return the record then.

        Raises:
            UnknownSessionError; NotAnAgentError if it is not an agent session and ``states``
            asks for more than ``exited``.
        """
        record = await self._host.get(session_id)
        if record.agent is None and self.agent(session_id) is None:
            if set(states) - {AgentState.EXITED}:
                raise NotAnAgentError(f"session {session_id} does not run an agent")
            return await self._host.wait(session_id)  # a plain session: exited is its end
        while True:
            record = await self._host.get(session_id)
            if record.state.ended:
                # Its state will not change any more: reached or not, the answer is now.
                return record
            tracker = self.tracker(record)
            if tracker.state in states:
                # (the record may not hold the new state yet: it is being written)
                return attrs.evolve(record, agent_state=str(tracker.state))
            live = self._host.live_session(session_id)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(set_after, live.agent_pulse.wait, nursery.cancel_scope)
                nursery.start_soon(set_after, live.ended.wait, nursery.cancel_scope)

    # -- prompts ------------------------------------------------------------------

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
        record = await self._running(session_id)
        if record.agent is None:
            raise NotAnAgentError(f"session {session_id} does not run an agent (use input)")
        lock = self._host.live_session(session_id).prompt_lock
        async with lock, self._host.ending(session_id):  # one at a time: pastes would interleave
            await self._submit_prompt(record, text)

    async def _running(self, session_id: str) -> SessionRecord:
        record = await self._host.get(session_id)
        if record.state.ended:
            raise SessionEndedError(record)
        return record

    async def _submit_prompt(self, record: SessionRecord, text: str) -> None:
        session_id = record.id
        tuning = self._host.tuning
        server = self._host.server
        profile = self._host.agent_profiles.get(record.agent or "")
        by_hook = profile is not None and profile.confirm == "hook" and profile.hooks != "none"
        live = self._host.live_session(session_id)
        output = live.output
        tracker = self.tracker(record)
        tracker.prompts.add(text)
        # A paste into an agent still drawing its prompt box is lost (seen with Claude Code and
        # Gemini CLI): wait for its start (hook or screen), then for its output to settle.
        if (by_hook or (profile is not None and profile.prompt_box)) and tracker.state is AgentState.STARTING:
            with trio.move_on_after(tuning.prompt_ready_timeout):
                while tracker.state is AgentState.STARTING:
                    await live.agent_pulse.wait()
        with trio.move_on_after(tuning.prompt_paste_timeout):
            await quiet(output, tuning.prompt_paste_settle)
        await self._clear_box(session_id, profile, output)
        busy = tracker.state in (AgentState.WORKING, AgentState.STUCK)
        seen = output.count
        await server.send_text(record.tmux_name, text)
        # The paste is taken once the agent has echoed it and gone quiet (bounded: an agent
        # may echo nothing, e.g. with the box hidden).
        with trio.move_on_after(tuning.prompt_paste_timeout):
            while output.count == seen:
                await output.wait()
            await quiet(output, tuning.prompt_paste_settle)
        wanted = _normalized(text)
        hooks = tracker.prompt_hooks

        async def confirmed(seconds: float) -> bool:
            with trio.move_on_after(seconds):
                if by_hook:
                    # this prompt's own hook, not just any hook (a turn ending, say)
                    while not (tracker.prompt_hooks > hooks and _normalized(tracker.last_prompt) == wanted):
                        await live.hook_pulse.wait()
                else:
                    while output.count == outputs:
                        await output.wait()
                if (changed := tracker.on_prompt_submitted(trio.current_time())) is not None:
                    await self.changed(session_id, tracker, changed)
                return True
            return False

        for attempt in range(2):
            hooks, outputs = tracker.prompt_hooks, output.count
            await server.send_keys(record.tmux_name, ["Enter"])
            if await confirmed(tuning.prompt_confirm_timeout):
                return
            await self._running(session_id)
            reading = await self._read_screen(session_id) if busy and by_hook else None
            if reading is not None and reading.box == "":
                # out of the box, not started: the busy agent queued it for after its turn
                log.info("session %s: the busy agent queued the prompt; waiting for it", session_id)
                if await confirmed(tuning.prompt_queue_wait):
                    return
                raise PromptQueuedError(
                    f"session {session_id}: the agent is busy and queued the prompt; it runs "
                    f"when the agent's turn ends (not yet after {tuning.prompt_queue_wait:g} s): "
                    "do not send it again"
                )
            log.warning("session %s: no sign of the prompt after Enter (attempt %d)", session_id, attempt + 1)
        raise PromptNotConfirmedError(
            f"session {session_id}: the prompt may not have been submitted: no sign of it from the "
            f"agent after Enter was pressed twice ({tuning.prompt_confirm_timeout:g} s each)"
        )

    async def _clear_box(self, session_id: str, profile: AgentProfile | None, output: Pulse) -> None:
        """Empty the agent's prompt box if its screen shows text in it (never merged with a
        prompt): its profile's clear keys, a round of them for up to 20 lines at a time, each
        round checked on the screen.

        Raises:
            PromptBoxNotEmptyError: text still there after 10 rounds.
        """
        if profile is None or not profile.prompt_box or not profile.clear_keys:
            return
        tuning = self._host.tuning
        live = self._host.live_session(session_id)
        for _ in range(10):
            reading = await self._read_screen(session_id)
            if reading is None or not reading.box or live.pane_id is None:
                return  # empty (or no box on the screen: nothing known to clear)
            log.info("session %s: clearing the agent's prompt box (it held %r)", session_id, reading.box[:60])
            if not await self._host.send_pane_keys(session_id, list(profile.clear_keys) * 20):
                return  # not followed (any more): nothing known to clear
            with trio.move_on_after(tuning.prompt_paste_timeout):
                await quiet(output, tuning.prompt_paste_settle)
        raise PromptBoxNotEmptyError(
            f"session {session_id}: the agent's prompt box holds text that could not be cleared; "
            "clear it (attach) and send the prompt again"
        )


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
