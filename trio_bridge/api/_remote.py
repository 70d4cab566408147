"""Session operations on other computers: the API forwards the request itself.

A request with ``?computer=NAME`` (another computer of the mesh) travels, as an HTTP request
(method, path, query without ``computer``, raw body), through that computer's inbox
(:mod:`trio_bridge.mesh.rpc`); there :func:`remote_handler` runs it against the daemon's own
application (in process, no network), and the response comes back as it is: same validation,
same errors, same status codes as a local request. Only the two directions live here.

What comes back through Redis is checked by the mesh (:mod:`trio_bridge.mesh`): a relay or event
entry that fails verification or does not parse is dropped, counted
(``trio_bridge_mesh_dropped``) and skipped; one bad entry never ends a stream or a listing.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from quart import Response, request

from .._backoff import Backoff
from ._context import ApiContext, ApiError
from ._sse import OutputSource, sse_event, sse_response, stream_output

if TYPE_CHECKING:
    from quart_trio import QuartTrio

__all__ = ["events_remote", "forward", "list_everywhere", "remote_handler", "stream_remote"]

log = logging.getLogger(__name__)

#: seconds a forwarded request may take, beyond its own wait (``/wait?timeout=``)
LIMIT = 15.0
_SESSION = re.compile(r"^/v1/sessions/([^/]+)")


def remote_handler(app: QuartTrio, token: str | None) -> Any:
    """The inbox handler: one forwarded request in, its response (as a dict) out."""

    async def handle(body: dict[str, Any]) -> dict[str, Any]:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body.get("content_type"):
            headers["Content-Type"] = body["content_type"]
        data = base64.b64decode(body.get("data_b64") or "")
        response = await client.open(  # type: ignore[call-arg]  # (json: optional in fact)
            body["path"],
            method=body["method"],
            query_string=body.get("query") or None,
            data=data if data else None,
            headers=headers,
        )
        payload = await response.get_data(as_text=False)
        assert isinstance(payload, bytes)
        kept = {k: v for k, v in response.headers.items() if k.lower().startswith("x-output-")}
        return {
            "status": response.status_code,
            "content_type": response.headers.get("Content-Type", "application/json"),
            "headers": kept,
            "body_b64": base64.b64encode(payload).decode(),
        }

    return handle


def _body(reply: dict[str, Any]) -> bytes:
    """A reply's body (see :func:`trio_bridge.mesh.rpc.reply_body`; the mesh is imported only
    when a reply came through it)."""
    from ..mesh.rpc import reply_body

    return reply_body(reply)


def _response(reply: dict[str, Any]) -> Response:
    try:
        body = _body(reply)
        headers = {str(k): str(v) for k, v in (reply.get("headers") or {}).items()}
        return Response(
            body, status=int(reply["status"]), content_type=reply.get("content_type"), headers=headers
        )
    except (ValueError, TypeError, AttributeError) as exc:
        # (Only a forged reply, without a mesh secret, can be malformed: the mesh checked the rest.)
        raise ApiError(
            502, "bad_remote_reply", f"the remote computer's reply does not parse: {exc}"
        ) from None


async def _send(
    context: ApiContext, computer: str, body: dict[str, Any], session: str, limit: float
) -> dict[str, Any]:
    from ..mesh import RedisUnavailableError
    from ..mesh.rpc import ComputerUnavailableError, UnknownComputerError

    try:
        return await context.mesh.request(computer, body, session=session, limit=limit)  # type: ignore[no-any-return]
    except UnknownComputerError:
        raise ApiError(404, "unknown_computer", f"no computer {computer!r} in the mesh") from None
    except ComputerUnavailableError as exc:
        raise ApiError(503, "computer_unavailable", str(exc)) from None
    except RedisUnavailableError as exc:
        raise ApiError(503, "mesh_unavailable", str(exc)) from None


async def forward(context: ApiContext, computer: str) -> Response:
    """Send the current request to ``computer`` and answer with its response."""
    query = {k: v for k, v in request.args.items() if k != "computer"}
    body: dict[str, Any] = {"method": request.method, "path": request.path, "query": query}
    data = await request.get_data(as_text=False)
    assert isinstance(data, bytes)
    if data:
        body["data_b64"] = base64.b64encode(data).decode()
        body["content_type"] = request.headers.get("Content-Type", "")
    limit = LIMIT
    if request.path.endswith("/wait"):
        try:
            limit += min(600.0, max(0.0, float(query.get("timeout", 30))))
        except ValueError:
            pass  # the remote refuses it
    elif request.path.endswith("/prompt"):
        # a busy agent's prompt waits for its turn (up to the remote's prompt_queue_wait, 30 s)
        # before the remote answers 202 "queued"
        limit += 45.0
    match = _SESSION.match(request.path)
    return _response(await _send(context, computer, body, match[1] if match else "", limit))


async def list_everywhere(context: ApiContext, local: list[Any]) -> Response:
    """``GET /v1/sessions?computer=*``: this computer's sessions and every online computer's."""
    query = {k: v for k, v in request.args.items() if k != "computer"}
    computers = [c.name for c in await context.mesh.computers() if c.online and c.name != context.mesh.name]
    gathered: list[Any] = list(local)
    failures: list[str] = []

    async def one(name: str) -> None:
        try:
            reply = await _send(
                context, name, {"method": "GET", "path": "/v1/sessions", "query": query}, "", LIMIT
            )
            if int(reply["status"]) == 200:
                sessions = msgspec.json.decode(_body(reply))["sessions"]
                if not isinstance(sessions, list) or not all(
                    isinstance(s, dict)
                    and isinstance(s.get("created_at"), int | float)
                    and isinstance(s.get("id"), str)
                    for s in sessions
                ):
                    raise ValueError("not a list of sessions")
                gathered.extend(sessions)
        except Exception as exc:
            failures.append(f"{name}: {exc}")

    async with trio.open_nursery() as nursery:
        for name in computers:
            nursery.start_soon(one, name)
    gathered.sort(key=lambda s: (s["created_at"], s["id"]))
    headers = {"X-Unreachable-Computers": "; ".join(failures)} if failures else {}
    return Response(
        msgspec.json.encode({"sessions": gathered}), content_type="application/json", headers=headers
    )


async def stream_remote(context: ApiContext, computer: str, session_id: str, start: int) -> Response:
    """``GET /v1/sessions/{id}/stream?computer=NAME``: the same events as a local stream (the
    same code serves them: :func:`~trio_bridge.api._sse.stream_output`), from the session's
    relay on the owning computer; ``end`` carries the owner's final record."""
    probe = await _send(context, computer, _get(f"/v1/sessions/{session_id}"), session_id, LIMIT)
    if int(probe["status"]) != 200:
        return _response(probe)
    # The one place that picks where another computer's output comes from.
    source: OutputSource = context.mesh.relay_feed(computer, session_id)

    async def end() -> str:
        final = await _send(context, computer, _get(f"/v1/sessions/{session_id}"), session_id, LIMIT)
        return _body(final).decode("utf-8", "replace")

    return stream_output(context, source, start, end)


