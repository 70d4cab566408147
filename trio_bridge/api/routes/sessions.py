"""Sessions as resources: list, create, read, wait for, signal, kill, remove."""

from __future__ import annotations

import os
import shlex
import signal as signals
from pathlib import Path

import msgspec
import trio
from quart import Response
from quart_schema import document_response, validate_querystring, validate_request
from quart_trio import QuartTrio

from ...agents import AgentState
from ...sessions import SessionManager, SessionState
from ...sessions.manager import AgentStart, SessionEndedError, UnknownAgentError
from ...tmux.server import TMUX_COMMAND_MAX, is_env_name
from .._context import API_VERSION, ApiContext, ApiError, json_response
from .._http import check_plain, check_unicode, parse_names, strict_body
from .._models import (
    CreateSession,
    ListQuery,
    SessionList,
    SessionOut,
    SignalBody,
    WaitQuery,
    WaitResult,
    session_out,
)
from .._openapi import raw_response
from .._sse import cancel_on

__all__ = ["MAX_ENV_STRING", "parse_states", "register"]

#: bytes of one ``NAME=value`` environment string at most (Linux's MAX_ARG_STRLEN: execve
#: refuses a longer one, so the command would not start)
MAX_ENV_STRING = (32 << 12) - 1


def parse_states(text: str | None) -> list[SessionState] | None:
    """A listing's ``state`` filter (None: every state); 422 ``invalid_state`` for a name that
    is not a state."""
    return parse_names(SessionState, text, code="invalid_state", what="state")


def register(app: QuartTrio, context: ApiContext) -> None:
    """Add the session routes to ``app``."""
    manager = context.manager
    list_cache: dict[tuple[int, str | None], bytes] = {}

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
            states = parse_states(query_args.state)
            records = await manager.store.all(states)
            sessions = SessionList(sessions=[session_out(r, context.computer_name) for r in records])
            body = msgspec.json.encode(sessions)
            if len(list_cache) > 16 or any(v != key[0] for v, _ in list_cache):
                list_cache.clear()
            list_cache[key] = body
        return Response(body, content_type="application/json")

    @app.post(f"/{API_VERSION}/sessions")
    @strict_body(CreateSession)
    @validate_request(CreateSession)
    @document_response(SessionOut, 201)
    async def create_session(data: CreateSession) -> Response:
        """Start a session; it is running when this returns. With ``agent``: an AI coding
        agent session (``command``/``shell`` not allowed), optionally resuming an earlier
        session's conversation (``resume``). With ``"stdin": "pipe"``, its command reads what
        ``PUT .../stdin`` sends instead of its terminal."""
        _check_create_text(data)
        if data.stdin == "pipe" and (data.agent is not None or data.resume is not None):
            raise ApiError(
                422, "invalid_stdin", 'an agent reads its terminal: "stdin": "pipe" is for commands'
            )
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
                origin="api", agent=agent, name=data.name, stdin_pipe=data.stdin == "pipe",
            )  # fmt: skip
        return json_response(session_out(record, context.computer_name), 201)

    @app.get(f"/{API_VERSION}/sessions/<session_id>")
    @document_response(SessionOut)
    async def get_session(session_id: str) -> Response:
        """One session."""
        return json_response(session_out(await manager.get(session_id), context.computer_name))

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
        return json_response(session_out(record, context.computer_name))

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
    @strict_body(SignalBody)
    @validate_request(SignalBody)
    @raw_response(204, None, "sent")
    async def signal_session(session_id: str, data: SignalBody) -> tuple[str, int]:
        """Send a signal to the session's command (``trio-bridge kill -s``); the session ends
        if the command dies of it."""
        name = data.signal if data.signal.startswith("SIG") else f"SIG{data.signal}"
        try:
            signum = signals.Signals[name]
        except KeyError:
            raise ApiError(
                422, "invalid_signal", f"no signal {data.signal!r} (e.g. TERM, INT, HUP, KILL, USR1)"
            ) from None
        await manager.signal(session_id, signum)
        return "", 204

    @app.get(f"/{API_VERSION}/sessions/<session_id>/wait")
    @validate_querystring(WaitQuery)
    @document_response(WaitResult)
    async def wait(session_id: str, query_args: WaitQuery) -> Response:
        """Wait up to ``timeout`` seconds for the session to end (long poll). A daemon
        stopping answers at once (``ended`` false), so the poller is not cut off."""
        record = await manager.get(session_id)
        until = parse_names(
            AgentState, query_args.until, code="invalid_until", what="agent state", empty=False
        )
        reached = None if until is None else False
        with trio.move_on_after(query_args.timeout) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on, context.stopping, scope)
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
        return json_response(WaitResult(ended=record.state.ended, session=out, reached=reached))


def _check_create_text(data: CreateSession) -> None:
    """Every string of a create request is valid Unicode; names, paths and the title are plain
    text. A command, shell line, environment value or agent argument may hold any other
    character (a shell script has newlines, a printf argument an ESC) but NUL, refused later."""
    if data.title is not None:
        check_plain("invalid_title", "title", data.title)
    if data.cwd is not None:
        check_plain("invalid_cwd", "cwd", data.cwd)
    for index, arg in enumerate(data.command or ()):
        check_unicode("invalid_command", f"command[{index}]", arg)
    if data.shell is not None:
        check_unicode("invalid_command", "shell", data.shell)
    for name, value in data.env.items():
        check_unicode("invalid_env", "an environment variable's name", name)
        check_unicode("invalid_env", f"environment variable {name}", value)
    for field in ("agent", "model", "resume"):
        if (value := getattr(data, field)) is not None:
            check_plain("invalid_agent", field, value)
    for index, arg in enumerate([*data.args, data.prompt or ""]):
        check_unicode("invalid_agent", "prompt" if index == len(data.args) else f"args[{index}]", arg)


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
