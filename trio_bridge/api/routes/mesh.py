"""The mesh: its computers, the relay other computers ask for, and ``?computer=NAME``, which
sends a session request to the computer named (the forwarding itself is :mod:`.._remote`)."""

from __future__ import annotations

import re
import socket
from typing import Any

import msgspec
from quart import Response, request
from quart_schema import document_response, validate_querystring
from quart_trio import QuartTrio

from ..._version import __version__
from ...sessions import SessionState
from .. import _remote
from .._context import API_VERSION, ApiContext, ApiError, json_response
from .._http import is_offset
from .._models import ComputerList, ComputerOut, RelayQuery, session_out
from .._openapi import raw_response
from .._streaming import is_streamed
from .sessions import parse_states

__all__ = ["register"]

_STREAM_PATH = re.compile(f"/{API_VERSION}/sessions/([^/]+)/stream")


def register(app: QuartTrio, context: ApiContext) -> None:
    """Add the mesh routes to ``app``, and the hook that forwards ``?computer=`` requests
    (after the access checks: register this after ``_admission``)."""
    manager = context.manager

    @app.before_request
    async def _route_to_computer() -> Response | None:
        # ?computer=NAME: a session operation on another computer of the mesh.
        computer = request.args.get("computer")
        if computer is not None and request.path == f"/{API_VERSION}/events" and context.mesh is not None:
            if computer in ("", context.computer_name):
                return None
            return await _remote.events_remote(context, computer)
        if computer is None or not request.path.startswith(f"/{API_VERSION}/sessions"):
            return None
        if computer in ("", context.computer_name):
            return None
        if context.mesh is None:
            if computer == "*":
                return None
            raise ApiError(404, "unknown_computer", f"no computer {computer!r}: this daemon is not in a mesh")
        if is_streamed(request.method, request.path):
            # (a forwarded request carries its whole body in one message)
            raise ApiError(422, "invalid_computer", "a session's stdin is fed on its own computer only")
        if computer == "*":
            if request.method == "GET" and request.path == f"/{API_VERSION}/sessions":
                local = [
                    msgspec.to_builtins(session_out(r, context.computer_name))
                    for r in await manager.store.all()
                ]
                states = parse_states(request.args.get("state"))
                if states is not None:
                    local = [s for s in local if s["state"] in states]
                return await _remote.list_everywhere(context, local)
            raise ApiError(422, "invalid_computer", "computer=* is only for listing sessions")
        stream = _STREAM_PATH.fullmatch(request.path)
        if stream is not None and request.method == "GET":
            last_id = request.headers.get("Last-Event-ID")
            offset = request.args.get("offset", "0")
            start = last_id if last_id is not None else offset
            if not is_offset(start):
                raise ApiError(400, "invalid_offset", f"the start offset must be a number, not {start!r}")
            return await _remote.stream_remote(context, computer, stream[1], int(start))
        return await _remote.forward(context, computer)

    @app.get(f"/{API_VERSION}/computers")
    @document_response(ComputerList)
    async def computers() -> Response:
        """The computers of the mesh with online/offline and the age of their last heartbeat
        (without a mesh: this computer alone)."""
        if context.mesh is None:
            running = await manager.store.all([SessionState.STARTING, SessionState.RUNNING])
            local = ComputerOut(
                name=context.computer_name, online=True, local=True, age=0.0,
                version=__version__, capabilities=[], sessions=len(running), started_at=0.0,
                host=socket.gethostname(),
            )  # fmt: skip
            return json_response(ComputerList(computers=[local], mesh=False))
        from ...mesh import RedisUnavailableError

        try:
            found = await context.mesh.computers()
        except RedisUnavailableError as exc:
            raise ApiError(503, "mesh_unavailable", str(exc)) from None
        return json_response(
            ComputerList(
                computers=[_computer_out(c, local=c.name == context.mesh.name) for c in found],
                mesh=True,
                signed=context.mesh.signed,
            )
        )

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


def _computer_out(computer: Any, *, local: bool) -> ComputerOut:
    return ComputerOut(
        name=computer.name, online=computer.online, local=local, age=computer.age,
        version=computer.version, capabilities=list(computer.capabilities), sessions=computer.sessions,
        started_at=computer.started_at, host=computer.host,
    )  # fmt: skip
