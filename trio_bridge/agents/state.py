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
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["AgentState", "AgentTracker"]


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

    def on_hook(self, event: str, payload: Mapping[str, Any], now: float) -> AgentState | None:
        """A hook fired; returns the new state if it changed."""
        self.last_sign_of_life = now
        if self._side_turn(payload):
            return None
        self.last_event = event
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
        new = _AFTER_EVENT.get(kind) or _AFTER_EVENT.get(event.lower())
        if new is None:
            return None
        if kind == "sessionstart" and self.prompt_at_start:
            self.prompt_at_start = False
            new = AgentState.WORKING
        if new is AgentState.WAITING_FOR_INPUT and payload.get("notification_type") in _INFORMATIONAL:
            return None  # the agent is not asking anything (idle_prompt: it is idle, and says so)
        return self._become(new)

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
        return self._become(AgentState.WORKING)

    def on_output(self, now: float) -> AgentState | None:
        """The session printed something."""
        self.last_sign_of_life = now
        if self.state is AgentState.STUCK or (self.hookless and self.state is AgentState.IDLE):
            return self._become(AgentState.WORKING)
        return None

    def on_transcript(self, now: float) -> AgentState | None:
        """The agent's transcript grew (the second source, after hooks): a sign of life."""
        return self.on_output(now)

    def on_transcript_turn_end(self, now: float) -> AgentState | None:
        """The transcript recorded the end of a turn that no hook reported (an interrupt)."""
        self.last_sign_of_life = now
        if self.state in (AgentState.WORKING, AgentState.STUCK, AgentState.WAITING_FOR_INPUT):
            return self._become(AgentState.IDLE)
        return None

    def on_screen_waiting(self) -> AgentState | None:
        """The screen of a quiet ``working`` agent matches its profile's waiting pattern (the
        last resort): it asks the user something, whose hook may come later or never."""
        if self.state in (AgentState.WORKING, AgentState.STUCK):
            return self._become(AgentState.WAITING_FOR_INPUT)
        return None

    def on_exit(self) -> AgentState | None:
        return self._become(AgentState.EXITED)

    def check(self, now: float) -> AgentState | None:
        """The clock moved: ``working`` without a sign of life for too long is ``stuck``."""
        quiet = now - self.last_sign_of_life
        if self.hookless:
            # without hooks, silence is the only sign that a turn (or the start) is over
            if self.state in (AgentState.STARTING, AgentState.WORKING) and quiet >= self.quiet_after:
                return self._become(AgentState.IDLE)
            return None
        if self.state is AgentState.WORKING and quiet >= self.stuck_after:
            return self._become(AgentState.STUCK)
        return None

    def _become(self, state: AgentState) -> AgentState | None:
        if self.state is AgentState.EXITED or state is self.state:
            return None
        self.state = state
        return state
