"""Reconnecting to a daemon that went away (restarted, or stopped for a while).

The clients that follow a session (``run`` through the daemon, ``tail -f``, ``wait``,
``attach``) keep the offset of the last output byte they received; when the connection drops
they reconnect with a growing delay, for up to ``reconnect_timeout`` seconds, and resume at that
offset: no gap, no duplicate. They say once on stderr that they are reconnecting; past the bound
they exit with :data:`EXIT_DAEMON_LOST` and one line.
"""

from __future__ import annotations

import sys
import time

from .._backoff import Backoff
from ._exit import EXIT_DAEMON_LOST

__all__ = ["EXIT_DAEMON_LOST", "DaemonLostError", "Reconnect"]

_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0


class DaemonLostError(Exception):
    """The daemon did not come back within the bound (the message is one line)."""


class Reconnect:
    """The backoff and the bound of one client's reconnections (clock: ``time.monotonic``, so
    that it serves synchronous and Trio code alike)."""

    def __init__(self, bound: float, what: str, *, line_end: str = "\n") -> None:
        self.bound = bound
        #: "\r\n" for a terminal in raw mode
        self.line_end = line_end
        #: what the client was doing, for the final message ("following session X")
        self.what = what
        #: a connection worked once (before that, no daemon is no daemon: nothing to wait for)
        self.ever_connected = False
        self._lost_at: float | None = None
        self._delays = Backoff(_FIRST_DELAY, _MAX_DELAY)
        self._said = False

    def connected(self) -> None:
        """A connection works again: the next loss starts a new bound and a short delay."""
        self.ever_connected = True
        self._lost_at = None
        self._delays.reset()
        self._said = False

    def reached(self, failure: BaseException) -> None:
        """A request failed after its connection was made (a reset, a cut stream): there was a
        daemon, so its absence from now on is a restart to wait for."""
        from .. import client

        if not isinstance(failure, client.DaemonUnavailableError):
            self.ever_connected = True

    def why_lost(self, failure: Exception) -> str:
        """Why a synchronous client's request failed, when that is the daemon going away (to
        resume after :meth:`lost`); any other failure is raised again.

        Raises:
            the failure itself: a refusal (an ApiError below 502), or no daemon at all before
            a connection ever worked (nothing to come back).
        """
        import httpx

        from .. import client

        if isinstance(failure, client.ApiError):
            if failure.status < 502:
                raise failure
            return failure.message
        if isinstance(failure, client.DaemonUnavailableError):
            if not self.ever_connected:
                raise failure
            return "not running"
        if isinstance(failure, httpx.TransportError):
            self.reached(failure)
            return type(failure).__name__
        raise failure

    def lost(self, reason: object = None) -> float:
        """The connection failed: the seconds to wait before the next try.

        Raises:
            DaemonLostError: ``bound`` seconds have passed since the connection was lost.
        """
        now = time.monotonic()
        if self._lost_at is None:
            self._lost_at = now
        if not self._said:
            self._said = True
            why = f" ({reason})" if reason else ""
            print(
                f"trio-bridge: the daemon went away{why}; reconnecting (for up to {self.bound:g} s)",
                file=sys.stderr,
                end=self.line_end,
                flush=True,
            )
        left = self._lost_at + self.bound - now
        if left <= 0:
            raise DaemonLostError(
                f"the daemon did not come back within {self.bound:g} s; gave up {self.what}"
            )
        return min(self._delays.next(), left)
