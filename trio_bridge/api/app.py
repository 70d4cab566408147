"""The HTTP API: a quart-trio application over one :class:`SessionManager`.

Routes live under ``/v1`` (plus ``/metrics``). Every failure becomes a JSON error body
``{"error": {"code", "message"}}`` with a 4xx status for bad input, never a traceback, and a
refused request changes nothing. Long-lived responses (SSE, WebSocket) end cleanly when the
server stops: see :class:`ApiContext`.

This module assembles the application; the pieces live one floor down: ``_context`` (what the
routes share, :class:`ApiError`), ``_admission`` (access checks), ``_errors`` (error bodies),
``_http`` (request checks), ``_streaming`` (request bodies read as they come), ``_sse`` and
``_websocket`` (streams), ``routes/`` (one module per
resource) and ``_remote`` (``?computer=``, forwarded through the mesh).
"""

from __future__ import annotations

from quart_schema import QuartSchema
from quart_trio import QuartTrio

from .._version import __version__
from ..web import register_web
from ._admission import register_admission
from ._context import API_VERSION, ApiContext, ApiError
from ._errors import register_errors
from ._http import MAX_JSON_DEPTH, JsonProvider
from ._openapi import Provider
from ._streaming import StreamingConnection
from .routes import register_routes
from .routes.sessions import MAX_ENV_STRING

__all__ = ["API_VERSION", "MAX_ENV_STRING", "MAX_JSON_DEPTH", "ApiContext", "ApiError", "create_app"]


def create_app(context: ApiContext) -> QuartTrio:
    """The application. Serve it with :func:`trio_bridge.api.serve_api`."""
    app = QuartTrio("trio_bridge.api")
    # a streamed body (a session's stdin) is read as the route takes it, not all at once
    app.asgi_http_class = StreamingConnection
    # werkzeug would answer "/v1/sessions//screen" with a 308 to "/v1/sessions/screen": another
    # resource (the session named "screen"). An empty path segment is a 404 instead.
    app.url_map.merge_slashes = False
    app.config.update(
        MAX_CONTENT_LENGTH=context.max_body_bytes,
        # Streams end through ApiContext.stopping, not through a response timeout.
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=30,
        QUART_SCHEMA_CONVERSION_PREFERENCE="msgspec",
    )
    QuartSchema(
        app,
        openapi_path=f"/{API_VERSION}/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={"title": "trio-bridge", "version": __version__},
        conversion_preference="msgspec",
        openapi_provider_class=Provider,
    )
    app.json = JsonProvider(app, app.json)
    # The access checks run before every other hook (the mesh's ?computer= forwarding is one).
    register_admission(app, context)
    register_errors(app, context)
    register_routes(app, context)
    register_web(app, context)  # the dashboard (serves nothing unless the setting is on)
    return app
