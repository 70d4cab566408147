"""The HTTP API: a quart-trio application over one :class:`SessionManager`.

Routes live under ``/v1`` (plus ``/metrics``). Every failure becomes a JSON error body
``{"error": {"code", "message"}}`` with a 4xx status for bad input, never a traceback, and a
refused request changes nothing. Long-lived responses (SSE, WebSocket) end cleanly when the
server stops: see :class:`ApiContext`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import os
import re
import shlex
import socket
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

import attrs
import msgspec
import trio
from quart import Response, has_request_context, request, websocket
from quart.json.provider import DefaultJSONProvider
from quart_schema import (
    QuartSchema,
    RequestSchemaValidationError,
    document_response,
    validate_querystring,
    validate_request,
)
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .._version import __version__
from ..agents import AgentState
from ..agents.payload import InvalidHookPayload, check_hook
from ..output import Chunk, OutputFeed, Resync
from ..output.log import OffsetDroppedError
from ..process import SubprocessTimeoutError
from ..sessions import SessionManager, SessionRecord, SessionState
from ..sessions.manager import (
    AgentStart,
    EventKind,
    NotAnAgentError,
    PromptBoxNotEmptyError,
    PromptNotConfirmedError,
    PromptQueuedError,
    SessionEndedError,
    UnknownAgentError,
    UnknownSessionError,
)
from ..sessions.store import NameTakenError
from ..supervise import Supervisor
from ..tmux import InvalidKeyError, InvalidTextError, TmuxError, TmuxTimeoutError, TmuxUnavailableError
from ..tmux.server import TMUX_COMMAND_MAX, CommandTooLongError, is_env_name
from . import _metrics
from ._access import Access, AccessDenied
from ._models import (
    AgentOut,
    ComputerList,
    ComputerOut,
    CreateSession,
    EventOut,
    Health,
    HookBody,
    InputBody,
    KeysBody,
    ListQuery,
    OutputQuery,
    PromptBody,
    RelayQuery,
    Screen,
    ScreenQuery,
    SessionList,
    SessionOut,
    SignalBody,
    StreamQuery,
    Version,
    WaitQuery,
    WaitResult,
    session_out,
)
from ._openapi import Provider, raw_response

__all__ = ["API_VERSION", "ApiContext", "ApiError", "create_app"]

log = logging.getLogger(__name__)

API_VERSION = "v1"
#: bytes of one SSE output event / WebSocket message at most
_CHUNK = 1 << 16
#: an SSE comment this often keeps idle streams alive through proxies
_KEEPALIVE = 15.0
#: nesting levels a JSON body may have (the API's own bodies need 2; agents' hook payloads a few)
MAX_JSON_DEPTH = 64
#: bytes of one ``NAME=value`` environment string at most (Linux's MAX_ARG_STRLEN: execve
#: refuses a longer one, so the command would not start)
MAX_ENV_STRING = (32 << 12) - 1


class ApiError(Exception):
    """A request the API refuses: becomes ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@attrs.define
class ApiContext:
    """What the routes share: the manager, the limits, and the server's stop signal.

    ``streams`` is the nursery the server lends for the producers of SSE responses (a response
    body is an async generator, which must not own tasks itself); ``stopping`` is set when
    the server begins its graceful shutdown, so every stream ends with a final event or a
    WebSocket close frame instead of being cut.
    """

    manager: SessionManager
    #: who may call (token, Host, Origin): see :mod:`trio_bridge.api._access`
    access: Access = attrs.field(factory=Access)
    max_body_bytes: int = 1 << 20
    max_input_bytes: int = 256 << 10
    #: open connections per listener at most
    max_connections: int = 256
    supervisors: tuple[Supervisor, ...] = ()
    home: Path = attrs.field(factory=Path.home)
    stopping: trio.Event = attrs.field(factory=trio.Event)
    streams: trio.Nursery | None = None
    #: open SSE/WebSocket streams (for metrics)
    open_streams: int = 0
    #: the API's unix socket (given to sessions, for their agents' hooks)
    socket_path: Path | None = None
    #: this daemon's membership of a Redis mesh (``trio_bridge.mesh.Mesh``), if any
    mesh: Any = None
    #: this computer's name (in the mesh, else the host name)
    computer_name: str = attrs.field(factory=lambda: ApiContext.default_computer_name())
    #: ``http://host:port`` of the TCP listener, if any (the web dashboard's login links)
    tcp_url: str | None = None

    @staticmethod
    def default_computer_name() -> str:
        return socket.gethostname().split(".")[0] or "localhost"


_REFUSALS: tuple[tuple[type[Exception], int, str], ...] = (
    (UnknownSessionError, 404, "session_not_found"),
    (UnknownAgentError, 422, "unknown_agent"),
    (NotAnAgentError, 409, "not_an_agent"),
    (PromptNotConfirmedError, 409, "prompt_not_confirmed"),
    (PromptBoxNotEmptyError, 409, "prompt_box_not_empty"),
    (SessionEndedError, 409, "session_ended"),
    (NameTakenError, 409, "name_taken"),
    (InvalidTextError, 422, "invalid_text"),
    (InvalidKeyError, 422, "unknown_key"),
    (TmuxTimeoutError, 504, "tmux_timeout"),
)


def _refusal(status: int, code: str) -> Callable[[Exception], Awaitable[Any]]:
    async def handler(exc: Exception) -> Any:
        return _error(status, code, str(exc))

    return handler


def _error(status: int, code: str, message: str) -> tuple[dict[str, Any], int]:
    return {"error": {"code": code, "message": message}}, status


