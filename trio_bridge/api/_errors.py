"""Every failure as a JSON error body: the application's error handlers.

Refusals become ``{"error": {"code", "message"}}`` with a 4xx status; tmux and disk failures
their 5xx; anything else a 500 ``internal`` whose details go to the daemon's log, never a
traceback to the client.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from quart import request
from quart_schema import RequestSchemaValidationError
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..process import SubprocessTimeoutError
from ..sessions.errors import NoStdinPipeError, StdinBusyError, StdinClosedError
from ..sessions.manager import (
    NotAnAgentError,
    PromptBoxNotEmptyError,
    PromptNotConfirmedError,
    SessionEndedError,
    UnknownAgentError,
    UnknownSessionError,
)
from ..sessions.store import NameTakenError
from ..tmux import InvalidKeyError, InvalidTextError, TmuxError, TmuxTimeoutError, TmuxUnavailableError
from ..tmux.server import CommandTooLongError
from ._context import ApiContext, ApiError, error_body

__all__ = ["register_errors"]

log = logging.getLogger("trio_bridge.api")

#: Refusals whose message is the exception's own: one status and code each.
_REFUSALS: tuple[tuple[type[Exception], int, str], ...] = (
    (UnknownSessionError, 404, "session_not_found"),
    (UnknownAgentError, 422, "unknown_agent"),
    (NotAnAgentError, 409, "not_an_agent"),
    (PromptNotConfirmedError, 409, "prompt_not_confirmed"),
    (PromptBoxNotEmptyError, 409, "prompt_box_not_empty"),
    (SessionEndedError, 409, "session_ended"),
    (NoStdinPipeError, 409, "no_stdin_pipe"),
    (StdinBusyError, 409, "stdin_busy"),
    (StdinClosedError, 409, "stdin_closed"),
    (NameTakenError, 409, "name_taken"),
    (InvalidTextError, 422, "invalid_text"),
    (InvalidKeyError, 422, "unknown_key"),
    (TmuxTimeoutError, 504, "tmux_timeout"),
)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"


def _refusal(status: int, code: str) -> Callable[[Exception], Awaitable[Any]]:
    async def handler(exc: Exception) -> Any:
        return error_body(status, code, str(exc))

    return handler


def _insufficient_storage(exc: Exception) -> tuple[dict[str, Any], int]:
    log.error("out of disk space: %s", exc)
    message = "the daemon's file system is full (or its quota is used up); nothing was changed"
    if request.method == "DELETE":
        message = "the daemon's file system is full (or its quota is used up)"
    return error_body(507, "insufficient_storage", message)


def register_errors(app: QuartTrio, context: ApiContext) -> None:
    """Add the error handlers to ``app`` (refused access has its own: see ``_admission``)."""

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Any:
        response = error_body(exc.status, exc.code, exc.message, **exc.fields)
        if exc.status == 401:
            return response[0], 401, {"WWW-Authenticate": "Bearer"}
        return response

    @app.errorhandler(RequestSchemaValidationError)
    async def _invalid(exc: RequestSchemaValidationError) -> Any:
        return error_body(422, "invalid_request", str(exc.validation_error))

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        if exc.code == 413:
            message = f"the request body is larger than {context.max_body_bytes} bytes"
            return error_body(413, "body_too_large", message)
        if exc.code == 400 and request.mimetype == "application/json":
            return error_body(400, "invalid_json", "the request body is not valid JSON")
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            # RFC 9110: a 405 says which methods the resource has
            body, status = error_body(405, code, exc.description or code)
            return body, status, {"Allow": ", ".join(sorted(exc.valid_methods))}
        return error_body(exc.code or 500, code, exc.description or code)

    @app.errorhandler(UnicodeDecodeError)
    async def _not_utf8(exc: UnicodeDecodeError) -> Any:
        # quart-trio decodes a JSON body before parsing it; bytes that are not UTF-8 end there.
        return error_body(400, "invalid_json", "the request body is not UTF-8 JSON")

    for exc_type, status, code in _REFUSALS:
        app.register_error_handler(exc_type, _refusal(status, code))

    @app.errorhandler(SubprocessTimeoutError)
    async def _timeout(exc: SubprocessTimeoutError) -> Any:
        log.warning("%s", exc)
        return error_body(504, "tmux_timeout", str(exc))

    @app.errorhandler(CommandTooLongError)
    async def _command_too_long(exc: CommandTooLongError) -> Any:
        return error_body(413, "command_too_large", str(exc))

    @app.errorhandler(OSError)
    async def _os_error(exc: OSError) -> Any:
        if exc.errno in _NO_SPACE:
            return _insufficient_storage(exc)
        return await _internal(exc)

    @app.errorhandler(sqlite3.OperationalError)
    async def _database_error(exc: sqlite3.OperationalError) -> Any:
        if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL:
            return _insufficient_storage(exc)
        return await _internal(exc)

    @app.errorhandler(TmuxError)
    async def _tmux(exc: TmuxError) -> Any:
        log.warning("tmux failed: %s", exc)
        status = 503 if isinstance(exc, TmuxUnavailableError) else 500
        return error_body(status, "tmux_failed", str(exc))

    @app.errorhandler(Exception)
    async def _internal(exc: Exception) -> Any:
        log.error("internal error in %s %s", request.method, request.path, exc_info=exc)
        return error_body(500, "internal", "internal error; the daemon's log has the details")
