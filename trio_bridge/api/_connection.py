"""One HTTP connection's failure stays in that connection, and no client holds the door.

hypercorn 0.18's Trio worker runs each connection as a handler of ``trio.serve_listeners``, whose
exceptions propagate: one connection that trips a protocol error takes the whole server down
with every other client's stream (upstream pgjones/hypercorn#225 and #329; here a refused
WebSocket handshake followed by another request on the same connection raised h11's
``LocalProtocolError``, which anyone who can connect could repeat until the daemon's supervisor
gave up). hypercorn offers no hook for the handler, so :func:`contain_connections` replaces the
``TCPServer`` name its worker looks up with a subclass that:

- logs such an error (with its traceback) and closes that connection only;
- closes a connection it has finished with even when the task doing so is being cancelled:
  hypercorn closes from the request's task after a response with ``Connection: close``, and
  that task is cancelled as the application returns, so the close's first checkpoint raised and
  the socket stayed open. 300 unauthenticated clients that sent headers and one byte of a body
  each got their 401 and kept their descriptors until the daemon hit EMFILE;
- admits at most ``max_connections`` open connections per listener and closes any beyond at
  once, each listener counted on its own: a flood on TCP never locks the owner out of the unix
  socket.

Cancellation is never caught.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from typing import ClassVar

import hypercorn.trio.run
import trio
from hypercorn.trio.tcp_server import TCPServer

__all__ = ["contain_connections", "open_connections"]

log = logging.getLogger("trio_bridge.api")

#: seconds closing one connection may take (it is a shutdown and a close: no waiting)
_CLOSE_BOUND = 1.0


def _listener_key(stream: object) -> str:
    transport = getattr(stream, "transport_stream", stream)  # under TLS, the stream inside
    sock = getattr(transport, "socket", None)
    if sock is None:
        return "?"
    try:
        name = sock.getsockname()
    except OSError:
        return "?"
    return "unix" if sock.family == socket.AF_UNIX else str(name[:2])


class _ContainedTCPServer(TCPServer):
    #: open connections per listener; the limit per listener (the unix socket's included)
    open: ClassVar[Counter[str]] = Counter()
    max_connections: int = 256

    async def run(self) -> None:
        key = _listener_key(self.stream)
        if _ContainedTCPServer.open[key] >= self.max_connections:
            log.warning("too many open connections on %s (%d): closed a new one", key, self.max_connections)
            await self._close()
            return
        _ContainedTCPServer.open[key] += 1
        try:
            await super().run()
        except Exception:  # a BaseExceptionGroup holding Cancelled is not an Exception: it propagates
            log.warning("an HTTP connection failed; closed it (the server goes on)", exc_info=True)
        finally:
            _ContainedTCPServer.open[key] -= 1

    async def _close(self) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _CLOSE_BOUND
            await super()._close()


def open_connections() -> dict[str, int]:
    """Open API connections by listener (for metrics and tests)."""
    return {key: count for key, count in _ContainedTCPServer.open.items() if count}


def contain_connections(max_connections: int) -> None:
    """Make hypercorn's Trio worker contain each connection (idempotent; see the module)."""
    _ContainedTCPServer.max_connections = max_connections
    hypercorn.trio.run.TCPServer = _ContainedTCPServer  # type: ignore[attr-defined]