def create_app(context: ApiContext) -> QuartTrio:
    """The application. Serve it with :func:`trio_bridge.api.serve_api`."""
    app = QuartTrio("trio_bridge.api")
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
    app.json = _JsonProvider(app, app.json)
    manager = context.manager
    list_cache: dict[tuple[int, str | None], bytes] = {}

    # -- access and errors -----------------------------------------------------

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

    @app.before_request
    async def _route_to_computer() -> Response | None:
        # ?computer=NAME: a session operation on another computer of the mesh.
        computer = request.args.get("computer")
        if computer is not None and request.path == f"/{API_VERSION}/events" and context.mesh is not None:
            if computer in ("", context.computer_name):
                return None
            from . import _remote

            return await _remote.events_remote(context, computer)
        if computer is None or not request.path.startswith(f"/{API_VERSION}/sessions"):
            return None
        if computer in ("", context.computer_name):
            return None
        if context.mesh is None:
            if computer == "*":
                return None
            raise ApiError(404, "unknown_computer", f"no computer {computer!r}: this daemon is not in a mesh")
        from . import _remote

        if computer == "*":
            if request.method == "GET" and request.path == f"/{API_VERSION}/sessions":
                local = [
                    msgspec.to_builtins(session_out(r, context.computer_name))
                    for r in await manager.store.all()
                ]
                states = _parse_states(request.args.get("state"))
                if states is not None:
                    local = [s for s in local if s["state"] in states]
                return await _remote.list_everywhere(context, local)
            raise ApiError(422, "invalid_computer", "computer=* is only for listing sessions")
        stream = re.fullmatch(f"/{API_VERSION}/sessions/([^/]+)/stream", request.path)
        if stream is not None and request.method == "GET":
            last_id = request.headers.get("Last-Event-ID")
            offset = request.args.get("offset", "0")
            start = last_id if last_id is not None else offset
            if not _is_offset(start):
                raise ApiError(400, "invalid_offset", f"the start offset must be a number, not {start!r}")
            return await _remote.stream_remote(context, computer, stream[1], int(start))
        return await _remote.forward(context, computer)

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
        return _error(exc.status, exc.code, exc.message)[0], exc.status, headers

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Any:
        response = _error(exc.status, exc.code, exc.message)
        if exc.status == 401:
            return response[0], 401, {"WWW-Authenticate": "Bearer"}
        return response

    @app.errorhandler(RequestSchemaValidationError)
    async def _invalid(exc: RequestSchemaValidationError) -> Any:
        return _error(422, "invalid_request", str(exc.validation_error))

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        if exc.code == 413:
            message = f"the request body is larger than {context.max_body_bytes} bytes"
            return _error(413, "body_too_large", message)
        if exc.code == 400 and request.mimetype == "application/json":
            return _error(400, "invalid_json", "the request body is not valid JSON")
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            # RFC 9110: a 405 says which methods the resource has
            body, status = _error(405, code, exc.description or code)
            return body, status, {"Allow": ", ".join(sorted(exc.valid_methods))}
        return _error(exc.code or 500, code, exc.description or code)

    @app.errorhandler(UnicodeDecodeError)
    async def _not_utf8(exc: UnicodeDecodeError) -> Any:
        # quart-trio decodes a JSON body before parsing it; bytes that are not UTF-8 end there.
        return _error(400, "invalid_json", "the request body is not UTF-8 JSON")

    # Refusals whose message is the exception's own: one status and code each.
    for exc_type, status, code in _REFUSALS:
        app.register_error_handler(exc_type, _refusal(status, code))

    @app.errorhandler(SubprocessTimeoutError)
    async def _timeout(exc: SubprocessTimeoutError) -> Any:
        log.warning("%s", exc)
        return _error(504, "tmux_timeout", str(exc))

    @app.errorhandler(CommandTooLongError)
    async def _command_too_long(exc: CommandTooLongError) -> Any:
        return _error(413, "command_too_large", str(exc))

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
        return _error(status, "tmux_failed", str(exc))

    @app.errorhandler(Exception)
    async def _internal(exc: Exception) -> Any:
        log.error("internal error in %s %s", request.method, request.path, exc_info=exc)
        return _error(500, "internal", "internal error; the daemon's log has the details")

    # -- service -----------------------------------------------------------------

    @app.get(f"/{API_VERSION}/health")
    @document_response(Health)
    async def health() -> Response:
        """Whether the daemon is serving."""
        return _json(Health(status="ok"))

    @app.get(f"/{API_VERSION}/version")
    @document_response(Version)
    async def version() -> Response:
        """trio-bridge's version and the API version."""
        return _json(Version(version=__version__, api=API_VERSION))

    @app.get("/metrics")
    @raw_response(200, "text/plain", "Prometheus text exposition format")
    async def metrics() -> Response:
        """Prometheus metrics, in the text exposition format."""
        body = await _metrics.render(context)
        return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get(f"/{API_VERSION}/computers")
    @document_response(ComputerList)
    async def computers() -> Response:
        """The computers of the mesh with online/offline and the age of their last heartbeat
        (without a mesh: this computer alone)."""
        if context.mesh is None:
            import socket

            running = await manager.store.all([SessionState.STARTING, SessionState.RUNNING])
            local = ComputerOut(
                name=socket.gethostname().split(".")[0], online=True, local=True, age=0.0,
                version=__version__, capabilities=[], sessions=len(running), started_at=0.0,
                host=socket.gethostname(),
            )  # fmt: skip
            return _json(ComputerList(computers=[local], mesh=False))
        found = await context.mesh.computers()
        return _json(
            ComputerList(
                computers=[_computer_out(c, local=c.name == context.mesh.name) for c in found],
                mesh=True,
                signed=context.mesh.signed,
            )
        )

    # -- sessions --------------------------------------------------------------

    @app.get(f"/{API_VERSION}/sessions")
    @validate_querystring(ListQuery)
    @document_response(SessionList)
    async def list_sessions(query_args: ListQuery) -> Response:
        """All sessions, oldest first; ``state`` filters (comma-separated)."""
        # The API's hottest read: its body is kept until the store changes (building the
        # structs cost more than the rest of the request; see benchmarks/api.py).
        key = (manager.store.version, query_args.state)
        body = list_cache.get(key)
        if body is None:
            states = _parse_states(query_args.state)
            records = await manager.store.all(states)
            sessions = SessionList(sessions=[session_out(r, context.computer_name) for r in records])
            body = msgspec.json.encode(sessions)
            if len(list_cache) > 16 or any(v != key[0] for v, _ in list_cache):
                list_cache.clear()
            list_cache[key] = body
        return Response(body, content_type="application/json")

    @app.post(f"/{API_VERSION}/sessions")
    @_strict_body(CreateSession)
    @validate_request(CreateSession)
    @document_response(SessionOut, 201)
    async def create_session(data: CreateSession) -> Response:
        """Start a session; it is running when this returns. With ``agent``: an AI coding
        agent session (``command``/``shell`` not allowed), optionally resuming an earlier
        session's conversation (``resume``)."""
        _check_create_text(data)
        agent = _agent_start(manager, data, min(context.max_input_bytes, 100 << 10))
        argv = _argv(data) if agent is None and data.resume is None else []
        cwd = Path(data.cwd) if data.cwd is not None else context.home
        if data.resume is not None and data.cwd is None:
            cwd = Path((await manager.get(data.resume)).cwd)
        if not cwd.is_absolute():
            raise ApiError(422, "invalid_cwd", f"cwd must be an absolute path, not {data.cwd!r}")
        try:
            is_dir = await trio.Path(cwd).is_dir()
        except OSError as exc:  # e.g. a name too long
            raise ApiError(422, "invalid_cwd", f"cwd {str(cwd)!r}: {exc.strerror}") from None
        if not is_dir:
            raise ApiError(422, "invalid_cwd", f"cwd {str(cwd)!r} is not an existing directory")
        for name, value in data.env.items():
            if not is_env_name(name):
                raise ApiError(422, "invalid_env", f"invalid environment variable name {name!r}")
            if "\0" in value:
                raise ApiError(422, "invalid_env", f"environment variable {name} contains a NUL byte")
            if (size := len(name) + 1 + len(value.encode())) > MAX_ENV_STRING:
                raise ApiError(
                    413, "env_too_large",
                    f"environment variable {name} is {size} bytes as NAME=value; at most {MAX_ENV_STRING}",
                )  # fmt: skip
        for arg in argv:
            if "\0" in arg:
                raise ApiError(422, "invalid_command", "command arguments cannot contain a NUL byte")
        # The command and cwd go to tmux on one command line (the exact check, with the start
        # script around them, is TmuxServer.new_session's): refused here before any file is made.
        size = sum(len(arg.encode()) + 1 for arg in argv) + len(str(cwd).encode())
        if size > TMUX_COMMAND_MAX:
            raise ApiError(
                413, "command_too_large",
                f"the command and cwd are {size} bytes; tmux takes at most {TMUX_COMMAND_MAX} together",
            )  # fmt: skip
        # Hooks (`trio-bridge hook`) find the daemon through this.
        env = (
            {**data.env, "TRIO_BRIDGE_API_SOCKET": str(context.socket_path)}
            if context.socket_path
            else data.env
        )
        if data.resume is not None:
            if data.name is not None:
                raise ApiError(422, "invalid_name", "a resumed conversation's session takes no name")
            record = await manager.resume(
                data.resume, cwd=cwd, env=env, title=data.title, width=data.width, height=data.height,
                origin="api", model=data.model, prompt=data.prompt, extra_args=tuple(data.args),
            )  # fmt: skip
        else:
            record = await manager.create(
                argv, cwd=cwd, env=env, title=data.title, width=data.width, height=data.height,
                origin="api", agent=agent, name=data.name,
            )  # fmt: skip
        return _json(session_out(record, context.computer_name), 201)

    @app.get(f"/{API_VERSION}/sessions/<session_id>")
    @document_response(SessionOut)
    async def get_session(session_id: str) -> Response:
        """One session."""
        return _json(session_out(await manager.get(session_id), context.computer_name))

    @app.delete(f"/{API_VERSION}/sessions/<session_id>")
    @document_response(SessionOut)
    async def kill_session(session_id: str) -> Response:
        """Kill a running session; answers with its final record (state ``killed``)."""
        record = await manager.get(session_id)
        if record.state.ended:
            raise SessionEndedError(record)
        await manager.kill(session_id)
        with trio.move_on_after(manager.server.timeouts.tmux):
            record = await manager.wait(session_id)
        return _json(session_out(record, context.computer_name))

    @app.delete(f"/{API_VERSION}/sessions/<session_id>/record")
    @raw_response(204, None, "removed")
    async def remove_session(session_id: str) -> tuple[str, int]:
        """Remove an ended session: its record, output and last screen (``trio-bridge rm``).
        A running session is refused (409 ``session_running``): kill it first."""
        record = await manager.get(session_id)
        if not record.state.ended:
            raise ApiError(409, "session_running", f"session {session_id} is running: kill it first")
        await manager.forget(session_id)
        return "", 204

    @app.post(f"/{API_VERSION}/sessions/<session_id>/signal")
    @_strict_body(SignalBody)
    @validate_request(SignalBody)
    @raw_response(204, None, "sent")
    async def signal_session(session_id: str, data: SignalBody) -> tuple[str, int]:
        """Send a signal to the session's command (``trio-bridge kill -s``); the session ends
        if the command dies of it."""
        import signal as signals

        name = data.signal if data.signal.startswith("SIG") else f"SIG{data.signal}"
        try:
            signum = signals.Signals[name]
        except KeyError:
            raise ApiError(
                422, "invalid_signal", f"no signal {data.signal!r} (e.g. TERM, INT, HUP, KILL, USR1)"
            ) from None
        await manager.signal(session_id, signum)
        return "", 204

    @app.post(f"/{API_VERSION}/sessions/<session_id>/input")
    @_strict_body(InputBody)
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
    @_strict_body(KeysBody)
    @validate_request(KeysBody)
    @raw_response(204, None, "done")
    async def send_keys(session_id: str, data: KeysBody) -> tuple[str, int]:
        """Press named keys (e.g. ``Enter``, ``C-c``, ``Up``) in order."""
        await manager.send_keys(session_id, data.keys)
        return "", 204

    @app.post(f"/{API_VERSION}/sessions/<session_id>/hooks")
    @validate_request(HookBody)
    @raw_response(204, None, "recorded")
    async def agent_hook(session_id: str, data: HookBody) -> tuple[str, int]:
        """An agent's hook fired in this session (what ``trio-bridge hook EVENT`` sends). Only
        over a connection of this computer, never forwarded; fields the tracker keeps are checked
        (422 ``invalid_hook``)."""
        try:
            check_hook(data.event, data.payload, max_prompt=context.max_input_bytes)
        except InvalidHookPayload as exc:
            raise ApiError(422, "invalid_hook", str(exc)) from None
        await manager.agent_hook(session_id, data.event, data.payload)
        return "", 204

    @app.post(f"/{API_VERSION}/sessions/<session_id>/prompt")
    @validate_request(PromptBody)
    @raw_response(204, None, "submitted, and the agent showed it took the prompt")
    async def submit_prompt(session_id: str, data: PromptBody) -> tuple[str | dict[str, Any], int]:
        """Submit a prompt to the session's agent: its prompt box emptied first if it holds
        text, a bracketed paste, then Enter on its own once the paste is taken, then verified
        (the agent's prompt hook, or output, as its profile says); one retry of Enter. A busy
        agent that queues the prompt: confirmed (204) when it takes it, else 202
        ``{"queued": true, "message": ...}`` once the wait ends: it will run, do not resend.
        409 ``prompt_not_confirmed``: it may not have been submitted; 409
        ``prompt_box_not_empty``: the box held text that could not be cleared (nothing sent)."""
        size = len(data.text.encode("utf-8", "surrogatepass"))
        if size > context.max_input_bytes:
            raise ApiError(
                413, "input_too_large", f"prompt is {size} bytes; at most {context.max_input_bytes} allowed"
            )
        try:
            await manager.submit_prompt(session_id, data.text)
        except PromptQueuedError as exc:
            return {"queued": True, "message": str(exc)}, 202
        return "", 204

    @app.get(f"/{API_VERSION}/sessions/<session_id>/agent")
    @document_response(AgentOut)
    async def agent(session_id: str) -> Response:
        """The state of the session's agent, as its hooks report it."""
        record = await manager.get(session_id)
        tracker = manager.agent(session_id)
        if tracker is None:  # no hook since the daemon started: what the record kept
            state = "exited" if record.state.ended else (record.agent_state or "unknown")
            return _json(
                AgentOut(
                    state=state,
                    native_id=record.native_id,
                    transcript_path=record.transcript_path,
                    last_event=None,
                )
            )
        return _json(
            AgentOut(
                state=str(tracker.state),
                native_id=tracker.native_id,
                transcript_path=tracker.transcript_path,
                last_event=tracker.last_event,
                last_prompt=tracker.last_prompt,
                evidence=tracker.evidence,
                seconds_in_state=round(max(0.0, trio.current_time() - tracker.changed_at), 3),
            )
        )

    @app.get(f"/{API_VERSION}/sessions/<session_id>/screen")
    @validate_querystring(ScreenQuery)
    @document_response(Screen)
    async def screen(session_id: str, query_args: ScreenQuery) -> Response:
        """The rendered screen (the last one kept, once the session ended). ``escapes=true``:
        with colours and attributes as escape sequences (``capture-pane -e``), the cursor, the
        size and the output offset it shows everything before (follow the output from there),
        while the session runs (the kept screen is plain text)."""
        record = await manager.get(session_id)
        if query_args.escapes and not record.state.ended:
            with contextlib.suppress(TmuxError):  # it ended just now: the kept screen
                return _json(await _ansi_screen(manager, record))
        text = await manager.screen(session_id)
        return _json(Screen(id=record.id, text=text, live=not record.state.ended))

    @app.get(f"/{API_VERSION}/sessions/<session_id>/output")
    @validate_querystring(OutputQuery)
    @raw_response(200, "application/octet-stream", "output bytes")
    async def output(session_id: str, query_args: OutputQuery) -> Response:
        """Raw output bytes from ``offset`` (at most ``limit``). Headers: ``X-Output-Offset``
        (first byte's offset), ``X-Output-Next`` (offset to ask for next), ``X-Output-End``
        (bytes written so far), ``X-Output-Complete`` (``true`` once the session ended and
        the log is whole)."""
        await manager.get(session_id)
        feed = manager.feed(session_id)
        log_ = feed.log
        try:
            data = await trio.to_thread.run_sync(log_.read, query_args.offset, query_args.limit)
        except OffsetDroppedError as exc:
            raise ApiError(410, "offset_dropped", str(exc)) from None
        end = await trio.to_thread.run_sync(log_.end_offset)
        headers = {
            "X-Output-Offset": str(query_args.offset),
            "X-Output-Next": str(query_args.offset + len(data)),
            # read after the data: it is never short of what was just read
            "X-Output-End": str(end),
            "X-Output-Complete": "true" if feed.closed else "false",
        }
        return Response(data, content_type="application/octet-stream", headers=headers)

    @app.get(f"/{API_VERSION}/sessions/<session_id>/wait")
    @validate_querystring(WaitQuery)
    @document_response(WaitResult)
    async def wait(session_id: str, query_args: WaitQuery) -> Response:
        """Wait up to ``timeout`` seconds for the session to end (long poll). A daemon
        stopping answers at once (``ended`` false), so the poller is not cut off."""
        record = await manager.get(session_id)
        until = _parse_agent_states(query_args.until)
        reached = None if until is None else False
        with trio.move_on_after(query_args.timeout) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on, context.stopping, scope)
                if until is None:
                    record = await manager.wait(session_id)
                else:
                    record = await manager.wait_agent(session_id, until)
                    reached = (record.state.ended and AgentState.EXITED in until) or (
                        record.agent_state in until
                    )
                nursery.cancel_scope.cancel()
        if reached is False:
            record = await manager.get(session_id)
        out = session_out(record, context.computer_name)
        return _json(WaitResult(ended=record.state.ended, session=out, reached=reached))

    @app.post(f"/{API_VERSION}/sessions/<session_id>/relay")
    @validate_querystring(RelayQuery)
    @raw_response(204, None, "relaying")
    async def relay(session_id: str, query_args: RelayQuery) -> tuple[str, int]:
        """For other computers of the mesh: relay this session's output from ``offset`` into
        its Redis stream (``tb:out:<computer>:<session>``) for the next minute."""
        await manager.get(session_id)
        if context.mesh is None:
            raise ApiError(409, "no_mesh", "this daemon is not in a mesh")
        context.mesh.ensure_relay(session_id, query_args.offset)
        return "", 204

    # -- streams ---------------------------------------------------------------

    @app.get(f"/{API_VERSION}/sessions/<session_id>/stream")
    @validate_querystring(StreamQuery)
    @raw_response(200, "text/event-stream", "Server-Sent Events", ["output", "resync", "end", "shutdown"])
    async def stream(session_id: str, query_args: StreamQuery) -> Response:
        """Output as Server-Sent Events. Each ``output`` event's data is JSON ``{"offset",
        "data"}`` (UTF-8 text; a character split between reads waits for its end) and its id
        is the offset after it, so reconnecting with ``Last-Event-ID`` resumes exactly there.
        ``resync`` says output was dropped by retention; ``end`` carries the final session record;
        ``shutdown`` says the daemon is stopping (reconnect later)."""
        await manager.get(session_id)
        start = query_args.offset
        last_id = request.headers.get("Last-Event-ID")
        if last_id is not None:
            if not _is_offset(last_id):
                raise ApiError(
                    400, "invalid_last_event_id", f"Last-Event-ID must be an offset, not {last_id!r}"
                )
            start = int(last_id)
        feed = manager.feed(session_id)

        async def events(send: trio.MemorySendChannel[bytes]) -> None:
            async with aclosing(_output_events(feed, start)) as events:
                async for event in events:
                    await send.send(event)
            record = await _final_record(manager, session_id)
            await send.send(
                _sse("end", msgspec.json.encode(session_out(record, context.computer_name)).decode())
            )

        return _sse_response(context, events)

    @app.get(f"/{API_VERSION}/events")
    @raw_response(
        200,
        "text/event-stream",
        "Server-Sent Events",
        [*(k.value for k in EventKind), "overflow", "shutdown"],
    )
    async def events() -> Response:
        """Session lifecycle events as Server-Sent Events (``created``, ``running``,
        ``exited``, ``killed``, ``lost``, ``adopted``), from now on; each with an id, so that
        reconnecting with ``Last-Event-ID`` resumes after it (a ``resync`` event first says
        that the events missed could not all be replayed: look at the records). A client that
        falls far behind gets ``overflow`` and the stream ends."""
        # Subscribed before answering: a client that sees the response can count on every
        # event after it.
        if request.method == "HEAD":
            return _sse_head(context)
        last_id = request.headers.get("Last-Event-ID")
        subscription, complete = manager.subscribe_after(last_id[:64] if last_id is not None else None)

        async def produce(send: trio.MemorySendChannel[bytes]) -> None:
            if not complete:
                await send.send(_sse("resync", "{}"))
            async with subscription:
                async for event in subscription:
                    await send.send(
                        _sse(
                            str(event.kind),
                            msgspec.json.encode(EventOut.of(event, context.computer_name)).decode(),
                            event.id,
                        )
                    )
            await send.send(_sse("overflow", "{}"))

        try:
            return _sse_response(context, produce)
        except ApiError:
            subscription.close()
            raise

    @app.websocket(f"/{API_VERSION}/sessions/<session_id>/ws")
    async def session_ws(session_id: str) -> None:
        """Output out (binary messages, raw bytes) and input in (binary: raw bytes typed as
        keys; text: JSON ``{"type": "input", "text", "enter"}`` or ``{"type": "keys",
        "keys"}``). The first message is JSON ``{"type": "hello", "offset", "session"}``;
        ``?offset=N`` starts there, ``?offset=end`` at the end, ``?screen=1`` sends the
        rendered screen first as ``{"type": "screen", "text"}``. When the session ends:
        ``{"type": "end", "session"}`` and close code 1000; when the daemon stops: 1001."""
        record = await manager.get(session_id)
        feed = manager.feed(session_id)
        await websocket.accept()
        context.open_streams += 1
        try:
            await _serve_ws(context, record.id, feed)
        finally:
            context.open_streams -= 1

    from ..web import register_web  # the dashboard (serves nothing unless the setting is on)

    register_web(app, context)
    return app


