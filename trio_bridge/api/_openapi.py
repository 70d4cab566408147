"""The OpenAPI document: quart-schema's, plus what it cannot say by itself.

quart-schema documents JSON bodies from the routes' models. This adds the non-JSON bodies (a raw
request body; raw bytes, Server-Sent Events, Prometheus text, 204s as responses), the error
body every operation may answer with, and the bearer-token scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
from quart_schema import OpenAPIProvider
from werkzeug.routing import Rule

from . import _models
from ._models import Error

__all__ = ["Provider", "raw_request", "raw_response"]

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "_trio_bridge_raw_response"
_REQUEST_ATTRIBUTE = "_trio_bridge_raw_request"


def raw_response(
    status: int, content_type: str | None, description: str, events: Sequence[str] = ()
) -> Callable[[F], F]:
    """Document a response that is not a JSON model (``content_type`` None: no body); for
    Server-Sent Events, the names of its ``events``."""

    def decorate(func: F) -> F:
        setattr(func, _ATTRIBUTE, (status, content_type, description, tuple(events)))
        return func

    return decorate


def raw_request(content_type: str, description: str) -> Callable[[F], F]:
    """Document a request body that is not a JSON model (it may be empty)."""

    def decorate(func: F) -> F:
        setattr(func, _REQUEST_ATTRIBUTE, (content_type, description))
        return func

    return decorate


def _sse_event(names: Sequence[str]) -> dict[str, Any]:
    """The schema of one Server-Sent Event (OpenAPI 3.2's ``itemSchema`` for a stream): its
    name, JSON data, and, for some, a decimal id (the output offset after it)."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": list(names)},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
        },
    }


_SCHEMAS = {
    "application/octet-stream": {"type": "string", "format": "binary"},
    "text/plain": {"type": "string"},
    "text/html": {"type": "string"},
}


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without msgspec's ``null`` for an optional field: a query
    string cannot say null (leaving the parameter out gives the default)."""
    choices = schema.get("anyOf")
    if choices is None or {"type": "null"} not in choices:
        return schema
    rest = [c for c in choices if c != {"type": "null"}]
    others = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**rest[0], **others} if len(rest) == 1 else {**others, "anyOf": rest}


class Provider(OpenAPIProvider):
    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        raw = getattr(self._app.view_functions[rule.endpoint], _ATTRIBUTE, None)
        raw_body = getattr(self._app.view_functions[rule.endpoint], _REQUEST_ATTRIBUTE, None)
        (_, error_components) = msgspec.json.schema_components(
            [Error], ref_template="#/components/schemas/{name}"
        )
        components.update(error_components)
        for operations in paths.values():
            for operation in operations.values():
                # String keys, as in the JSON document (mixed keys cannot be sorted).
                responses = {str(k): v for k, v in operation["responses"].items()}
                operation["responses"] = responses
                if raw is not None:
                    status, content_type, description, events = raw
                    response: dict[str, Any] = {"description": description}
                    if content_type == "text/event-stream":
                        response["content"] = {content_type: {"itemSchema": _sse_event(events)}}
                    elif content_type is not None:
                        response["content"] = {content_type: {"schema": _SCHEMAS[content_type]}}
                    responses[str(status)] = response
                if "requestBody" in operation:
                    # a missing body is refused (422) like any other that is not the model
                    operation["requestBody"]["required"] = True
                if raw_body is not None:
                    content_type, description = raw_body
                    operation["requestBody"] = {
                        "description": description,
                        "content": {content_type: {"schema": _SCHEMAS[content_type]}},
                    }
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "query":
                        parameter["schema"] = _not_null(parameter["schema"])
                responses["default"] = {
                    "description": 'an error: {"error": {"code", "message"}}',
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
                operation["security"] = [{}, {"bearer": []}]
        return paths, components

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        # quart-schema keeps only a msgspec model's own schema, not the models it nests
        # (SessionList -> SessionOut): add every model's, so each $ref resolves.
        models = [getattr(_models, name) for name in _models.__all__]
        structs = [m for m in models if isinstance(m, type) and issubclass(m, msgspec.Struct)]
        _, nested = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
        for name, schema in nested.items():
            document["components"]["schemas"].setdefault(name, schema)
        document["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "required from every request when the daemon has a token",
            }
        }
        return document
