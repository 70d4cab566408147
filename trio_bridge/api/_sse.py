"""Server-Sent Events: the encoding, and the response whose events a producer task feeds.

:func:`sse_response` is every SSE route's response: a producer task in the server's stream
nursery feeds a small memory channel that the response body only drains (see
:class:`ApiContext`). :func:`stream_output` is the one path of session output to SSE, from any
:class:`OutputSource` (a local :class:`~trio_bridge.output.OutputFeed`, or another computer's
session through the mesh): ``output`` events whose ids are offsets, ``resync``, then ``end``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Protocol

import trio
from quart import Response, request

from ..output import Chunk, Resync
from ._context import ApiContext, ApiError

__all__ = [
    "OutputSource", "Producer", "SseOutput", "cancel_on", "sse_event", "sse_head", "sse_response",
    "stream_output",
]  # fmt: skip

log = logging.getLogger("trio_bridge.api")

#: an SSE comment this often keeps idle streams alive through proxies
_KEEPALIVE = 15.0

#: writes a stream's events into the channel it is given, until the stream ends
Producer = Callable[[trio.MemorySendChannel[bytes]], Awaitable[None]]


class OutputSource(Protocol):
    """Session output from an offset: what :func:`stream_output` serves (``OutputFeed``, or a
    relay of another computer's session). ``follow`` is an async generator (closed when the
    stream ends early) and ends when the session's output does."""

    def follow(self, start: int) -> AsyncGenerator[Chunk | Resync, None]: ...


def sse_event(event: str, data: str, event_id: int | str | None = None) -> bytes:
    """One event, encoded."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def _utf8_cut(data: bytes) -> int:
    """Where ``data`` stops being whole UTF-8 characters (an incomplete last one waits)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII)
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return len(data) - back if back < need and byte >= 0xC0 else len(data)
    return len(data)


class SseOutput:
    """Output bytes -> SSE ``output`` events whose ids are offsets, never splitting a UTF-8
    character (an incomplete last one waits for the next bytes)."""

    def __init__(self, start: int) -> None:
        self._pending = b""
        self._offset = start

    def feed(self, offset: int, data: bytes) -> bytes:
        if offset != self._offset + len(self._pending):
            self._pending, self._offset = b"", offset  # after a resync
        data = self._pending + data
        cut = _utf8_cut(data)
        start = self._offset
        self._pending, self._offset = data[cut:], start + cut
        if not cut:
            return b""
        text = data[:cut].decode("utf-8", "replace")
        return sse_event("output", json.dumps({"offset": start, "data": text}), start + cut)

    def resync(self, requested: int, offset: int) -> bytes:
        self._pending, self._offset = b"", offset
        return sse_event("resync", json.dumps({"requested": requested, "offset": offset}), offset)

    def flush(self) -> bytes:
        if not self._pending:
            return b""
        text = self._pending.decode("utf-8", "replace")
        event = sse_event(
            "output", json.dumps({"offset": self._offset, "data": text}), self._offset + len(self._pending)
        )
        self._offset += len(self._pending)
        self._pending = b""
        return event


async def _output_events(source: OutputSource, start: int) -> AsyncGenerator[bytes, None]:
    encoder = SseOutput(start)
    async with aclosing(source.follow(start)) as chunks:
        async for item in chunks:
            if isinstance(item, Resync):
                yield encoder.resync(item.requested, item.offset)
                continue
            assert isinstance(item, Chunk)
            if event := encoder.feed(item.offset, item.data):
                yield event
    if event := encoder.flush():
        yield event


def stream_output(
    context: ApiContext, source: OutputSource, start: int, end: Callable[[], Awaitable[str]]
) -> Response:
    """Session output from ``start`` as SSE: ``output`` and ``resync`` events while ``source``
    follows, then ``end`` with the JSON data ``end()`` gives (the final session record)."""

    async def produce(send: trio.MemorySendChannel[bytes]) -> None:
        async with aclosing(_output_events(source, start)) as events:
            async for event in events:
                await send.send(event)
        await send.send(sse_event("end", await end()))

    return sse_response(context, produce)


def sse_response(context: ApiContext, produce: Producer) -> Response:
    """A streaming response whose events come from ``produce``, run in the server's stream
    nursery: when the server stops, it is cancelled and the stream ends with ``shutdown``;
    when the client goes away, the response body is closed and it is cancelled at once (not
    only at its next write: a quiet session would keep a reader for a keepalive period).

    Raises:
        ApiError: 503 ``shutting_down`` once the server stops.
    """
    if request.method == "HEAD":
        return sse_head(context)
    if context.streams is None or context.stopping.is_set():
        raise ApiError(503, "shutting_down", "the daemon is shutting down")
    send, receive = trio.open_memory_channel[bytes](16)
    client_gone = trio.CancelScope()

    async def run() -> None:
        with client_gone, send:
            context.open_streams += 1
            try:
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(cancel_on, context.stopping, scope)
                        nursery.start_soon(_keepalive, send)
                        await produce(send)
                        nursery.cancel_scope.cancel()
                if scope.cancelled_caught:
                    with trio.move_on_after(1):
                        await send.send(sse_event("shutdown", "{}"))
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away
            except* Exception as group:
                # One stream's failure ends that stream, never the server's other streams.
                log.error("an event stream failed", exc_info=group)  # noqa: TRY400
            finally:
                context.open_streams -= 1

    context.streams.start_soon(run)

    async def body() -> AsyncIterator[bytes]:
        try:
            async with receive:
                async for event in receive:
                    yield event
        finally:
            client_gone.cancel()

    response = Response(body(), content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None
    return response


def sse_head(context: ApiContext) -> Response:
    """HEAD on a stream: its headers, and no stream (which would never end)."""
    if context.streams is None or context.stopping.is_set():
        raise ApiError(503, "shutting_down", "the daemon is shutting down")
    response = Response(b"", content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    return response


async def cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` once ``event`` is set."""
    await event.wait()
    scope.cancel()


async def _keepalive(send: trio.MemorySendChannel[bytes]) -> None:
    while True:
        await trio.sleep(_KEEPALIVE)
        await send.send(b": keepalive\n\n")