# -- helpers ---------------------------------------------------------------------------------


def _computer_out(computer: Any, *, local: bool) -> ComputerOut:
    return ComputerOut(
        name=computer.name, online=computer.online, local=local, age=computer.age,
        version=computer.version, capabilities=list(computer.capabilities), sessions=computer.sessions,
        started_at=computer.started_at, host=computer.host,
    )  # fmt: skip


async def _ansi_screen(manager: SessionManager, record: SessionRecord) -> Screen:
    """The running session's screen with its escapes, cursor and size, and the output offset it
    shows everything before: a client seeded with it follows from there, nothing lost or shown
    twice. Exact when the output stood still for the capture (tried a few times); under
    continuous output, the latest offset (raises TmuxError)."""
    log_ = manager.feed(record.id).log
    for _ in range(5):
        before = await trio.to_thread.run_sync(log_.end_offset)
        fields = await manager.server.display(
            record.tmux_name, "#{cursor_x}", "#{cursor_y}", "#{pane_width}", "#{pane_height}"
        )
        text = await manager.server.capture(record.tmux_name, escapes=True)
        # The log (written through pipe-pane) trails the screen by a moment.
        await trio.sleep(0.02)
        offset = await trio.to_thread.run_sync(log_.end_offset)
        if offset == before:
            break
    x, y, width, height = (int(f) for f in fields)
    return Screen(id=record.id, text=text, live=True, cursor=[x, y], size=[width, height], offset=offset)


