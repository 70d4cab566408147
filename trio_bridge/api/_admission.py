"""Who gets in, as quart hooks: every request and WebSocket handshake passes
:meth:`Access.check` (token, ``Host``, ``Origin``: see :mod:`trio_bridge.api._access`), agent
hooks come from this computer only, and a refusal that leaves a body unread closes its
connection."""

from __future__ import annotations

import re
from typing import Any

from quart import Response, has_request_context, request, websocket
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE
from quart_trio import QuartTrio

from ._access import AccessDenied
from ._context import API_VERSION, ApiContext, ApiError, error_body

__all__ = ["register_admission"]

_HOOK_PATH = re.compile(f"/{API_VERSION}/sessions/[^/]+/hooks")


def register_admission(app: QuartTrio, context: ApiContext) -> None:
    """Add the access checks to ``app`` (before any other ``before_request`` hook)."""

    @app.after_request
    async def _close_after_refused_body(response: Response) -> Response:
        # A refusal (401, 413, ...) may come before the request's body was read whole; hypercorn
        # 0.18 then neither serves the connection's next request nor closes it, and a keep-alive
        # client reusing it waits forever. Closing it costs a reconnect, after an error only.
        # The same for a body no route reads (OPTIONS, GET... with a body; a POST to a route
        # without one): the connection's next request hung (found by schemathesis).
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        view = app.view_functions.get(request.endpoint or "")
        unread = request.method != "POST" or getattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE, None) is None
        if (response.status_code >= 400 or unread) and (request.content_length or chunked):
            response.headers["Connection"] = "close"
        return response

    @app.before_request
    async def _authorize_request() -> None:
        context.access.check(request.scope.get("server"), request.headers, request.path, request.method)
        if _HOOK_PATH.fullmatch(request.path):
            if "server" not in request.scope:
                # Only a connection of this computer reports hooks; a request forwarded
                # through the mesh (run in process, with no socket) never does.
                raise ApiError(403, "forbidden", "agent hooks are reported to their own computer only")
            if "computer" in request.args:
                raise ApiError(422, "invalid_computer", "agent hooks are never forwarded to another computer")

    @app.before_websocket
    async def _authorize_websocket() -> None:
        # A page of another site must not drive sessions through the user's browser
        # (cross-site WebSocket hijacking): its Origin is refused (403), whatever its Host says.
        context.access.check(websocket.scope.get("server"), websocket.headers, websocket.path)

    @app.errorhandler(AccessDenied)
    async def _denied(exc: AccessDenied) -> Any:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        # A refused WebSocket handshake leaves hypercorn 0.18's connection unusable (its next
        # request raises inside hypercorn): it is closed; so is one whose body was not read.
        if not has_request_context() or (
            exc.status == 421 or request.content_length or request.headers.get("Transfer-Encoding")
        ):
            headers["Connection"] = "close"
        return error_body(exc.status, exc.code, exc.message)[0], exc.status, headers
