"""The HTTP API (quart-trio on hypercorn's Trio worker). Imported only by the daemon: CLI
clients talk to it with :mod:`trio_bridge.client` and never load the server stack."""

from .app import API_VERSION, ApiContext, ApiError, create_app
from .server import ApiBindError, Listeners, open_listeners, serve_api

__all__ = [
    "API_VERSION",
    "ApiBindError",
    "ApiContext",
    "ApiError",
    "Listeners",
    "create_app",
    "open_listeners",
    "serve_api",
]
