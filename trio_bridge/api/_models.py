"""The API's request and response bodies.

msgspec Structs, because quart-schema validates them (unknown fields refused, constraints
checked) and builds the OpenAPI document from them: the document cannot drift from the
code. The rest of trio-bridge keeps its data in attrs classes; these exist only at the
HTTP boundary.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from ..agents import AgentState
from ..sessions import EventKind, SessionEvent, SessionRecord, SessionState
from ..tmux import KEY_PATTERN

__all__ = [
    "AgentOut", "AnswerOut", "AnswerQuery", "ComputerList", "ComputerOut", "HookBody",
    "CreateSession", "Error", "ErrorBody", "EventOut", "Health", "InputBody", "KeysBody",
    "ListQuery", "OutputQuery", "PromptBody", "RelayQuery", "Screen", "ScreenQuery", "SessionList",
    "SessionOut", "StdinOut",
    "StreamQuery", "Version",
    "WaitQuery", "WaitResult", "session_out",
]  # fmt: skip

Size = Annotated[int, msgspec.Meta(ge=2, le=1000)]

# What the document says each string may hold. The API checks these itself (with its own error
# codes: invalid_title, invalid_text, ...), so they are documentation only (extra_json_schema);
# tests/api/test_openapi_schemathesis.py holds the document to them. Plain regex syntax, read alike
# by Python and ECMA-262.
#: plain text: no control character (C0, DEL, C1)
_PLAIN = r"^[^\x00-\x1f\x7f-\x9f]*$"
#: a command's argument, a shell line, an environment value: anything but NUL
_NO_NUL = r"^[^\x00]*$"
#: typed text: no control character but newline and tab (CRLF counts as a newline)
_TYPED = r"^(?:[^\x00-\x08\x0b-\x1f\x7f-\x9f]|\r\n)*$"


def _doc(**schema: Any) -> msgspec.Meta:
    return msgspec.Meta(extra_json_schema=schema)


def _comma_list(names: list[str], *, empty: bool) -> str:
    """A pattern for comma-separated names (spaces around each allowed)."""
    one = " *(?:" + "|".join(names) + ") *"
    return f"^(?:{one}(?:,{one})*){'?' if empty else ''}$"


PlainText = Annotated[str, _doc(pattern=_PLAIN)]
#: a session's name: a letter first (so that ``-x`` is never one), 64 characters at most
SESSION_NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
Argument = Annotated[str, _doc(pattern=_NO_NUL)]
EnvName = Annotated[str, _doc(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
KeyName = Annotated[str, _doc(pattern=KEY_PATTERN)]
StateName = Annotated[str, _doc(enum=[s.value for s in SessionState])]
AgentStateName = Annotated[str, _doc(enum=[s.value for s in AgentState])]


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class CreateSession(_Body):
    """Start a session: ``command`` (an argv), or ``shell`` (one line for ``/bin/sh -c``), or
    neither (an interactive login shell). The command (or shell line) and cwd go to tmux on one
    command line: 16364 bytes at most with trio-bridge's start script (else 413); an environment
    variable is 131071 bytes at most as ``NAME=value`` (execve's limit)."""

    command: Annotated[list[Argument], msgspec.Meta(min_length=1, max_length=4096)] | None = None
    shell: Annotated[str, msgspec.Meta(min_length=1, extra_json_schema={"pattern": _NO_NUL})] | None = None
    #: absolute path of an existing directory (default: the daemon's home directory)
    cwd: Annotated[str, _doc(pattern=r"^/[^\x00-\x1f\x7f-\x9f]*$")] | None = None
    env: dict[EnvName, Argument] = msgspec.field(default_factory=dict)
    #: plain text (no control characters)
    title: Annotated[str, msgspec.Meta(max_length=200, extra_json_schema={"pattern": _PLAIN})] | None = None
    width: Size = 80
    height: Size = 24
    #: a unique name to address the session by, as by its id (a letter, then letters, digits, ``_.-``)
    name: Annotated[str, msgspec.Meta(pattern=SESSION_NAME_PATTERN)] | None = None
    #: run an AI coding agent by its profile name (``claude``, ``codex``, ``gemini``, or one of
    #: the configuration's) instead of ``command``/``shell``, with its hooks configured
    agent: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=40, extra_json_schema={"pattern": _PLAIN})]
        | None
    ) = None
    #: for ``agent``: the model, a prompt submitted at start, extra command-line arguments
    model: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=200, extra_json_schema={"pattern": _PLAIN})]
        | None
    ) = None
    prompt: Annotated[str, msgspec.Meta(min_length=1, extra_json_schema={"pattern": _NO_NUL})] | None = None
    args: Annotated[list[Argument], msgspec.Meta(max_length=256)] = msgspec.field(default_factory=list)
    #: resume the agent conversation of this earlier session (its agent and conversation id)
    resume: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=100, extra_json_schema={"pattern": _PLAIN})]
        | None
    ) = None
    #: what the command reads as stdin: its ``terminal`` (what ``input``/``keys`` type into), or
    #: a ``pipe`` fed once by ``PUT /v1/sessions/{id}/stdin`` (byte for byte; the body's end is
    #: the command's EOF, as is no feeder within ``timeouts.stdin_attach``); not for agents
    stdin: Literal["terminal", "pipe"] = "terminal"


