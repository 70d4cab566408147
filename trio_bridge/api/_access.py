"""Who may call the API: the token, the ``Host`` a request names, the ``Origin`` it comes from.

Every TCP request needs the bearer token (configured, or generated into a private file of the
state directory, which the owner's CLI reads). On top of that a TCP request must name this
daemon in ``Host`` (a DNS-rebinding page names its own domain: 421), and any request that carries
an ``Origin`` (every browser request that changes state, every WebSocket) must come from an allowed
origin (403): the daemon's own listener, or one listed in ``allowed_origins``. An origin is never
accepted just because it matches ``Host``: the attacker writes both. The unix socket (mode 0600
in a 0700 directory) is the owner's own door: it needs the token only when one was configured,
and an agent's hook never does.

With the web dashboard on (setting ``web``), a browser on a TCP listener may stand in a cookie
session for the token: a cookie made when the user followed a login link that only the token's
holder can get (``trio-bridge web``), signed with a key derived from the token (it outlives a
daemon restart, dies with the token) and bound to the listener's port. Because the browser adds
a cookie to every request for its host, whoever made the request, a cookie alone admits nothing:
the request must also show that the dashboard's own page made it: ``Origin`` is this listener
(browsers send it on every WebSocket handshake and on every fetch that can change state), or a
GET/HEAD carries ``Sec-Fetch-Site: same-origin`` (browsers leave ``Origin`` out of same-origin
reads; no page can set either header). See docs/security.md.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

import attrs

__all__ = ["WEB_SESSION_SECONDS", "Access", "AccessDenied", "Admitted", "ensure_token_file"]

#: what the request carries, as ASGI gives it: the listener's address, ``None`` on a unix socket
Server = tuple[str, int | None] | None

_HOOK_PATH = re.compile(r"/v1/sessions/[^/]+/hooks")
#: what the dashboard serves to anyone who names this daemon: its page and its login door
_NAME = r"[A-Za-z0-9_-][A-Za-z0-9_.-]*"
_WEB_PUBLIC_PATH = re.compile(rf"/|/login|/web/{_NAME}(/{_NAME})?")
#: how long a dashboard login lasts
WEB_SESSION_SECONDS = 12 * 3600

#: how a request got in: the owner's socket, an agent's hook, the bearer token, a dashboard
#: cookie session, or a page of the dashboard that needs no login
Admitted = Literal["socket", "hook", "token", "cookie", "public"]


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
    #: the web dashboard is served: its pages are public and cookie sessions admitted (TCP only)
    web: bool = False

    def check(self, server: Server, headers: _Headers, path: str, method: str = "GET") -> Admitted:
        """Admit a request (HTTP or WebSocket handshake; ``method`` GET for the latter) and say
        how, or raise :class:`AccessDenied`."""
        if server is None:
            if _HOOK_PATH.fullmatch(path):
                # An agent's hook, over the owner's socket: the token is never handed to agents.
                return "hook"
            self._check_origin(server, headers.get("Origin"))
            self._check_token(self.token, headers.get("Authorization"))
            return "socket"
        self._check_host(server, headers.get("Host"))
        origin = headers.get("Origin")
        self._check_origin(server, origin)
        if self.web and method in ("GET", "HEAD") and _WEB_PUBLIC_PATH.fullmatch(path):
            return "public"  # static files and the login door: nothing secret, nothing done
        if self.web and headers.get("Authorization") is None and not _HOOK_PATH.fullmatch(path):
            cookie = _cookie(headers.get("Cookie"), self.cookie_name(server[1]))
            if cookie is not None and self._web_session_valid(server[1], cookie):
                # The cookie rides along with any request for this host, a foreign page's too:
                # only a request the dashboard's own page made may use it (see the docstring).
                fetch_site = headers.get("Sec-Fetch-Site")
                read = method in ("GET", "HEAD") and origin is None and fetch_site == "same-origin"
                if read or (origin is not None and self._is_own_origin(server, origin)):
                    return "cookie"
                raise AccessDenied(
                    403, "cross_origin", "a dashboard session is accepted only from the dashboard's page"
                )
        self._check_token(self.tcp_token, headers.get("Authorization"))
        return "token"

    # -- the dashboard's cookie sessions ----------------------------------------------------

    @staticmethod
    def cookie_name(port: int | None) -> str:
        """The session cookie's name on the listener at ``port``: browsers send a host's
        cookies to all of its ports, so two daemons' dashboards would otherwise overwrite
        each other's."""
        return f"tb_web_{port or 0}"

    def web_session(self, port: int | None, *, now: float | None = None) -> str:
        """A new session cookie's value for the listener at ``port``, valid for
        :data:`WEB_SESSION_SECONDS`: ``expiry.nonce.mac``."""
        expiry = int((time.time() if now is None else now) + WEB_SESSION_SECONDS)
        nonce = secrets.token_urlsafe(16)
        return f"{expiry}.{nonce}.{self._session_mac(port, expiry, nonce)}"

    def _session_mac(self, port: int | None, expiry: int, nonce: str) -> str:
        if self.tcp_token is None:
            raise ValueError("dashboard sessions need the TCP listener's token")
        # A key of its own, derived from the token: a cookie is no token, and changing the
        # token ends every session.
        key = hmac.new(self.tcp_token.encode(), b"trio-bridge web session key", hashlib.sha256).digest()
        mac = hmac.new(key, f"{port or 0}.{expiry}.{nonce}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _web_session_valid(self, port: int | None, value: str, *, now: float | None = None) -> bool:
        parts = value.split(".")
        if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 12:
            return False
        expiry, nonce, mac = int(parts[0]), parts[1], parts[2]
        if expiry <= (time.time() if now is None else now) or self.tcp_token is None:
            return False
        return hmac.compare_digest(mac.encode(), self._session_mac(port, expiry, nonce).encode())

    def _is_own_origin(self, server: tuple[str, int | None], origin: str) -> bool:
        parts = urlsplit(origin.strip().lower())
        with contextlib.suppress(ValueError):
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
            return (
                parts.scheme in ("http", "https") and bool(parts.hostname) and port == server[1]
                and self._host_allowed(parts.hostname or "") and not parts.path and not parts.query
            )  # fmt: skip
        return False

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


def _cookie(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header (None if absent or given twice:
    a second one may have been planted by a page of another port of this host)."""
    if not header:
        return None
    values = [
        value.strip() for key, sep, value in (part.partition("=") for part in header.split(";"))
        if sep and key.strip() == name
    ]  # fmt: skip
    return values[0] if len(values) == 1 else None


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
        return _read_token_file(path)  # made by an earlier start: the owner's CLI knows it
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _read_token_file(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.geteuid() or info.st_mode & 0o077 or not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a private file of this user; remove it")
        text = f.read(4096).strip()
    if len(text) < 16:
        raise ValueError(f"{path} does not hold a token; remove it")
    return text
