"""An agent session's state, from what its hooks report (the most trusted source).

Pure logic, no I/O: the daemon feeds it hook events (``on_hook``), output activity
(``on_output``) and the clock (``check``), and publishes the changes.

Hook events understood (the three CLIs name them differently):

=====================  ===================================  =========================
state after the event  Claude Code                          Gemini CLI / Codex
=====================  ===================================  =========================
``idle``               SessionStart, Stop                   SessionStart, AfterAgent,
                                                            Codex ``agent-turn-complete``
``working``            UserPromptSubmit, PreToolUse,        BeforeAgent, BeforeTool,
                       PostToolUse                          AfterTool
``waiting_for_input``  Notification (permission_prompt,     Notification
                       elicitation_dialog; not idle_prompt) (e.g. ToolPermission)
=====================  ===================================  =========================

``stuck``: ``working`` with neither output nor a hook for ``stuck_after`` seconds; any sign of
life makes it ``working`` again. A hook may carry the agent's own conversation id and transcript
path; they are kept for resuming.

The screen is the last source (``on_screen``, fed a :class:`ScreenReading` made by
:func:`read_screen` from the profile's patterns): what no hook tells. A busy line (``esc to
interrupt``) means a turn runs: a start with a prompt (Codex has no start hook), a dialog
answered (Claude's PreToolUse came before the dialog, its PostToolUse comes after the tool); the
prompt box with no busy line, after ``screen_quiet`` seconds of silence, means the agent is ready:
its start (Codex), an interrupt (no agent reports one), a turn that ended while the daemon was
down. Each change keeps its evidence (the hook, the screen line, ...): ``evidence``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["AgentState", "AgentTracker", "ScreenKind", "ScreenPatterns", "ScreenReading", "read_screen"]


class AgentState(enum.StrEnum):
    STARTING = "starting"
    WORKING = "working"
    WAITING_FOR_INPUT = "waiting_for_input"
    IDLE = "idle"
    EXITED = "exited"
    STUCK = "stuck"
    UNKNOWN = "unknown"


_AFTER_EVENT = {
    "sessionstart": AgentState.IDLE,
    "stop": AgentState.IDLE,
    "afteragent": AgentState.IDLE,
    "agent-turn-complete": AgentState.IDLE,
    "userpromptsubmit": AgentState.WORKING,
    "beforeagent": AgentState.WORKING,
    "pretooluse": AgentState.WORKING,
    "posttooluse": AgentState.WORKING,
    "beforetool": AgentState.WORKING,
    "aftertool": AgentState.WORKING,
    "notification": AgentState.WAITING_FOR_INPUT,
}

#: tool events: a permission dialog (if any) belongs to the last one
_TOOL_EVENTS = frozenset({"pretooluse", "beforetool"})


class ScreenKind(enum.StrEnum):
    #: a question or a permission dialog (the profile's waiting patterns)
    WAITING = "waiting"
    #: a turn runs (a busy line: ``esc to interrupt``)
    BUSY = "busy"
    #: the prompt box, and neither of the above
    READY = "ready"
    #: none of these (start-up, a full-screen view, ...)
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class ScreenPatterns:
    """A profile's screen patterns, compiled (see :class:`~trio_bridge.agents.AgentProfile`)."""

    waiting: tuple[re.Pattern[str], ...] = ()
    busy: tuple[re.Pattern[str], ...] = ()
    #: the prompt box; its ``text`` group is what the box holds (the last match is the box)
    prompt_box: re.Pattern[str] | None = None
    #: what an empty box shows (a placeholder): the box holds nothing
    placeholders: frozenset[str] = frozenset()

    @classmethod
    def compile(
        cls, waiting: Sequence[str], busy: Sequence[str], prompt_box: str | None, placeholders: Sequence[str]
    ) -> ScreenPatterns:
        return cls(
            tuple(re.compile(p, re.MULTILINE) for p in waiting),
            tuple(re.compile(p, re.MULTILINE) for p in busy),
            re.compile(prompt_box, re.MULTILINE) if prompt_box else None,
            frozenset(placeholders),
        )


@dataclasses.dataclass(frozen=True)
class ScreenReading:
    kind: ScreenKind
    #: the screen line that decided it (evidence)
    line: str = ""
    #: what the prompt box holds ("" empty; None: no box on the screen)
    box: str | None = None


def _line_at(screen: str, match: re.Match[str], group: int | str = 0) -> str:
    at = match.start(group)
    start = screen.rfind("\n", 0, at) + 1
    end = screen.find("\n", at)
    return screen[start : end if end >= 0 else len(screen)].strip()[:200]


def read_screen(patterns: ScreenPatterns, screen: str) -> ScreenReading:
    """What an agent's screen shows: a dialog, a busy line, its prompt box (and what the box
    holds), in this order of precedence."""
    box: str | None = None
    box_match: re.Match[str] | None = None
    if patterns.prompt_box is not None:
        matches = list(patterns.prompt_box.finditer(screen))
        box_match = matches[-1] if matches else None
        if box_match is not None:
            box = (box_match.group("text") or "").strip()
            if box in patterns.placeholders:
                box = ""
    for kind, group in ((ScreenKind.WAITING, patterns.waiting), (ScreenKind.BUSY, patterns.busy)):
        for pattern in group:
            if (match := pattern.search(screen)) is not None:
                return ScreenReading(kind, _line_at(screen, match), box)
    if box_match is not None:
        return ScreenReading(ScreenKind.READY, _line_at(screen, box_match, "text"), box)
    return ScreenReading(ScreenKind.UNKNOWN)


