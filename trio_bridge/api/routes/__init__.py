"""The API's routes, one module per resource; each module's ``register(app, context)`` adds
its routes to the application (:func:`register_routes` adds them all)."""

from __future__ import annotations

from quart_trio import QuartTrio

from .._context import ApiContext
from . import agents, input, mesh, output, service, sessions, stdin, streams

__all__ = ["register_routes"]


def register_routes(app: QuartTrio, context: ApiContext) -> None:
    """Add every route of the API to ``app``."""
    for module in (service, sessions, input, stdin, agents, output, streams, mesh):
        module.register(app, context)
