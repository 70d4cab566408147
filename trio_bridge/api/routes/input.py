"""Typing into a session: ``POST .../input`` (text) and ``POST .../keys`` (named keys)."""

from __future__ import annotations

from quart_schema import validate_request
from quart_trio import QuartTrio

from .._context import API_VERSION, ApiContext, ApiError
from .._http import strict_body
from .._models import InputBody, KeysBody
from .._openapi import raw_response

__all__ = ["register"]


def register(app: QuartTrio, context: ApiContext) -> None:
    """Add the input routes to ``app``."""
    manager = context.manager

    @app.post(f"/{API_VERSION}/sessions/<session_id>/input")
    @strict_body(InputBody)
    @validate_request(InputBody)
    @raw_response(204, None, "done")
    async def send_input(session_id: str, data: InputBody) -> tuple[str, int]:
        """Type text into the session (then Enter, if asked)."""
        size = len(data.text.encode("utf-8", "surrogatepass"))
        if size > context.max_input_bytes:
            raise ApiError(
                413, "input_too_large", f"input is {size} bytes; at most {context.max_input_bytes} allowed"
            )
        await manager.send_text(session_id, data.text, enter=data.enter)
        return "", 204

    @app.post(f"/{API_VERSION}/sessions/<session_id>/keys")
    @strict_body(KeysBody)
    @validate_request(KeysBody)
    @raw_response(204, None, "done")
    async def send_keys(session_id: str, data: KeysBody) -> tuple[str, int]:
        """Press named keys (e.g. ``Enter``, ``C-c``, ``Up``) in order."""
        await manager.send_keys(session_id, data.keys)
        return "", 204
