"""The client side of a session's WebSocket (``/v1/sessions/{id}/ws``), for `run` and `attach`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import trio
from trio_websocket import WebSocketConnection, open_websocket_url, wrap_client_stream

from ..config import Settings
from ._text import StdoutClosedError

#: seconds to connect and complete the WebSocket handshake (a connection accepted by a daemon
#: that is shutting down may never be answered: trio-websocket would wait forever)
CONNECT_TIMEOUT = 5.0
#: seconds the closing handshake may take
_CLOSE_TIMEOUT = 2.0


@asynccontextmanager
async def open_session_socket(
    settings: Settings, session_id: str, **query: object
) -> AsyncIterator[WebSocketConnection]:
    """Connect to the session's WebSocket on the daemon (unix socket, or ``settings.url``).

    Owns the connection's background task (trio-websocket's reader); closes it on exit.

    Raises:
        OSError: nothing listens there.
        trio_websocket.ConnectionRejected: the daemon refused (unknown session: 404).
        trio.TooSlowError: no handshake within :data:`CONNECT_TIMEOUT`.
    """
    resource = f"/v1/sessions/{session_id}/ws"
    if query:
        resource += "?" + urlencode({k: str(v) for k, v in query.items()})
    token = settings.client_token()
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    if settings.url:
        url = "ws" + settings.url.removeprefix("http") + resource
        async with open_websocket_url(
            url, extra_headers=headers, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=_CLOSE_TIMEOUT
        ) as ws:
            yield ws
        return
    async with trio.open_nursery() as nursery:
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await trio.open_unix_socket(str(settings.api_socket))
            ws = await wrap_client_stream(nursery, stream, "localhost", resource, extra_headers=headers)
        try:
            yield ws
        except BaseException:
            # Leaving early (Ctrl-C, --timeout, a failure): no closing handshake to wait for (the
            # daemon may take a while to answer it, and the caller has more urgent work: kill).
            await trio.aclose_forcefully(stream)
            raise
        else:
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
                await ws.aclose()
        finally:
            nursery.cancel_scope.cancel()


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception of a group) means the connection to the daemon went
    away, rather than an answer (404: no such session) or a failure of our own."""
    from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

    if isinstance(exc, BaseExceptionGroup):
        return all(connection_lost(e) for e in exc.exceptions)
    if isinstance(exc, ConnectionRejected):
        return exc.status_code >= 500
    if isinstance(exc, StdoutClosedError):
        return False
    return isinstance(
        exc,
        ConnectionClosed
        | HandshakeError
        | OSError
        | trio.BrokenResourceError
        | trio.ClosedResourceError
        | trio.TooSlowError,
    )


def send_bytes(settings: Settings, session_id: str, data: bytes) -> None:
    """Type ``data`` into the session byte for byte (through its WebSocket, as ``attach``
    does); returns once the daemon has passed them to tmux.

    Raises:
        ApiError (from trio_bridge.client): the daemon answered with an error.
        OSError, trio_websocket.HandshakeError, ConnectionClosed: the connection failed.
    """
    from ..client import ApiError

    async def send() -> None:
        async with open_session_socket(settings, session_id, offset="end") as ws:
            await ws.send_message(data)
            # The daemon handles a socket's messages in order: its answer to this one says
            # the bytes before it went to tmux.
            await ws.send_message(json.dumps({"type": "sync"}))
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    continue
                control = control_message(message)
                if control["type"] == "synced":
                    return
                if control["type"] == "error":
                    raise ApiError(409, "input_failed", str(control.get("message")))
                if control["type"] == "end":
                    raise ApiError(409, "session_ended", f"session {session_id} has ended")

    trio.run(send)


def control_message(message: str) -> dict[str, Any]:
    """A text message from the daemon, as a dict (``{"type": ...}``)."""
    value = json.loads(message)
    return value if isinstance(value, dict) else {"type": "invalid"}


def first_leaf(exc: BaseException) -> BaseException:
    """The exception itself, or the first of a group's (the WebSocket's nursery wraps them)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
