"""What the routes check in a request before acting on it: JSON nesting depth, a body held
strictly to its model, comma-separated names, offsets, text that must be valid Unicode or
plain text. Every refusal is an :class:`ApiError` (or quart-schema's validation error)."""

from __future__ import annotations

import enum
import functools
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from quart import request
from quart.json.provider import DefaultJSONProvider
from quart_schema import RequestSchemaValidationError
from quart_trio import QuartTrio

from ._context import ApiError

__all__ = [
    "MAX_JSON_DEPTH", "JsonProvider", "check_plain", "check_unicode", "is_offset", "parse_names",
    "strict_body", "too_deep",
]  # fmt: skip

#: nesting levels a JSON body may have (the API's own bodies need 2; agents' hook payloads a few)
MAX_JSON_DEPTH = 64

#: a JSON string: what is inside one cannot nest
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_ASCII_NOT_BRACKETS = dict.fromkeys(c for c in range(128) if chr(c) not in "[]{}")
_OPENERS_IN_A_ROW = re.compile(rf"[\[{{]{{{MAX_JSON_DEPTH + 1}}}")
#: control characters (C0, DEL, C1): they act on a terminal that prints them
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class JsonProvider(DefaultJSONProvider):
    """quart-schema's JSON provider, but request bodies have their nesting depth checked
    (cheaply) before they are parsed: the parser's recursion would end in a RecursionError."""

    def __init__(self, app: QuartTrio, inner: Any) -> None:
        super().__init__(app)
        self._inner = inner

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return self._inner.dumps(obj, **kwargs)  # type: ignore[no-any-return]

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        text = s.decode() if isinstance(s, bytes) else s
        if too_deep(text):
            message = f"the JSON body nests more than {MAX_JSON_DEPTH} levels deep (or has unpaired brackets)"
            raise ApiError(400, "invalid_json", message)
        return self._inner.loads(text, **kwargs)


def too_deep(text: str) -> bool:
    """Whether ``text``'s arrays and objects nest deeper than :data:`MAX_JSON_DEPTH`, or its
    brackets do not pair up (then it is not JSON either way).

    Cheap, all in C: strings are cut out and everything but brackets dropped by regular
    expressions; then each pass removes the innermost pairs: one level per pass, at most
    :data:`MAX_JSON_DEPTH` passes."""
    structure = _JSON_STRING.sub("", text).translate(_ASCII_NOT_BRACKETS)
    if not structure.isascii():
        structure = _NOT_BRACKETS.sub("", structure)
    if _OPENERS_IN_A_ROW.search(structure):
        return True
    for _ in range(MAX_JSON_DEPTH):
        shorter = structure.replace("[]", "").replace("{}", "")
        if shorter == structure:
            break
        structure = shorter
    return bool(structure)


_View = TypeVar("_View", bound=Callable[..., Awaitable[Any]])


def strict_body(model: type[msgspec.Struct]) -> Callable[[_View], _View]:
    """Hold a JSON body to its model as JSON (under quart-schema's ``validate_request``, which
    converts laxly, as for form data: ``"80"`` for a number, ``0`` or ``"true"`` for a boolean,
    what the OpenAPI document does not allow). A number like ``80.0`` is an integer, as in
    JSON Schema."""

    def decorate(view: _View) -> _View:
        @functools.wraps(view)
        async def strict(*args: Any, **kwargs: Any) -> Any:
            try:
                msgspec.convert(_integral_floats(await request.get_json()), model, strict=True)
            except msgspec.ValidationError as exc:
                raise RequestSchemaValidationError(exc) from None
            return await view(*args, **kwargs)

        return strict  # type: ignore[return-value]

    return decorate


def _integral_floats(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats(v) for k, v in value.items()}
    return value


_Name = TypeVar("_Name", bound=enum.Enum)


def parse_names(
    kind: type[_Name], text: str | None, *, code: str, what: str, empty: bool = True
) -> list[_Name] | None:
    """Comma-separated members of ``kind`` (spaces around each allowed); None for no filter:
    ``text`` absent, or empty where ``empty`` allows it (else an empty name is refused).

    Raises:
        ApiError: 422 ``code`` for a name that is not one, naming ``what`` it should be.
    """
    if text is None or (empty and not text):
        return None
    names = []
    for name in text.split(","):
        try:
            names.append(kind(name.strip(" ")))
        except ValueError:
            known = ", ".join(str(member.value) for member in kind)
            raise ApiError(422, code, f"unknown {what} {name!r}; one of: {known}") from None
    return names


def is_offset(text: str) -> bool:
    """A decimal offset in ASCII digits (``str.isdigit`` also accepts "²", which int() refuses)."""
    return text.isascii() and text.isdigit()


def check_unicode(code: str, field: str, value: str) -> None:
    """Refuse a lone surrogate (``\\ud800`` in JSON): not text, and it has no UTF-8 form."""
    if value.isascii():
        return
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        surrogate = ord(value[exc.start])
        message = f"{field} is not valid Unicode: lone surrogate U+{surrogate:04X} at index {exc.start}"
        raise ApiError(422, code, message) from None


def check_plain(code: str, field: str, value: str) -> None:
    """Refuse what plain text cannot hold: lone surrogates and control characters."""
    check_unicode(code, field, value)
    if (control := _CONTROL.search(value)) is not None:
        raise ApiError(
            422, code, f"{field} contains control character U+{ord(control[0]):04X} at index "
            f"{control.start()}: it is plain text",
        )  # fmt: skip