async def _final_record(manager: SessionManager, session_id: str) -> SessionRecord:
    """The record once the session's end is recorded: its log is complete a moment before."""
    with trio.move_on_after(manager.server.timeouts.tmux):
        return await manager.wait(session_id)
    return await manager.get(session_id)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"


def _insufficient_storage(exc: Exception) -> tuple[dict[str, Any], int]:
    log.error("out of disk space: %s", exc)
    message = "the daemon's file system is full (or its quota is used up); nothing was changed"
    if request.method == "DELETE":
        message = "the daemon's file system is full (or its quota is used up)"
    return _error(507, "insufficient_storage", message)


#: a JSON string: what is inside one cannot nest
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_ASCII_NOT_BRACKETS = dict.fromkeys(c for c in range(128) if chr(c) not in "[]{}")
_OPENERS_IN_A_ROW = re.compile(rf"[\[{{]{{{MAX_JSON_DEPTH + 1}}}")


class _JsonProvider(DefaultJSONProvider):
    """quart-schema's JSON provider, but request bodies have their nesting depth checked
    (cheaply) before they are parsed: the parser's recursion would end in a RecursionError."""

    def __init__(self, app: QuartTrio, inner: Any) -> None:
        super().__init__(app)
        self._inner = inner

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return self._inner.dumps(obj, **kwargs)  # type: ignore[no-any-return]

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        text = s.decode() if isinstance(s, bytes) else s
        if _too_deep(text):
            message = f"the JSON body nests more than {MAX_JSON_DEPTH} levels deep (or has unpaired brackets)"
            raise ApiError(400, "invalid_json", message)
        return self._inner.loads(text, **kwargs)


