"""One HTTP connection's failure stays in that connection.

hypercorn 0.18's Trio worker runs each connection as a handler of ``trio.serve_listeners``, whose
exceptions propagate: one connection that trips a protocol error takes the whole server down
with every other client's stream (upstream pgjones/hypercorn#225 and #329; here a refused
WebSocket handshake followed by another request on the same connection raised h11's
``LocalProtocolError``, which anyone who can connect could repeat until the daemon's supervisor
gave up). hypercorn offers no hook for the handler, so :func:`contain_connection_errors`
replaces the ``TCPServer`` name its worker looks up with a subclass that logs such an error
(with its traceback) and closes that connection only. Cancellation is never caught.
"""

from __future__ import annotations

import logging

import hypercorn.trio.run
from hypercorn.trio.tcp_server import TCPServer

__all__ = ["contain_connection_errors"]

log = logging.getLogger("trio_bridge.api")


class _ContainedTCPServer(TCPServer):
    async def run(self) -> None:
        try:
            await super().run()
        except Exception:  # a BaseExceptionGroup holding Cancelled is not an Exception: it propagates
            log.warning("an HTTP connection failed; closed it (the server goes on)", exc_info=True)


def contain_connection_errors() -> None:
    """Make hypercorn's Trio worker contain each connection's errors (idempotent)."""
    hypercorn.trio.run.TCPServer = _ContainedTCPServer  # type: ignore[attr-defined]
