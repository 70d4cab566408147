"""A session's WebSocket (``GET /v1/sessions/{id}/ws``): output out as binary messages, input
in (raw bytes as keystrokes; JSON commands), one connection's three tasks in one nursery."""

from __future__ import annotations

import contextlib
import json
from contextlib import aclosing

import msgspec
import trio
from quart import websocket

from ..output import Chunk, OutputFeed, Resync
from ..sessions.manager import SessionEndedError
from ..tmux import InvalidKeyError, InvalidTextError, TmuxTimeoutError
from ._context import ApiContext, ApiError, final_record
from ._http import MAX_JSON_DEPTH, is_offset, too_deep
from ._models import session_out

__all__ = ["serve_session_ws"]


async def serve_session_ws(context: ApiContext, session_id: str, feed: OutputFeed) -> None:
    """Serve one accepted WebSocket until the session ends (close 1000), the daemon stops
    (1001) or the client goes; a bad ``offset``, ``width`` or ``height`` closes it with 1008."""
    manager = context.manager
    args = websocket.args
    offset_arg = args.get("offset", "0")
    start: int | None = None  # ("end": measured once the first screen is taken, below)
    if is_offset(offset_arg):
        start = int(offset_arg)
    elif offset_arg != "end":
        await websocket.send(json.dumps({"type": "error", "message": f"bad offset {offset_arg!r}"}))
        await websocket.close(1008)
        return
    sized = "width" in args or "height" in args
    size = [args.get("width", ""), args.get("height", "")]
    size_error = None
    if sized and not all(n.isdigit() and 2 <= int(n) <= 1000 for n in size):
        size_error = "width and height: 2 to 1000"
    record = await manager.get(session_id)
    if sized and size_error is None and not record.state.ended:
        # the attaching terminal's size, before its first screen is drawn (as tmux's attach)
        with contextlib.suppress(SessionEndedError):
            await manager.resize(session_id, int(size[0]), int(size[1]))
    screen: dict[str, object] | None = None
    if size_error is None and args.get("screen") in ("1", "true"):
        screen = {"type": "screen", "text": await manager.screen(session_id)}
        if (cursor := await manager.cursor(session_id)) is not None:
            screen["cursor"] = list(cursor)  # where the client puts its cursor after drawing
    if start is None:
        # After the screen, not before: what the program printed in between (e.g. its answer to
        # the resize's SIGWINCH) is in the screen already, and streamed again from an earlier
        # offset it would be drawn twice (the cursor a line too low).
        start = await trio.to_thread.run_sync(feed.log.end_offset)
    await websocket.send(
        json.dumps(
            {
                "type": "hello",
                "offset": start,
                "session": msgspec.to_builtins(session_out(record, context.computer_name)),
            }
        )
    )
    if size_error is not None:
        await websocket.send(json.dumps({"type": "error", "message": size_error}))
        await websocket.close(1008)
        return
    if screen is not None:
        await websocket.send(json.dumps(screen))

    async def pump_output(done: trio.CancelScope) -> None:
        async with aclosing(feed.follow(start)) as chunks:
            async for item in chunks:
                if isinstance(item, Resync):
                    await websocket.send(
                        json.dumps({"type": "resync", "requested": item.requested, "offset": item.offset})
                    )
                    continue
                assert isinstance(item, Chunk)
                await websocket.send(item.data)
        final = await final_record(manager, session_id)
        await websocket.send(
            json.dumps(
                {"type": "end", "session": msgspec.to_builtins(session_out(final, context.computer_name))}
            )
        )
        await websocket.close(1000)
        done.cancel()

    async def take_input() -> None:
        while True:
            message = await websocket.receive()
            try:
                if isinstance(message, bytes):
                    await manager.send_bytes(session_id, message)
                    continue
                await _ws_command(context, session_id, message)
            except SessionEndedError:
                return  # the output side says so and closes
            except (ApiError, InvalidTextError, InvalidKeyError, TmuxTimeoutError) as exc:
                await websocket.send(json.dumps({"type": "error", "message": str(exc)}))

    async def stop_on_shutdown(done: trio.CancelScope) -> None:
        await context.stopping.wait()
        await websocket.close(1001, "the daemon is shutting down")
        done.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump_output, nursery.cancel_scope)
        nursery.start_soon(take_input)
        nursery.start_soon(stop_on_shutdown, nursery.cancel_scope)


async def _ws_command(context: ApiContext, session_id: str, message: str) -> None:
    if too_deep(message):
        raise ApiError(400, "invalid_message", f"messages nest at most {MAX_JSON_DEPTH} levels deep")
    try:
        command = json.loads(message)
    except ValueError:
        raise ApiError(400, "invalid_message", "text messages must be JSON objects") from None
    kind = command.get("type") if isinstance(command, dict) else None
    if kind == "input":
        text = command.get("text")
        if not isinstance(text, str):
            raise ApiError(422, "invalid_message", "input needs a string 'text'")
        if len(text.encode("utf-8", "surrogatepass")) > context.max_input_bytes:
            raise ApiError(413, "input_too_large", f"input is larger than {context.max_input_bytes} bytes")
        await context.manager.send_text(session_id, text, enter=bool(command.get("enter")))
    elif kind == "keys":
        keys = command.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ApiError(422, "invalid_message", "keys needs a list of key names")
        await context.manager.send_keys(session_id, keys)
    elif kind == "resize":
        width, height = command.get("width"), command.get("height")
        if not all(type(n) is int and 2 <= n <= 1000 for n in (width, height)):
            raise ApiError(
                422, "invalid_message", "resize needs integers 'width' and 'height' from 2 to 1000"
            )
        assert isinstance(width, int) and isinstance(height, int)
        await context.manager.resize(session_id, width, height)
    elif kind == "sync":
        # answered once every message before it was handled (they are handled in order)
        await websocket.send(json.dumps({"type": "synced"}))
    else:
        raise ApiError(422, "invalid_message", "type must be 'input', 'keys', 'resize' or 'sync'")