def _too_deep(text: str) -> bool:
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


def _json(value: msgspec.Struct, status: int = 200) -> Response:
    """A JSON response encoded by msgspec (several times faster than the json module)."""
    return Response(msgspec.json.encode(value), status=status, content_type="application/json")


_View = TypeVar("_View", bound=Callable[..., Awaitable[Any]])


def _strict_body(model: type[msgspec.Struct]) -> Callable[[_View], _View]:
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


def _parse_states(text: str | None) -> list[SessionState] | None:
    if not text:
        return None
    states = []
    for name in text.split(","):
        try:
            states.append(SessionState(name.strip(" ")))
        except ValueError:
            known = ", ".join(s.value for s in SessionState)
            raise ApiError(422, "invalid_state", f"unknown state {name!r}; one of: {known}") from None
    return states


_HOOK_PATH = re.compile(f"/{API_VERSION}/sessions/[^/]+/hooks")


#: control characters (C0, DEL, C1): they act on a terminal that prints them
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _check_unicode(code: str, field: str, value: str) -> None:
    """Refuse a lone surrogate (``\\ud800`` in JSON): not text, and it has no UTF-8 form."""
    if value.isascii():
        return
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        surrogate = ord(value[exc.start])
        message = f"{field} is not valid Unicode: lone surrogate U+{surrogate:04X} at index {exc.start}"
        raise ApiError(422, code, message) from None


