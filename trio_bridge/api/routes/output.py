"""A session's output at rest: the rendered screen and byte ranges of its log (the live
streams are in :mod:`.streams`)."""

from __future__ import annotations

import contextlib

import trio
from quart import Response
from quart_schema import document_response, validate_querystring
from quart_trio import QuartTrio

from ...output.log import OffsetDroppedError
from ...sessions import SessionManager, SessionRecord
from ...tmux import TmuxError
from .._context import API_VERSION, ApiContext, ApiError, json_response
from .._models import OutputQuery, Screen, ScreenQuery
from .._openapi import raw_response

__all__ = ["register"]


def register(app: QuartTrio, context: ApiContext) -> None:
    """Add the screen and output routes to ``app``."""
    manager = context.manager

    @app.get(f"/{API_VERSION}/sessions/<session_id>/screen")
    @validate_querystring(ScreenQuery)
    @document_response(Screen)
    async def screen(session_id: str, query_args: ScreenQuery) -> Response:
        """The rendered screen (the last one kept, once the session ended). ``escapes=true``:
        with colours and attributes as escape sequences (``capture-pane -e``), the cursor, the
        size and the output offset it shows everything before (follow the output from there),
        while the session runs (the kept screen is plain text)."""
        record = await manager.get(session_id)
        if query_args.escapes and not record.state.ended:
            with contextlib.suppress(TmuxError):  # it ended just now: the kept screen
                return json_response(await _ansi_screen(manager, record))
        text = await manager.screen(session_id)
        return json_response(Screen(id=record.id, text=text, live=not record.state.ended))

    @app.get(f"/{API_VERSION}/sessions/<session_id>/output")
    @validate_querystring(OutputQuery)
    @raw_response(200, "application/octet-stream", "output bytes")
    async def output(session_id: str, query_args: OutputQuery) -> Response:
        """Raw output bytes from ``offset`` (at most ``limit``). Headers: ``X-Output-Offset``
        (first byte's offset), ``X-Output-Next`` (offset to ask for next), ``X-Output-End``
        (bytes written so far), ``X-Output-Complete`` (``true`` once the session ended and
        the log is whole). An offset that retention dropped: 410 ``offset_dropped``, whose
        error carries ``first_offset``, the first byte the log still holds."""
        await manager.get(session_id)
        feed = manager.feed(session_id)
        log_ = feed.log
        try:
            data = await trio.to_thread.run_sync(log_.read, query_args.offset, query_args.limit)
        except OffsetDroppedError as exc:
            raise ApiError(410, "offset_dropped", str(exc), first_offset=exc.first_offset) from None
        end = await trio.to_thread.run_sync(log_.end_offset)
        headers = {
            "X-Output-Offset": str(query_args.offset),
            "X-Output-Next": str(query_args.offset + len(data)),
            # read after the data: it is never short of what was just read
            "X-Output-End": str(end),
            "X-Output-Complete": "true" if feed.closed else "false",
        }
        return Response(data, content_type="application/octet-stream", headers=headers)


async def _ansi_screen(manager: SessionManager, record: SessionRecord) -> Screen:
    """The running session's screen with its escapes, cursor and size, and the output offset it
    shows everything before: a client seeded with it follows from there, nothing lost or shown
    twice. Exact when the output stood still for the capture (tried a few times); under
    continuous output, the latest offset (raises TmuxError)."""
    log_ = manager.feed(record.id).log
    for _ in range(5):
        before = await trio.to_thread.run_sync(log_.end_offset)
        fields = await manager.server.display(
            record.tmux_name, "#{cursor_x}", "#{cursor_y}", "#{pane_width}", "#{pane_height}"
        )
        text = await manager.server.capture(record.tmux_name, escapes=True)
        # The log (written through pipe-pane) trails the screen by a moment.
        await trio.sleep(0.02)
        offset = await trio.to_thread.run_sync(log_.end_offset)
        if offset == before:
            break
    x, y, width, height = (int(f) for f in fields)
    return Screen(id=record.id, text=text, live=True, cursor=[x, y], size=[width, height], offset=offset)
