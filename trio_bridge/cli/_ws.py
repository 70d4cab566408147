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


@asynccontextmanager
async def open_session_socket(
    settings: Settings, session_id: str, **query: object
) -> AsyncIterator[WebSocketConnection]:
    """Connect to the session's WebSocket on the daemon (unix socket, or ``settings.url``).

    Owns the connection's background task (trio-websocket's reader); closes it on exit.

    Raises:
        OSError: nothing listens there.
        trio_websocket.ConnectionRejected: the daemon refused (unknown session: 404).
    """
    resource = f"/v1/sessions/{session_id}/ws"
    if query:
        resource += "?" + urlencode({k: str(v) for k, v in query.items()})
    token = settings.client_token()
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    if settings.url:
        url = "ws" + settings.url.removeprefix("http") + resource
        async with open_websocket_url(url, extra_headers=headers) as ws:
            yield ws
        return
    stream = await trio.open_unix_socket(str(settings.api_socket))
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, "localhost", resource, extra_headers=headers)
        try:
            yield ws
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await ws.aclose()
            nursery.cancel_scope.cancel()


def control_message(message: str) -> dict[str, Any]:
    """A text message from the daemon, as a dict (``{"type": ...}``)."""
    value = json.loads(message)
    return value if isinstance(value, dict) else {"type": "invalid"}