def _check_plain(code: str, field: str, value: str) -> None:
    """Refuse what plain text cannot hold: lone surrogates and control characters."""
    _check_unicode(code, field, value)
    if (control := _CONTROL.search(value)) is not None:
        raise ApiError(
            422, code, f"{field} contains control character U+{ord(control[0]):04X} at index "
            f"{control.start()}: it is plain text",
        )  # fmt: skip


def _check_create_text(data: CreateSession) -> None:
    """Every string of a create request is valid Unicode; names, paths and the title are plain
    text. A command, shell line, environment value or agent argument may hold any other
    character (a shell script has newlines, a printf argument an ESC) but NUL, refused later."""
    if data.title is not None:
        _check_plain("invalid_title", "title", data.title)
    if data.cwd is not None:
        _check_plain("invalid_cwd", "cwd", data.cwd)
    for index, arg in enumerate(data.command or ()):
        _check_unicode("invalid_command", f"command[{index}]", arg)
    if data.shell is not None:
        _check_unicode("invalid_command", "shell", data.shell)
    for name, value in data.env.items():
        _check_unicode("invalid_env", "an environment variable's name", name)
        _check_unicode("invalid_env", f"environment variable {name}", value)
    for field in ("agent", "model", "resume"):
        if (value := getattr(data, field)) is not None:
            _check_plain("invalid_agent", field, value)
    for index, arg in enumerate([*data.args, data.prompt or ""]):
        _check_unicode("invalid_agent", "prompt" if index == len(data.args) else f"args[{index}]", arg)


