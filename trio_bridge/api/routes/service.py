"""The service itself: ``/v1/health``, ``/v1/version`` and ``/metrics``."""

from __future__ import annotations

from quart import Response
from quart_schema import document_response
from quart_trio import QuartTrio

from ..._version import __version__
from .. import _metrics
from .._context import API_VERSION, ApiContext, json_response
from .._models import Health, Version
from .._openapi import raw_response

__all__ = ["register"]


def register(app: QuartTrio, context: ApiContext) -> None:
    """Add the service routes to ``app``."""

    @app.get(f"/{API_VERSION}/health")
    @document_response(Health)
    async def health() -> Response:
        """Whether the daemon is serving."""
        return json_response(Health(status="ok"))

    @app.get(f"/{API_VERSION}/version")
    @document_response(Version)
    async def version() -> Response:
        """trio-bridge's version and the API version."""
        return json_response(Version(version=__version__, api=API_VERSION))

    @app.get("/metrics")
    @raw_response(200, "text/plain", "Prometheus text exposition format")
    async def metrics() -> Response:
        """Prometheus metrics, in the text exposition format."""
        body = await _metrics.render(context)
        return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")
