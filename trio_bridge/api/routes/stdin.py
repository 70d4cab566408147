"""A session's stdin pipe: ``PUT /v1/sessions/{id}/stdin`` streams the body into it."""

from __future__ import annotations

import trio
from quart import Response, request
from quart_schema import document_response
from quart_trio import QuartTrio

from ...sessions import StdinPipe
from .._context import API_VERSION, ApiContext, ApiError, json_response
from .._models import StdinOut
from .._openapi import raw_request

__all__ = ["register"]


def register(app: QuartTrio, context: ApiContext) -> None:
    """Add the stdin route to ``app``."""
    manager = context.manager

    @app.put(f"/{API_VERSION}/sessions/<session_id>/stdin")
    @raw_request("application/octet-stream", "bytes for the command's stdin, of any length (chunked)")
    @document_response(StdinOut)
    async def feed_stdin(session_id: str) -> Response:
        """Stream the body into the stdin pipe of a session created with ``"stdin": "pipe"``:
        byte for byte, as fast as the command reads (the body is read only as the pipe takes
        it), and the body's end is the command's EOF. One feeder per session, once: 409
        ``no_stdin_pipe``, ``stdin_busy`` (another feeder has it), ``stdin_closed`` (a feeder
        came and went, or none came within ``timeouts.stdin_attach``: the command got EOF).
        A connection that drops closes the pipe too. Answers when the pipe is closed: ``eof``
        false if it was closed before the body ended (the session ended, or the daemon stops)."""
        if request.mimetype not in ("", "application/octet-stream"):
            raise ApiError(
                415, "unsupported_media_type",
                f"stdin is raw bytes (application/octet-stream), not {request.mimetype}",
            )  # fmt: skip
        pipe = await manager.stdin_pipe(session_id)
        pipe.claim()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_close_on, context.stopping, pipe)
                fed = await pipe.feed(request.body)
                nursery.cancel_scope.cancel()
        finally:
            pipe.close()  # (feed closes it; this also if the request ends before it ran)
        return json_response(StdinOut(delivered=fed.delivered, eof=fed.eof))


async def _close_on(event: trio.Event, pipe: StdinPipe) -> None:
    """Close ``pipe`` once ``event`` is set (the daemon stops: its feeder answers)."""
    await event.wait()
    pipe.close()