def _agent_start(manager: SessionManager, data: CreateSession, max_prompt: int) -> AgentStart | None:
    """The agent a create request asks for (None: a plain session or a resume)."""
    for arg in [*data.args, data.model or "", data.prompt or ""]:
        if "\0" in arg:
            raise ApiError(422, "invalid_agent", "agent arguments cannot contain a NUL byte")
    if data.prompt is not None and (size := len(data.prompt.encode("utf-8", "surrogatepass"))) > max_prompt:
        # it goes on the agent's command line (one argument is at most 128 KiB on Linux)
        raise ApiError(
            413, "input_too_large",
            f"prompt is {size} bytes; at most {max_prompt} at start (submit longer ones with /prompt)",
        )  # fmt: skip
    if data.agent is None:
        if (data.model is not None or data.prompt is not None or data.args) and data.resume is None:
            raise ApiError(422, "invalid_agent", "model, prompt and args are for agent sessions")
        return None
    if data.command is not None or data.shell is not None:
        raise ApiError(422, "invalid_agent", "give either agent or command/shell, not both")
    if data.resume is not None:
        raise ApiError(422, "invalid_agent", "resume takes the agent of the resumed session: omit agent")
    profile = manager.agent_profiles.get(data.agent)
    if profile is None:
        raise UnknownAgentError(data.agent, sorted(manager.agent_profiles))
    return AgentStart(profile, model=data.model, prompt=data.prompt, extra_args=tuple(data.args))


def _parse_agent_states(text: str | None) -> list[AgentState] | None:
    if text is None:
        return None
    states = []
    for name in text.split(","):
        try:
            states.append(AgentState(name.strip(" ")))
        except ValueError:
            known = ", ".join(s.value for s in AgentState)
            raise ApiError(422, "invalid_until", f"unknown agent state {name!r} (known: {known})") from None
    return states


def _argv(data: CreateSession) -> list[str]:
    if data.command is not None and data.shell is not None:
        raise ApiError(422, "invalid_command", "give either command or shell, not both")
    if data.command is not None:
        if not data.command[0]:
            raise ApiError(422, "invalid_command", "the command's program must not be empty")
        return list(data.command)
    if data.shell is not None:
        return ["/bin/sh", "-c", data.shell]
    shell = os.environ.get("SHELL") or "/bin/sh"
    return [shlex.split(shell)[0] if shell.strip() else "/bin/sh", "-l"]


def _is_offset(text: str) -> bool:
    """A decimal offset in ASCII digits (``str.isdigit`` also accepts "²", which int() refuses)."""
    return text.isascii() and text.isdigit()


