"""Request bodies read as they come, with backpressure (``PUT /v1/sessions/{id}/stdin``).

Quart reads a request's body into memory as fast as the client sends it (its ASGI connection's
message loop never waits), refusing it (413) past ``MAX_CONTENT_LENGTH``: right for the JSON
bodies, wrong for a stream of any length that goes only as fast as a command reads it. For a
streamed route (:func:`is_streamed`) the body is a :class:`StreamedBody`: no size limit, and
:class:`StreamingConnection` asks hypercorn for the next piece only once the route has taken
what was there (at most :data:`HIGH_WATER` bytes wait). hypercorn then stops reading the socket
(its queue to the application holds a few messages), and TCP's flow control holds the client.
"""

from __future__ import annotations

import re
from typing import Any

import trio
from quart import Request
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody

from ._context import API_VERSION

__all__ = ["HIGH_WATER", "StreamedBody", "StreamingConnection", "is_streamed"]

#: body bytes that may wait for the route before the connection stops reading
HIGH_WATER = 64 << 10

_STREAMED = re.compile(f"/{API_VERSION}/sessions/[^/]+/stdin")


def is_streamed(method: str, path: str) -> bool:
    """Whether the request's body is streamed (:class:`StreamedBody`)."""
    return method == "PUT" and _STREAMED.fullmatch(path) is not None


class StreamedBody(TrioBody):
    """A body the route reads as it comes (``async for chunk in request.body``), of any size;
    the connection's :meth:`put` waits while the route has not taken what is there."""

    def __init__(self, expected_content_length: int | None) -> None:
        super().__init__(expected_content_length, None)
        self._taken = trio.Event()

    async def put(self, data: bytes) -> None:
        """Add ``data``; return once less than :data:`HIGH_WATER` bytes wait for the route."""
        self.append(data)
        while len(self._data) >= HIGH_WATER:
            self._taken = trio.Event()
            await self._taken.wait()

    async def __anext__(self) -> bytes:
        data = await super().__anext__()
        self._taken.set()
        return data


class StreamingConnection(TrioASGIHTTPConnection):
    """quart-trio's HTTP connection, with a :class:`StreamedBody` for the streamed routes."""

    def _create_request_from_scope(self, send: Any) -> Request:
        request = super()._create_request_from_scope(send)
        if is_streamed(request.method, request.path):
            request.body = StreamedBody(request.content_length)
        return request

    async def handle_messages(self, nursery: trio.Nursery, request: Request, receive: Any) -> None:  # type: ignore[override]
        body = request.body
        if not isinstance(body, StreamedBody):
            await super().handle_messages(nursery, request, receive)
            return
        while True:
            message = await receive()
            if message["type"] == "http.request":
                await body.put(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
            elif message["type"] == "http.disconnect":
                break
        # (the client went away: the route is cancelled, as quart-trio does)
        nursery.cancel_scope.cancel()
