"""How a command ends: its exit codes, and :class:`Exit` to end it from anywhere with one line.

The codes are the contract with scripts (README: "Exit codes"): 0 done; 1 the daemon refused;
2 usage or configuration; 3 no daemon answers; 4 ``prompt`` queued; 75 the daemon went away and
did not come back; 124 a timeout; 125-127 as ``docker run`` and the shell; 128+N signal N.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "EXIT_DAEMON_LOST",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "EXIT_QUEUED",
    "EXIT_REFUSED",
    "EXIT_START_FAILED",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Exit",
    "exit_status",
]

EXIT_REFUSED = 1  # the daemon refused (unknown session, ended session, bad input): its message is printed
EXIT_USAGE = 2  # usage or configuration
EXIT_UNAVAILABLE = 3  # no daemon answers
#: ``prompt``: the busy agent queued the prompt (it will run when its turn ends: do not resend)
EXIT_QUEUED = 4
#: the daemon went away and did not come back within ``reconnect_timeout`` (sysexits'
#: EX_TEMPFAIL: the session itself goes on; following it again later works)
EXIT_DAEMON_LOST = 75
EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_START_FAILED = 125  # trio-bridge itself could not run CMD
EXIT_NOT_EXECUTABLE = 126  # as the shell
EXIT_NOT_FOUND = 127  # as the shell
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT


class Exit(Exception):
    """End the command with ``code``, printing ``message`` (if any) as one ``trio-bridge:`` line
    on stderr; :func:`trio_bridge.cli.main` is the one place that catches it."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or f"exit {code}")
        self.code = code
        self.message = message


def exit_status(session: Mapping[str, Any]) -> int:
    """The exit code a command reports for an ended session (as ``run``: 128+N for signal N)."""
    if session.get("exit_signal"):
        return 128 + int(session["exit_signal"])
    code = session.get("exit_code")
    return int(code) if code is not None else EXIT_REFUSED