class InputBody(_Body):
    """Text typed into the session (a bracketed paste when the program asked for one). Control
    characters other than newline and tab go as named keys (``/keys``)."""

    text: Annotated[str, _doc(pattern=_TYPED)]
    #: press Enter after the paste (sent separately, so the paste cannot swallow it)
    enter: bool = False


class PromptBody(_Body):
    """A prompt for the session's agent: pasted, then Enter, then verified."""

    text: Annotated[str, msgspec.Meta(min_length=1)]


class HookBody(_Body):
    """An agent's hook fired (sent by ``trio-bridge hook EVENT``)."""

    event: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class AgentOut(msgspec.Struct, kw_only=True):
    #: starting, working, waiting_for_input, idle, exited, stuck, or unknown (no hook yet)
    state: AgentStateName
    #: the agent's own conversation id and transcript, once a hook reported them
    native_id: str | None
    transcript_path: str | None
    last_event: str | None
    #: the last prompt the agent reported taking (from its prompt hook)
    last_prompt: str | None = None
    #: why it reads ``state``: the hook (``hook Stop``), the screen line (``screen: '...'``) or
    #: the action (``prompt submitted and taken``) that put it there
    evidence: str | None = None
    #: seconds since the state last changed (as this daemon saw it)
    seconds_in_state: float | None = None


class AnswerOut(msgspec.Struct, kw_only=True):
    """A final answer of a session's agent (its turn-end hook's), as the session keeps it."""

    #: its turn: 1 for the session's first answer, counting up
    turn: int
    #: the answer (cut at 1 MiB, saying so)
    text: str
    #: when it was given (seconds since the epoch)
    at: float


class SignalBody(_Body):
    """A signal for the session's command, by name (``TERM``, ``SIGTERM``, ``HUP``, ``USR1``, ...)."""

    signal: Annotated[
        str, msgspec.Meta(max_length=16, extra_json_schema={"pattern": "^(SIG)?[A-Z0-9+-]{1,13}$"})
    ]


class KeysBody(_Body):
    """Named keys pressed in order, e.g. ``["C-c"]``, ``["Up", "Enter"]``."""

    keys: Annotated[list[KeyName], msgspec.Meta(min_length=1, max_length=256)]


class _OnComputer(_Body):
    #: the computer the session lives on (default: this one; ``*`` lists all of them)
    computer: str | None = None


class ListQuery(_OnComputer):
    #: comma-separated states, e.g. ``running`` or ``exited,killed``
    state: Annotated[str, _doc(pattern=_comma_list([s.value for s in SessionState], empty=True))] | None = (
        None
    )


class WaitQuery(_OnComputer):
    #: seconds to wait at most before answering "still running"
    timeout: Annotated[float, msgspec.Meta(ge=0, le=600)] = 30.0
    #: wait for the agent's state instead (comma-separated, e.g. ``idle,waiting_for_input``;
    #: ``exited`` is also reached when the session ends)
    until: Annotated[str, _doc(pattern=_comma_list([s.value for s in AgentState], empty=False))] | None = None


class OutputQuery(_OnComputer):
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)] = 1 << 16


