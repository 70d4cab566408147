"""The session manager's errors (what its callers, the API and the bot, translate)."""

from __future__ import annotations

from .store import SessionRecord

__all__ = [
    "HubHungError", "HubLostError", "NoStdinPipeError", "NotAnAgentError", "PromptBoxNotEmptyError",
    "PromptNotConfirmedError", "PromptQueuedError", "SessionEndedError", "StdinBusyError",
    "StdinClosedError", "UnknownAgentError", "UnknownSessionError",
]  # fmt: skip


class HubLostError(RuntimeError):
    """The hub's control client ended; the manager must be restarted (it re-adopts)."""


class HubHungError(HubLostError):
    """tmux did not answer a command of the hub's control client in time (the server is hung):
    the manager must be restarted (once tmux answers again, it re-adopts; no session is lost)."""


class UnknownSessionError(KeyError):
    """No session with this id is known."""

    def __str__(self) -> str:
        return f"no session {self.args[0]!r}"


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


class SessionEndedError(RuntimeError):
    """The session has ended: it takes no more input."""

    def __init__(self, record: SessionRecord) -> None:
        self.record = record
        super().__init__(f"session {record.id} has ended ({record.state})")


class NoStdinPipeError(RuntimeError):
    """The session was not started with a stdin pipe (its command reads its terminal), or
    not by this daemon process (a pipe does not survive a restart)."""


class StdinBusyError(RuntimeError):
    """The session's stdin pipe has a feeder already (one at a time, one in all)."""


class StdinClosedError(RuntimeError):
    """The session's stdin pipe is closed: its command got EOF (a feeder came and went, or
    none came within ``timeouts.stdin_attach``)."""
