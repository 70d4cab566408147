"""The web dashboard: its page (plain HTML, CSS and ES modules in ``static/``, no build step),
the login door, and the single-use login links the owner's CLI asks for.

Served only with the setting ``web`` on a TCP listener (``Access.web``). The page and its files
hold nothing secret and are public (``Host`` is still checked); everything else the page does
goes through the API with the cookie session made at ``/login`` (see
:mod:`trio_bridge.api._access`). Every page response carries a Content-Security-Policy that
allows only this origin's scripts (no inline script, no eval) and ``Referrer-Policy:
no-referrer``. Styles may be inline: xterm.js's DOM renderer writes its own ``<style>`` elements.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import secrets
import time
from pathlib import Path
from typing import Any

import attrs
import msgspec
from quart import Response, request
from quart_schema import document_response
from quart_trio import QuartTrio

__all__ = ["CSP", "LOGIN_SECONDS", "LoginCodes", "register_web"]

STATIC = Path(__file__).with_name("static")
#: how long a login link is valid
LOGIN_SECONDS = 60.0
#: login links not yet used, at most (the oldest goes first)
_MAX_CODES = 64

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


class LoginLink(msgspec.Struct):
    """A single-use login link to the dashboard."""

    url: str
    #: seconds it stays valid
    expires_in: float


@attrs.define
class LoginCodes:
    """Single-use login codes, each valid :data:`LOGIN_SECONDS`; kept in memory as their
    SHA-256 only (a daemon restart forgets them: ask for a new link)."""

    _codes: dict[bytes, float] = attrs.field(factory=dict)

    def issue(self, *, now: float | None = None) -> str:
        """A new code (32 random bytes, URL-safe)."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        while len(self._codes) >= _MAX_CODES:
            del self._codes[next(iter(self._codes))]
        code = secrets.token_urlsafe(32)
        self._codes[hashlib.sha256(code.encode()).digest()] = now + LOGIN_SECONDS
        return code

    def redeem(self, code: str, *, now: float | None = None) -> bool:
        """Whether ``code`` is a valid code; it is used up either way."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        digest = hashlib.sha256(code.encode("utf-8", "replace")).digest()
        for known in list(self._codes):
            # compare_digest over every kept code: the time taken says nothing about which matched.
            if hmac.compare_digest(known, digest):
                del self._codes[known]
                return True
        return False

    def _expire(self, now: float) -> None:
        for key, deadline in list(self._codes.items()):
            if deadline <= now:
                del self._codes[key]


@attrs.frozen
class _File:
    body: bytes
    content_type: str
    etag: str


def _static_files() -> dict[str, _File]:
    """Every file of ``static/`` by its path there (read once: they are small and fixed)."""
    files = {}
    for path in sorted(STATIC.rglob("*")):
        if not path.is_file():
            continue
        name = path.relative_to(STATIC).as_posix()
        body = path.read_bytes()
        content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(name)[0] or "text/plain"
        if content_type.startswith("text/"):
            content_type += "; charset=utf-8"
        files[name] = _File(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


def login_base(tcp_url: str) -> str:
    """The URL a browser on this computer reaches the listener at (a wildcard address is not
    one: its loopback counterpart is)."""
    scheme, _, rest = tcp_url.partition("://")
    host, _, port = rest.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    return f"{scheme}://{host}:{port}"


def register_web(app: QuartTrio, context: Any) -> None:
    """Add the dashboard's routes to the API's application (``context`` is its ApiContext)."""
    from ..api._context import ApiError
    from ..api._openapi import raw_response

    codes = LoginCodes()
    files = _static_files()

    def enabled() -> None:
        if not context.access.web or "server" not in request.scope or request.scope["server"] is None:
            raise ApiError(404, "not_found", "the web dashboard is not served here (setting web)")

    def page(file: _File) -> Response:
        if request.headers.get("If-None-Match") == file.etag:
            response = Response(b"", status=304)
        else:
            response = Response(file.body, content_type=file.content_type)
        response.headers.update(_PAGE_HEADERS)
        response.headers["ETag"] = file.etag
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.post("/v1/web/login")
    @document_response(LoginLink)
    async def web_login_link() -> Response:
        """A single-use login link to the dashboard, valid 60 s (``trio-bridge web``): for the
        owner, over the unix socket or with the token; never for a dashboard session, never
        through the mesh."""
        if "server" not in request.scope:
            raise ApiError(403, "forbidden", "login links are made by their own computer only")
        how = context.access.check(request.scope["server"], request.headers, request.path, request.method)
        if how not in ("socket", "token"):
            raise ApiError(403, "forbidden", "login links are for the token's holder")
        if not context.access.web or context.tcp_url is None:
            raise ApiError(
                409, "web_disabled", "the dashboard is off: start the daemon with --bind HOST:PORT --web"
            )
        url = f"{login_base(context.tcp_url)}/login?code={codes.issue()}"
        response = Response(msgspec.json.encode(LoginLink(url=url, expires_in=LOGIN_SECONDS)))
        response.content_type = "application/json"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    @raw_response(200, "text/html", "the dashboard (setting web; 404 without it)")
    async def web_dashboard() -> Response:
        """The dashboard's page."""
        enabled()
        return page(files["index.html"])

    @app.get("/web/<path:name>")
    @raw_response(200, "text/plain", "a file of the dashboard: script, style, xterm.js")
    async def web_static(name: str) -> Response:
        """The page's scripts, styles and the vendored xterm.js."""
        enabled()
        file = files.get(name)
        if file is None:
            raise ApiError(404, "not_found", f"no file {name!r}")
        return page(file)

    @app.post("/logout")
    @raw_response(204, None, "the browser drops its session cookie")
    async def web_logout() -> Response:
        """Log this browser out (its cookie is dropped; changing the token ends every session)."""
        enabled()
        port = (request.scope.get("server") or ("", None))[1]
        response = Response(b"", status=204)
        response.delete_cookie(context.access.cookie_name(port), path="/", httponly=True, samesite="Strict")
        return response

    @app.get("/login")
    @raw_response(303, None, "logged in: a session cookie, and on to the dashboard (403: not valid)")
    async def web_login() -> Response:
        """Follow a login link: a cookie session for this listener, then the dashboard."""
        enabled()
        code = request.args.get("code", "")
        if not code or len(code) > 100 or not codes.redeem(code):
            response = page(files["login-failed.html"])
            response.status_code = 403
            return response
        port = (request.scope.get("server") or ("", None))[1]
        value = context.access.web_session(port)
        from ..api._access import WEB_SESSION_SECONDS

        response = Response(b"", status=303, headers={"Location": "/"})
        response.headers.update(_PAGE_HEADERS)
        response.headers["Cache-Control"] = "no-store"
        response.set_cookie(
            context.access.cookie_name(port), value, max_age=WEB_SESSION_SECONDS, path="/",
            httponly=True, samesite="Strict",
        )  # fmt: skip
        return response