class AnswerQuery(_OnComputer):
    #: the turn whose answer to serve (from 1; the session's ``agent_answers`` is the last);
    #: default: the last one
    turn: Annotated[int, msgspec.Meta(ge=1, le=(1 << 53) - 1)] | None = None


class RelayQuery(_Body):
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


class StreamQuery(_OnComputer):
    #: first byte offset to send (``Last-Event-ID`` wins over it)
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


class SessionOut(msgspec.Struct, kw_only=True):
    id: str
    title: str
    command: list[str]
    cwd: str
    env_keys: list[str]
    state: StateName
    created_at: float
    ended_at: float | None
    exit_code: int | None
    exit_signal: int | None
    origin: str
    tmux_name: str
    #: the computer it runs on
    computer: str = ""
    #: agent sessions: the profile, the agent's state, its own conversation id and transcript
    agent: str | None = None
    agent_state: AgentStateName | None = None
    native_id: str | None = None
    transcript_path: str | None = None
    #: the name it was given (``new --name``), if any
    name: str | None = None
    #: agent sessions: the final answers its agent gave so far, the turn of the last one
    #: (``GET /v1/sessions/{id}/agent/answer`` serves the last 8)
    agent_answers: int = 0


def session_out(record: SessionRecord, computer: str = "") -> SessionOut:
    return SessionOut(
        id=record.id, title=record.title, command=list(record.command), cwd=record.cwd,
        env_keys=list(record.env_keys), state=str(record.state), created_at=record.created_at,
        ended_at=record.ended_at, exit_code=record.exit_code, exit_signal=record.exit_signal,
        origin=record.origin, tmux_name=record.tmux_name, computer=computer, agent=record.agent,
        agent_state=record.agent_state, native_id=record.native_id, transcript_path=record.transcript_path,
        name=record.name, agent_answers=record.agent_answers,
    )  # fmt: skip


class StdinOut(msgspec.Struct):
    """How a feed of a session's stdin pipe ended."""

    #: bytes of the body written into the pipe
    delivered: int
    #: the body's end was the command's end of input; false: the pipe was closed first (the
    #: session ended, or the daemon stops), and the rest of the body was not read
    eof: bool


class SessionList(msgspec.Struct):
    sessions: list[SessionOut]


class Screen(msgspec.Struct, omit_defaults=True):
    id: str
    text: str
    #: whether the session is running (else this is the screen kept when it ended)
    live: bool
    #: with ``escapes``: the cursor's column and row (from 0), the pane's columns and rows
    cursor: list[int] | None = None
    size: list[int] | None = None
    #: with ``escapes``: the output offset this screen shows everything before (follow from it)
    offset: int | None = None


class ScreenQuery(_OnComputer):
    #: colours and attributes as escape sequences (``capture-pane -e``), with cursor and size
    escapes: bool = False


class WaitResult(msgspec.Struct, omit_defaults=True):
    ended: bool
    session: SessionOut
    #: with ``until``: whether the agent reached one of the states asked for
    reached: bool | None = None


class EventOut(msgspec.Struct):
    kind: Annotated[str, _doc(enum=[k.value for k in EventKind])]
    session: SessionOut
    #: for ``agent`` events: the agent's new state
    agent: str | None = None

    @classmethod
    def of(cls, event: SessionEvent, computer: str = "") -> EventOut:
        agent = str(event.agent) if event.agent is not None else None
        return cls(kind=str(event.kind), session=session_out(event.record, computer), agent=agent)


class ComputerOut(msgspec.Struct, kw_only=True):
    name: str
    online: bool
    #: this daemon's own computer
    local: bool
    #: seconds since its last heartbeat
    age: float
    version: str
    capabilities: list[str]
    #: its running sessions, as of its last heartbeat
    sessions: int
    started_at: float
    host: str


class ComputerList(msgspec.Struct):
    computers: list[ComputerOut]
    #: whether this daemon is part of a Redis mesh
    mesh: bool
    #: whether the mesh's messages are signed (a mesh secret is set); false without a mesh
    signed: bool = False


class Health(msgspec.Struct):
    status: str


class Version(msgspec.Struct):
    version: str
    api: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    #: ``offset_dropped`` (410) only: the first offset the log still holds (ask from there)
    first_offset: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Error(msgspec.Struct):
    error: ErrorBody