def _sse(event: str, data: str, event_id: int | str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def _utf8_cut(data: bytes) -> int:
    """Where ``data`` stops being whole UTF-8 characters (an incomplete last one waits)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII)
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return len(data) - back if back < need and byte >= 0xC0 else len(data)
    return len(data)


class SseOutput:
    """Output bytes -> SSE ``output`` events whose ids are offsets, never splitting a UTF-8
    character (an incomplete last one waits for the next bytes)."""

    def __init__(self, start: int) -> None:
        self._pending = b""
        self._offset = start

    def feed(self, offset: int, data: bytes) -> bytes:
        if offset != self._offset + len(self._pending):
            self._pending, self._offset = b"", offset  # after a resync
        data = self._pending + data
        cut = _utf8_cut(data)
        start = self._offset
        self._pending, self._offset = data[cut:], start + cut
        if not cut:
            return b""
        text = data[:cut].decode("utf-8", "replace")
        return _sse("output", json.dumps({"offset": start, "data": text}), start + cut)

    def resync(self, requested: int, offset: int) -> bytes:
        self._pending, self._offset = b"", offset
        return _sse("resync", json.dumps({"requested": requested, "offset": offset}), offset)

    def flush(self) -> bytes:
        if not self._pending:
            return b""
        text = self._pending.decode("utf-8", "replace")
        event = _sse(
            "output", json.dumps({"offset": self._offset, "data": text}), self._offset + len(self._pending)
        )
        self._offset += len(self._pending)
        self._pending = b""
        return event


async def _output_events(feed: OutputFeed, start: int) -> AsyncGenerator[bytes, None]:
    encoder = SseOutput(start)
    async with aclosing(feed.follow(start)) as chunks:
        async for item in chunks:
            if isinstance(item, Resync):
                yield encoder.resync(item.requested, item.offset)
                continue
            assert isinstance(item, Chunk)
            if event := encoder.feed(item.offset, item.data):
                yield event
    if event := encoder.flush():
        yield event


Producer = Callable[[trio.MemorySendChannel[bytes]], Awaitable[None]]


def _sse_response(context: ApiContext, produce: Producer) -> Response:
    """A streaming response whose events come from ``produce``, run in the server's stream
    nursery: when the server stops, it is cancelled and the stream ends with ``shutdown``;
    when the client goes away, the response body is closed and it is cancelled at once (not
    only at its next write: a quiet session would keep a reader for a keepalive period)."""
    if request.method == "HEAD":
        return _sse_head(context)
    if context.streams is None or context.stopping.is_set():
        raise ApiError(503, "shutting_down", "the daemon is shutting down")
    send, receive = trio.open_memory_channel[bytes](16)
    client_gone = trio.CancelScope()

    async def run() -> None:
        with client_gone, send:
            context.open_streams += 1
            try:
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_cancel_on, context.stopping, scope)
                        nursery.start_soon(_keepalive, send)
                        await produce(send)
                        nursery.cancel_scope.cancel()
                if scope.cancelled_caught:
                    with trio.move_on_after(1):
                        await send.send(_sse("shutdown", "{}"))
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away
            except* Exception as group:
                # One stream's failure ends that stream, never the server's other streams.
                log.error("an event stream failed", exc_info=group)  # noqa: TRY400
            finally:
                context.open_streams -= 1

    context.streams.start_soon(run)

    async def body() -> AsyncIterator[bytes]:
        try:
            async with receive:
                async for event in receive:
                    yield event
        finally:
            client_gone.cancel()

    response = Response(body(), content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None
    return response


def _sse_head(context: ApiContext) -> Response:
    """HEAD on a stream: its headers, and no stream (which would never end)."""
    if context.streams is None or context.stopping.is_set():
        raise ApiError(503, "shutting_down", "the daemon is shutting down")
    response = Response(b"", content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    return response


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _keepalive(send: trio.MemorySendChannel[bytes]) -> None:
    while True:
        await trio.sleep(_KEEPALIVE)
        await send.send(b": keepalive\n\n")


async def _serve_ws(context: ApiContext, session_id: str, feed: OutputFeed) -> None:
    manager = context.manager
    args = websocket.args
    offset_arg = args.get("offset", "0")
    if offset_arg == "end":
        start = await trio.to_thread.run_sync(feed.log.end_offset)
    elif _is_offset(offset_arg):
        start = int(offset_arg)
    else:
        await websocket.send(json.dumps({"type": "error", "message": f"bad offset {offset_arg!r}"}))
        await websocket.close(1008)
        return
    record = await manager.get(session_id)
    await websocket.send(
        json.dumps(
            {
                "type": "hello",
                "offset": start,
                "session": msgspec.to_builtins(session_out(record, context.computer_name)),
            }
        )
    )
    if "width" in args or "height" in args:
        # the attaching terminal's size, before its first screen is drawn (as tmux's attach)
        size = [args.get("width", ""), args.get("height", "")]
        if not all(n.isdigit() and 2 <= int(n) <= 1000 for n in size):
            await websocket.send(json.dumps({"type": "error", "message": "width and height: 2 to 1000"}))
            await websocket.close(1008)
            return
        if not record.state.ended:
            with contextlib.suppress(SessionEndedError):
                await manager.resize(session_id, int(size[0]), int(size[1]))
    if args.get("screen") in ("1", "true"):
        screen: dict[str, object] = {"type": "screen", "text": await manager.screen(session_id)}
        if (cursor := await manager.cursor(session_id)) is not None:
            screen["cursor"] = list(cursor)  # where the client puts its cursor after drawing
        await websocket.send(json.dumps(screen))

    async def pump_output(done: trio.CancelScope) -> None:
        async with aclosing(feed.follow(start)) as chunks:
            async for item in chunks:
                if isinstance(item, Resync):
                    await websocket.send(
                        json.dumps({"type": "resync", "requested": item.requested, "offset": item.offset})
                    )
                    continue
                assert isinstance(item, Chunk)
                await websocket.send(item.data)
        final = await _final_record(manager, session_id)
        await websocket.send(
            json.dumps(
                {"type": "end", "session": msgspec.to_builtins(session_out(final, context.computer_name))}
            )
        )
        await websocket.close(1000)
        done.cancel()

    async def take_input() -> None:
        while True:
            message = await websocket.receive()
            try:
                if isinstance(message, bytes):
                    await manager.send_bytes(session_id, message)
                    continue
                await _ws_command(context, session_id, message)
            except SessionEndedError:
                return  # the output side says so and closes
            except (ApiError, InvalidTextError, InvalidKeyError, TmuxTimeoutError) as exc:
                await websocket.send(json.dumps({"type": "error", "message": str(exc)}))

    async def stop_on_shutdown(done: trio.CancelScope) -> None:
        await context.stopping.wait()
        await websocket.close(1001, "the daemon is shutting down")
        done.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump_output, nursery.cancel_scope)
        nursery.start_soon(take_input)
        nursery.start_soon(stop_on_shutdown, nursery.cancel_scope)


async def _ws_command(context: ApiContext, session_id: str, message: str) -> None:
    if _too_deep(message):
        raise ApiError(400, "invalid_message", f"messages nest at most {MAX_JSON_DEPTH} levels deep")
    try:
        command = json.loads(message)
    except ValueError:
        raise ApiError(400, "invalid_message", "text messages must be JSON objects") from None
    kind = command.get("type") if isinstance(command, dict) else None
    if kind == "input":
        text = command.get("text")
        if not isinstance(text, str):
            raise ApiError(422, "invalid_message", "input needs a string 'text'")
        if len(text.encode("utf-8", "surrogatepass")) > context.max_input_bytes:
            raise ApiError(413, "input_too_large", f"input is larger than {context.max_input_bytes} bytes")
        await context.manager.send_text(session_id, text, enter=bool(command.get("enter")))
    elif kind == "keys":
        keys = command.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ApiError(422, "invalid_message", "keys needs a list of key names")
        await context.manager.send_keys(session_id, keys)
    elif kind == "resize":
        width, height = command.get("width"), command.get("height")
        if not all(type(n) is int and 2 <= n <= 1000 for n in (width, height)):
            raise ApiError(
                422, "invalid_message", "resize needs integers 'width' and 'height' from 2 to 1000"
            )
        assert isinstance(width, int) and isinstance(height, int)
        await context.manager.resize(session_id, width, height)
    elif kind == "sync":
        # answered once every message before it was handled (they are handled in order)
        await websocket.send(json.dumps({"type": "synced"}))
    else:
        raise ApiError(422, "invalid_message", "type must be 'input', 'keys', 'resize' or 'sync'")
