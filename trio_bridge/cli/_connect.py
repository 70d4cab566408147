"""Opening the daemon's client: one way for every command (the client commands through
``dispatch``, ``attach``, ``web``, the completers), with the daemon's failures translated into
exit codes and one line at this one boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..client import ApiError, Client, DaemonUnavailableError, import_without
from ._exit import EXIT_DAEMON_LOST, EXIT_INTERRUPTED, EXIT_REFUSED, EXIT_UNAVAILABLE, Exit
from ._resume import DaemonLostError

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["CommandClient", "open_client", "resolve_id"]


class CommandClient(Client):
    """The daemon's client opened from a command's settings, which it keeps (``send``'s raw
    bytes go through the session's WebSocket, which needs them too)."""

    def __init__(self, settings: Settings, computer: str | None = None) -> None:
        super().__init__(
            settings.api_socket, settings.url, settings.client_token(), computer,
            reconnect_timeout=settings.reconnect_timeout,
        )  # fmt: skip
        self.settings = settings


@contextmanager
def open_client(settings: Settings, computer: str | None = None) -> Iterator[CommandClient]:
    """A client of the daemon that ``settings`` name (on ``computer``'s sessions), closed after.

    Raises:
        Exit: no daemon answers (3), it refused (1), it went away and did not come back (75),
            Ctrl-C (130).
    """
    _import_httpcore_without_async_libraries()
    try:
        with CommandClient(settings, computer) as client:
            yield client
    except DaemonUnavailableError as exc:
        raise Exit(EXIT_UNAVAILABLE, str(exc)) from None
    except ApiError as exc:
        raise Exit(EXIT_REFUSED, exc.message) from None
    except DaemonLostError as exc:
        raise Exit(EXIT_DAEMON_LOST, str(exc)) from None
    except KeyboardInterrupt:
        raise Exit(EXIT_INTERRUPTED) from None


def resolve_id(client: Client, ref: str) -> str:
    """The session ``ref`` names: an id, a name (``new --name``), or a unique prefix of an id
    (as docker's), in that order. Raises
    ApiError: no such session, or a prefix that several ids share (they are listed)."""
    if getattr(client, "computer", None) == "*":
        return ref
    sessions = client.sessions()
    ids = [str(s["id"]) for s in sessions]
    if ref in ids:
        return ref
    named = [str(s["id"]) for s in sessions if s.get("name") == ref]
    if named:
        return named[0]  # names are unique
    matches = [i for i in ids if i.startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ApiError(
            409, "ambiguous_id", f"{ref!r} is the start of several sessions: {', '.join(sorted(matches))}"
        )
    return ref  # the daemon's "no session" answer, as for any unknown id


def _import_httpcore_without_async_libraries() -> None:
    """Import httpcore without letting it import trio, anyio and h2.

    httpcore imports them when installed: trio and anyio for its async locks, h2 for HTTP/2.
    That costs ~180 ms of a command's start-up (measured: ``ls`` 480 -> 300 ms). These
    commands are synchronous, speak HTTP/1.1, and never use httpcore's async side in this
    process. Skipped when any of them is already loaded.
    """
    import_without("httpcore", ("trio", "anyio", "h2"))
