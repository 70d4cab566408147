"""Who may call the API: the token, the ``Host`` a request names, the ``Origin`` it comes from.

Every TCP request needs the bearer token (configured, or generated into a private file of the
state directory, which the owner's CLI reads). On top of that a TCP request must name this
daemon in ``Host`` (a DNS-rebinding page names its own domain: 421), and any request that carries
an ``Origin`` (every browser request that changes state, every WebSocket) must come from an allowed
origin (403): the daemon's own listener, or one listed in ``allowed_origins``. An origin is never
accepted just because it matches ``Host``: the attacker writes both. The unix socket (mode 0600
in a 0700 directory) is the owner's own door: it needs the token only when one was configured,
and an agent's hook never does. See docs/security.md.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import attrs

__all__ = ["Access", "AccessDenied", "ensure_token_file"]

#: what the request carries, as ASGI gives it: the listener's address, ``None`` on a unix socket
Server = tuple[str, int | None] | None

_HOOK_PATH = re.compile(r"/v1/sessions/[^/]+/hooks")


class _Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


class AccessDenied(Exception):
    """A request that may not come in: ``status`` (401, 403, 421), ``code`` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (IPv6 in brackets) as (lower-case host, port), or None if malformed."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::([0-9]{1,5}))?", value.strip())
    if match is None:
        return None
    host = match[1].lower().removeprefix("[").removesuffix("]")
    port = int(match[2]) if match[2] is not None else None
    return host, port


def _is_ip(host: str) -> bool:
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    return False


@attrs.frozen
class Access:
    """The API's admission rules (see the module docstring)."""

    #: the configured token: required on every listener when set
    token: str | None = attrs.field(default=None, repr=False)
    #: the token TCP requests need (the configured one, else the generated one)
    tcp_token: str | None = attrs.field(default=None, repr=False)
    allowed_hosts: frozenset[str] = frozenset()
    allowed_origins: frozenset[str] = frozenset()

    def check(self, server: Server, headers: _Headers, path: str) -> None:
        """Admit a request (HTTP or WebSocket handshake), or raise :class:`AccessDenied`."""
        if server is None:
            if _HOOK_PATH.fullmatch(path):
                # An agent's hook, over the owner's socket: the token is never handed to agents.
                return
            self._check_origin(server, headers.get("Origin"))
            self._check_token(self.token, headers.get("Authorization"))
            return
        self._check_host(server, headers.get("Host"))
        self._check_origin(server, headers.get("Origin"))
        self._check_token(self.tcp_token, headers.get("Authorization"))

    def _host_allowed(self, host: str) -> bool:
        # An address literal cannot be rebound to another site, and a browser page reaching
        # us by address has that address as its origin.
        return host == "localhost" or host in self.allowed_hosts or _is_ip(host)

    def _check_host(self, server: tuple[str, int | None], value: str | None) -> None:
        parsed = _split_host(value) if value else None
        if parsed is None or not self._host_allowed(parsed[0]) or parsed[1] not in (None, server[1]):
            raise AccessDenied(
                421,
                "misdirected_request",
                f"Host {value!r} does not name this daemon (allowed: its address, localhost, "
                "or a name in allowed_hosts)",
            )

    def _check_origin(self, server: Server, origin: str | None) -> None:
        if origin is None:
            return  # not from a browser page (browsers send Origin on what could do harm)
        normalized = origin.strip().lower()
        if normalized in self.allowed_origins:
            return
        if server is not None:
            parts = urlsplit(normalized)
            with contextlib.suppress(ValueError):
                parsed = (parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme))
                # Our own listener's pages (a dashboard this daemon serves).
                ours = parts.scheme in ("http", "https") and parsed[0] and parsed[1] == server[1]
                if ours and self._host_allowed(parsed[0] or "") and not parts.path and not parts.query:
                    return
        raise AccessDenied(403, "cross_origin", f"requests from origin {origin!r} are not allowed")

    @staticmethod
    def _check_token(token: str | None, authorization: str | None) -> None:
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        # compare_digest: the time taken says nothing about how much of the token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise AccessDenied(
                401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required"
            )


def ensure_token_file(path: Path) -> str:
    """The token in ``path``, made first if there is none: a random one, in a new 0600 file
    (never through a link). The owner's CLI reads it from there; nobody else can.

    Raises:
        OSError: the file cannot be made or read.
        ValueError: it exists but is not the user's own private, regular file.
    """
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.geteuid() or info.st_mode & 0o077 or not (info.st_mode & 0o170000 == 0o100000):
            raise ValueError(f"{path} is not a private file of this user; remove it")
        text = f.read(4096).strip()
    if len(text) < 16:
        raise ValueError(f"{path} does not hold a token; remove it")
    return text