_NATIVE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
#: where a turn-end hook's payload carries the final answer (Claude, Gemini, Codex)
_ANSWER_KEYS = ("last_assistant_message", "prompt_response", "last-assistant-message")
#: notifications that ask the user nothing (Claude Code's names)
_INFORMATIONAL = frozenset({"idle_prompt", "auth_success"})


@dataclasses.dataclass
class AgentTracker:
    """The state of one agent session. Times are ``trio.current_time()``-style seconds."""

    stuck_after: float = 120.0
    state: AgentState = AgentState.STARTING
    #: the agent's own conversation id and transcript file, once a hook reported them
    native_id: str | None = None
    transcript_path: str | None = None
    last_event: str | None = None
    #: the last prompt the agent reported taking (Claude's UserPromptSubmit, Gemini's BeforeAgent)
    last_prompt: str | None = None
    last_sign_of_life: float = 0.0
    #: started with a prompt: its start is the start of a turn (``working``), not ``idle``
    prompt_at_start: bool = False
    #: the prompts trio-bridge submitted (to tell the user's turns from an agent's side turns)
    prompts: set[str] = dataclasses.field(default_factory=set)
    #: prompt hooks seen (UserPromptSubmit, BeforeAgent): a submission is confirmed by a new one
    prompt_hooks: int = 0
    #: the agent's final answer of its last turn, as its turn-end hook reported it (Claude's
    #: ``last_assistant_message``, Gemini's ``prompt_response``, Codex's ``last-assistant-message``),
    #: and how many such answers came (front ends deliver each once)
    last_answer: str | None = None
    answers: int = 0
    #: no hooks configured: the state comes from prompts, output and silence only
    hookless: bool = False
    #: hookless: seconds of silence after which a ``working`` (or ``starting``) agent is ``idle``
    quiet_after: float = 5.0
    #: seconds of silence after which a screen showing the prompt box (no busy line) is believed
    screen_quiet: float = 1.5
    #: why the agent is in its state: the hook, screen line or action that put it there
    evidence: str | None = None
    #: when the state last changed (``trio.current_time()``-style)
    changed_at: float = 0.0
    #: started with a prompt and no start hook (Codex): ``working`` from the start, and its
    #: ready screen (drawn before the prompt is submitted) is no turn's end until the turn showed
    first_turn_unseen: bool = False
    #: when a source last said the state (changed or not): a screen lagging behind it is stale
    said_at: float = 0.0
    #: tool hooks seen (PreToolUse, BeforeTool), and the one whose dialog the user answered
    tool_uses: int = 0
    answered_tool: int = -1

    def on_hook(self, event: str, payload: Mapping[str, Any], now: float) -> AgentState | None:
        """A hook fired; returns the new state if it changed."""
        self.last_sign_of_life = now
        if self._side_turn(payload):
            return None
        self.last_event = event
        self.first_turn_unseen = False
        for key in ("session_id", "thread-id", "thread_id"):
            if isinstance(payload.get(key), str):
                # it goes on a command line (resume): an id, never something that reads as a flag
                if _NATIVE_ID.fullmatch(payload[key]):
                    self.native_id = payload[key]
                break
        if isinstance(payload.get("transcript_path"), str):
            self.transcript_path = payload["transcript_path"]
        if isinstance(payload.get("prompt"), str) and event.lower() in ("userpromptsubmit", "beforeagent"):
            self.last_prompt = payload["prompt"]
            self.prompt_hooks += 1
        for key in _ANSWER_KEYS:
            if isinstance(payload.get(key), str):
                self.last_answer = payload[key]
                self.answers += 1
                break
        kind = str(payload.get("type") or event).lower()
        if kind in _TOOL_EVENTS:
            self.tool_uses += 1
        new = _AFTER_EVENT.get(kind) or _AFTER_EVENT.get(event.lower())
        if new is None:
            return None
        if kind == "sessionstart" and self.prompt_at_start:
            # the start of its first turn (which the screen may have shown already)
            self.prompt_at_start = False
            new = AgentState.WORKING
        if new is AgentState.WAITING_FOR_INPUT:
            if payload.get("notification_type") in _INFORMATIONAL:
                return None  # the agent is not asking anything (idle_prompt: it is idle, and says so)
            if self.tool_uses > 0 and self.answered_tool == self.tool_uses:
                # Claude's Notification comes seconds after its dialog: this one was answered
                # already (the screen showed the tool running), it asks nothing any more
                return None
        self.said_at = now
        return self._become(new, f"hook {event}", now)

    def _side_turn(self, payload: Mapping[str, Any]) -> bool:
        """Whether a Codex ``notify`` is about a turn of another thread: Codex runs a turn of
        its own to title a conversation, whose notify carries another ``thread-id`` (and would
        otherwise say ``idle`` while the user's turn still runs). A turn is ours when its
        ``input-messages`` hold a prompt we submitted; with none known, when its thread is the
        one we know."""
        messages, thread = payload.get("input-messages"), payload.get("thread-id")
        if not isinstance(messages, list) or not isinstance(thread, str):
            return False
        if self.prompts:
            if not self.prompts.intersection(m for m in messages if isinstance(m, str)):
                return True
            if isinstance(messages[-1], str):
                self.last_prompt = messages[-1]
            return False
        return self.native_id is not None and thread != self.native_id

    def on_prompt_submitted(self, now: float) -> AgentState | None:
        """trio-bridge submitted a prompt and saw it taken: a turn has begun (Codex reports
        only turns' ends, and a hookless agent nothing)."""
        self.last_sign_of_life = now
        return self._become(AgentState.WORKING, "prompt submitted and taken", now)

    def on_output(self, now: float) -> AgentState | None:
        """The session printed something."""
        self.last_sign_of_life = now
        if self.state is AgentState.STUCK or (self.hookless and self.state is AgentState.IDLE):
            return self._become(AgentState.WORKING, "output", now)
        return None

    def on_transcript(self, now: float) -> AgentState | None:
        """The agent's transcript grew (the second source, after hooks): a sign of life."""
        return self.on_output(now)

    def on_transcript_turn_end(self, now: float) -> AgentState | None:
        """The transcript recorded the end of a turn that no hook reported (an interrupt)."""
        self.last_sign_of_life = now
        if self.state in (AgentState.WORKING, AgentState.STUCK, AgentState.WAITING_FOR_INPUT):
            return self._become(AgentState.IDLE, "transcript: turn ended (interrupted)", now)
        return None

    def on_screen(self, reading: ScreenReading, now: float) -> AgentState | None:
        """What the agent's screen shows now (the last source: what no hook tells).

        - a dialog, on a ``working`` agent quiet for ``screen_quiet``: ``waiting_for_input``
          (its hook may come later, or never);
        - a busy line: ``working``: a turn started with a prompt (no start hook), a dialog
          answered (the tool runs), a turn typed into the agent (no prompt hook);
        - the prompt box with no busy line, quiet for ``screen_quiet``: ``idle``: the agent
          started (no start hook), a turn interrupted (no hook says so) or ended unseen.
        """
        state, quiet = self.state, now - self.last_sign_of_life >= self.screen_quiet
        evidence = f"screen: {reading.line!r}"
        if reading.kind is ScreenKind.WAITING:
            if state in (AgentState.WORKING, AgentState.STUCK) and quiet:
                return self._become(AgentState.WAITING_FOR_INPUT, evidence, now)
        elif reading.kind is ScreenKind.BUSY:
            self.first_turn_unseen = False
            if state is AgentState.WAITING_FOR_INPUT:
                self.answered_tool = self.tool_uses
            # (a busy line may linger a moment after the hook that said idle)
            settled = state is not AgentState.IDLE or now - self.said_at >= self.screen_quiet
            if state in (AgentState.STARTING, AgentState.WAITING_FOR_INPUT, AgentState.IDLE) and settled:
                return self._become(AgentState.WORKING, evidence, now)
        elif reading.kind is ScreenKind.READY and quiet and not self.hookless:
            if (state is AgentState.STARTING and self.prompt_at_start) or self.first_turn_unseen:
                return None  # its prompt is on its way: its hook or busy line says when it runs
            if state in (
                AgentState.STARTING, AgentState.WORKING, AgentState.STUCK, AgentState.WAITING_FOR_INPUT
            ):  # fmt: skip
                return self._become(AgentState.IDLE, evidence, now)
        return None

    def on_watch_failed(self, reason: str, now: float) -> AgentState | None:
        """Watching this agent failed (its error is logged): its state is not known."""
        return self._become(AgentState.UNKNOWN, f"watching failed: {reason}", now)

    def on_exit(self) -> AgentState | None:
        return self._become(AgentState.EXITED, "the session ended", self.changed_at)

    def check(self, now: float) -> AgentState | None:
        """The clock moved: ``working`` without a sign of life for too long is ``stuck``."""
        quiet = now - self.last_sign_of_life
        if self.hookless:
            # without hooks, silence is the only sign that a turn (or the start) is over
            if self.state in (AgentState.STARTING, AgentState.WORKING) and quiet >= self.quiet_after:
                return self._become(AgentState.IDLE, f"no output for {quiet:.0f} s (no hooks)", now)
            return None
        if self.state is AgentState.WORKING and quiet >= self.stuck_after:
            return self._become(AgentState.STUCK, f"no output and no hook for {quiet:.0f} s", now)
        return None

    def _become(self, state: AgentState, evidence: str, now: float) -> AgentState | None:
        if self.state is AgentState.EXITED or state is self.state:
            return None
        self.state, self.evidence, self.changed_at, self.said_at = state, evidence, now, now
        return state