#: seconds between looks for computers that joined (``GET /v1/events?computer=*``)
REDISCOVER = 2.0


def _get(path: str, **query: object) -> dict[str, Any]:
    return {"method": "GET", "path": path, "query": {k: str(v) for k, v in query.items()}}


async def events_remote(context: ApiContext, computer: str) -> Response:
    """``GET /v1/events?computer=NAME`` (``*``: every computer, those that join later too,
    looked for every :data:`REDISCOVER` seconds): lifecycle events from the computers' event
    streams (``tb:events:<computer>``), from now on."""
    from ..mesh import RedisUnavailableError
    from ..mesh.computers import EventStreams

    known = {c.name for c in await context.mesh.computers()}
    if computer != "*" and computer not in known:
        raise ApiError(404, "unknown_computer", f"no computer {computer!r} in the mesh")
    names = sorted(known) if computer == "*" else [computer]
    streams = EventStreams(context.mesh)
    await streams.follow(names)

    async def produce(send: trio.MemorySendChannel[bytes]) -> None:
        backoff = Backoff(0.1, 2.0)
        looked_at = trio.current_time()
        while True:
            try:
                if computer == "*" and trio.current_time() - looked_at >= REDISCOVER:
                    looked_at = trio.current_time()
                    await streams.follow(c.name for c in await context.mesh.computers())
                events = await streams.read(block=1.0)
                backoff.reset()
            except RedisUnavailableError:
                await backoff.sleep()
                continue
            for _, kind, session in events:
                await send.send(sse_event(kind, json.dumps({"kind": kind, "session": session})))

    return sse_response(context, produce)
