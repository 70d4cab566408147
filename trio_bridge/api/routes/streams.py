"""Live streams: a session's output as Server-Sent Events, the lifecycle events, and a
session's WebSocket (served by :mod:`.._websocket`)."""

from __future__ import annotations

import msgspec
import trio
from quart import Response, request, websocket
from quart_schema import validate_querystring
from quart_trio import QuartTrio

from ...sessions.manager import EventKind
from .._context import API_VERSION, ApiContext, ApiError, final_record
from .._http import is_offset
from .._models import EventOut, StreamQuery, session_out
from .._openapi import raw_response
from .._sse import sse_event, sse_head, sse_response, stream_output
from .._websocket import serve_session_ws

__all__ = ["register"]


def register(app: QuartTrio, context: ApiContext) -> None:
    """Add the stream routes to ``app``."""
    manager = context.manager

    @app.get(f"/{API_VERSION}/sessions/<session_id>/stream")
    @validate_querystring(StreamQuery)
    @raw_response(200, "text/event-stream", "Server-Sent Events", ["output", "resync", "end", "shutdown"])
    async def stream(session_id: str, query_args: StreamQuery) -> Response:
        """Output as Server-Sent Events. Each ``output`` event's data is JSON ``{"offset",
        "data"}`` (UTF-8 text; a character split between reads waits for its end) and its id
        is the offset after it, so reconnecting with ``Last-Event-ID`` resumes exactly there.
        ``resync`` says output was dropped by retention; ``end`` carries the final session record;
        ``shutdown`` says the daemon is stopping (reconnect later)."""
        await manager.get(session_id)
        start = query_args.offset
        last_id = request.headers.get("Last-Event-ID")
        if last_id is not None:
            if not is_offset(last_id):
                raise ApiError(
                    400, "invalid_last_event_id", f"Last-Event-ID must be an offset, not {last_id!r}"
                )
            start = int(last_id)

        async def end() -> str:
            record = await final_record(manager, session_id)
            return msgspec.json.encode(session_out(record, context.computer_name)).decode()

        return stream_output(context, manager.feed(session_id), start, end)

    @app.get(f"/{API_VERSION}/events")
    @raw_response(
        200,
        "text/event-stream",
        "Server-Sent Events",
        [*(k.value for k in EventKind), "overflow", "shutdown"],
    )
    async def events() -> Response:
        """Session lifecycle events as Server-Sent Events (``created``, ``running``,
        ``exited``, ``killed``, ``lost``, ``adopted``), from now on; each with an id, so that
        reconnecting with ``Last-Event-ID`` resumes after it (a ``resync`` event first says
        that the events missed could not all be replayed: look at the records). A client that
        falls far behind gets ``overflow`` and the stream ends."""
        # Subscribed before answering: a client that sees the response can count on every
        # event after it.
        if request.method == "HEAD":
            return sse_head(context)
        last_id = request.headers.get("Last-Event-ID")
        subscription, complete = manager.subscribe_after(last_id[:64] if last_id is not None else None)

        async def produce(send: trio.MemorySendChannel[bytes]) -> None:
            if not complete:
                await send.send(sse_event("resync", "{}"))
            async with subscription:
                async for event in subscription:
                    await send.send(
                        sse_event(
                            str(event.kind),
                            msgspec.json.encode(EventOut.of(event, context.computer_name)).decode(),
                            event.id,
                        )
                    )
            await send.send(sse_event("overflow", "{}"))

        try:
            return sse_response(context, produce)
        except ApiError:
            subscription.close()
            raise

    @app.websocket(f"/{API_VERSION}/sessions/<session_id>/ws")
    async def session_ws(session_id: str) -> None:
        """Output out (binary messages, raw bytes) and input in (binary: raw bytes typed as
        keys; text: JSON ``{"type": "input", "text", "enter"}`` or ``{"type": "keys",
        "keys"}``). The first message is JSON ``{"type": "hello", "offset", "session"}``;
        ``?offset=N`` starts there, ``?offset=end`` at the end, ``?screen=1`` sends the
        rendered screen first as ``{"type": "screen", "text"}``. When the session ends:
        ``{"type": "end", "session"}`` and close code 1000; when the daemon stops: 1001."""
        record = await manager.get(session_id)
        feed = manager.feed(session_id)
        await websocket.accept()
        context.open_streams += 1
        try:
            await serve_session_ws(context, record.id, feed)
        finally:
            context.open_streams -= 1
