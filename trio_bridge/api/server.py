"""Serving the API: listening sockets, hypercorn's Trio worker, and a graceful stop.

The daemon binds the sockets once (:func:`open_listeners`: bind errors are fatal at start-up,
with a clear message) and hands copies to :func:`serve_api`, so a supervisor can restart the
server on the same sockets after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from ..config import Settings, parse_bind
from ._connection import contain_connections
from .app import ApiContext, create_app

__all__ = ["ApiBindError", "Listeners", "open_listeners", "serve_api"]

log = logging.getLogger(__name__)


class ApiBindError(Exception):
    """The API cannot listen where it was asked to (one line, saying why)."""


@attrs.frozen
class Listeners:
    """The API's listening sockets and where clients reach them."""

    sockets: tuple[socket.socket, ...]
    unix_path: Path
    #: ``http://host:port`` of the TCP listener, if any
    tcp_url: str | None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):  # not an address literal: a name, resolved below
        return ipaddress.ip_address(host).is_loopback
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _live_socket(path: Path) -> bool:
    """Whether something accepts connections on the unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _bind_unix(path: Path) -> socket.socket:
    # The directory is private, so nobody else can reach the socket even before chmod.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ApiBindError(f"{path} exists and is not a socket; not touching it")
        if _live_socket(path):
            raise ApiBindError(f"another trio-bridge daemon is serving on {path}")
        path.unlink()  # left by a daemon that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ApiBindError(f"cannot listen on {path}: {exc.strerror}") from None
    return sock


def _bind_tcp(bind: str, token: str | None) -> tuple[socket.socket, str]:
    host, port = parse_bind(bind)
    loopback = _is_loopback(host)
    if not loopback and token is None:
        raise ApiBindError(
            f"refusing to serve the API on {bind} (not loopback) without a token: "
            "set TRIO_BRIDGE_TOKEN (or --token) first"
        )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ApiBindError(f"cannot resolve {host!r}: {exc}") from None
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ApiBindError(f"cannot listen on {bind}: {reason}") from None
    actual_host, actual_port = sock.getsockname()[:2]
    shown = f"[{actual_host}]" if ":" in actual_host else actual_host
    return sock, f"http://{shown}:{actual_port}"


@contextlib.contextmanager
def open_listeners(settings: Settings) -> Iterator[Listeners]:
    """Bind the API's sockets: always the unix socket (mode 0600), and TCP if ``bind`` is set.

    Closes them on exit and removes the unix socket's path (if it is still ours).

    Raises:
        ApiBindError: another daemon serves the socket, the address is taken, or a
            non-loopback address was asked for without a token.
    """
    path = settings.api_socket
    sockets = [_bind_unix(path)]
    identity = path.stat().st_ino
    tcp_url = None
    try:
        if settings.bind is not None:
            tcp, tcp_url = _bind_tcp(settings.bind, settings.token)
            sockets.append(tcp)
        yield Listeners(tuple(sockets), path, tcp_url)
    finally:
        for sock in sockets:
            sock.close()
        with contextlib.suppress(OSError):
            if path.stat().st_ino == identity:
                path.unlink()


async def serve_api(
    context: ApiContext,
    listeners: Listeners,
    *,
    graceful_timeout: float = 2.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API on ``listeners`` until cancelled; report the bound URLs when ready.

    Owns hypercorn's server (its connection tasks) and the nursery of stream producers. When
    cancelled it stops gracefully, shielded and bounded by ``graceful_timeout`` (plus one
    second of slack): ``context.stopping`` ends every SSE stream with a ``shutdown`` event and
    closes every WebSocket with 1001, then hypercorn stops accepting and finishes.
    """
    contain_connections(context.max_connections)
    app = create_app(context)
    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}" for sock in listeners.sockets]
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("trio_bridge.api.hypercorn")
    config.include_server_header = False
    # Also the bound on reading a request's headers (the idle timer runs until they are in);
    # a body's reads are bounded by the application's BODY_TIMEOUT.
    config.keep_alive_timeout = 15
    context.stopping = trio.Event()
    stop = trio.Event()
    # Shielded from our caller's cancellation, so that the graceful path runs; bounded
    # once stopping starts.
    shield = trio.CancelScope(shield=True)

    async def _serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
        with shield:
            async with trio.open_nursery() as streams:
                context.streams = streams
                try:
                    await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
                finally:
                    context.streams = None
                    streams.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(_serve)
        log.info("API listening on %s", ", ".join(binds))
        task_status.started(binds)
        try:
            await trio.sleep_forever()
        finally:
            shield.deadline = trio.current_time() + graceful_timeout + 1.0
            context.stopping.set()
            stop.set()
