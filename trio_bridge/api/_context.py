"""What every part of the API shares: :class:`ApiContext` (the manager, the limits, the
server's stop signal), :class:`ApiError` (a refusal) and the JSON bodies both become.

The lowest floor of ``api/``: it imports nothing of the API but its models, so every other
module of the package may import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import msgspec
import trio
from quart import Response

from ..config import default_computer_name
from ..sessions import SessionManager, SessionRecord
from ..supervise import Supervisor
from ._access import Access

__all__ = ["API_VERSION", "ApiContext", "ApiError", "error_body", "final_record", "json_response"]

API_VERSION = "v1"


class ApiError(Exception):
    """A request the API refuses: becomes ``{"error": {"code", "message"}}`` with ``status``;
    ``fields`` are further members of the error object (e.g. ``first_offset`` of a 410)."""

    def __init__(self, status: int, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


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
    computer_name: str = attrs.field(factory=default_computer_name)
    #: ``http://host:port`` of the TCP listener, if any (the web dashboard's login links)
    tcp_url: str | None = None


def error_body(status: int, code: str, message: str, **fields: Any) -> tuple[dict[str, Any], int]:
    """The error response every refusal becomes: ``{"error": {"code", "message", ...}}``."""
    return {"error": {"code": code, "message": message, **fields}}, status


def json_response(value: msgspec.Struct, status: int = 200) -> Response:
    """A JSON response encoded by msgspec (several times faster than the json module)."""
    return Response(msgspec.json.encode(value), status=status, content_type="application/json")


async def final_record(manager: SessionManager, session_id: str) -> SessionRecord:
    """The record once the session's end is recorded: its log is complete a moment before."""
    with trio.move_on_after(manager.server.timeouts.tmux):
        return await manager.wait(session_id)
    return await manager.get(session_id)
