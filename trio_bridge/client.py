"""A client of the daemon's HTTP API (httpx), for the CLI and for scripts.

Imports only httpx and the standard library at module level, so CLI commands built on it
start fast; it never loads the server stack. Synchronous (one request at a time is what a
command needs); the streaming commands that must also react to signals use
:func:`async_client` with Trio.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self


def import_without(name: str, blocked: tuple[str, ...]) -> None:
    """Import module ``name`` while the modules ``blocked`` cannot be imported: optional
    dependencies it loads when they are installed and a client never uses. Nothing is blocked
    when any of them is loaded already (then they cost nothing more).

    Used for httpx (its command-line tool: click, rich, pygments, ~45 ms of every client
    command's start-up) and, by the CLI, for httpcore (see ``cli/_connect.py``).
    """
    if name in sys.modules or any(module in sys.modules for module in blocked):
        __import__(name)
        return
    for module in blocked:
        sys.modules[module] = None  # type: ignore[assignment]  # so `import module` raises ImportError
    try:
        __import__(name)
    finally:
        for module in blocked:
            del sys.modules[module]


import_without("httpx", ("click", "rich", "pygments"))
import httpx  # noqa: E402  # (loaded by the line above)

__all__ = [
    "ApiError",
    "Client",
    "DaemonUnavailableError",
    "OutputDroppedError",
    "SseEvent",
    "async_client",
    "client_target",
    "feed_stdin",
    "import_without",
    "iter_sse",
]

#: the API version prefix this client speaks
PREFIX = "/v1"


class DaemonUnavailableError(Exception):
    """No daemon answers where the client looked (one line, saying how to start one)."""


class ApiError(Exception):
    """The daemon refused a request: its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class OutputDroppedError(ApiError):
    """The output asked for was dropped (the log keeps at most ``output_max_bytes``);
    ``first_offset`` is the first byte kept (None if the daemon did not say)."""

    def __init__(self, status: int, code: str, message: str, first_offset: int | None) -> None:
        super().__init__(status, code, message)
        self.first_offset = first_offset


def client_target(socket_path: Path, url: str | None) -> tuple[str, httpx.HTTPTransport | None, str]:
    """(base URL, transport, description) for the unix socket or ``url``."""
    if url:
        # Certificates are loaded (tens of ms) only for https.
        return url, httpx.HTTPTransport(verify=url.startswith("https:")), url
    return "http://trio-bridge", httpx.HTTPTransport(uds=str(socket_path), verify=False), str(socket_path)


#: what a session id can look like (ours are 12 hex digits; a mesh's may differ a little)
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def _id(session_id: str) -> str:
    """A session id fit for a URL path, else "no such session" (as the daemon would say): an
    empty or odd id would name another resource, or none (a raw 404 page)."""
    if not _SESSION_ID.match(session_id):
        raise ApiError(404, "session_not_found", f"no session {session_id!r}")
    return session_id


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    error: dict[str, object] = {}
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", f"HTTP {response.status_code}: {response.text[:200]}"
    if code == "offset_dropped":
        first = error.get("first_offset")
        first_offset = first if type(first) is int and first >= 0 else None
        raise OutputDroppedError(response.status_code, code, message, first_offset)
    raise ApiError(response.status_code, code, message)


def _unavailable(where: str, exc: Exception) -> DaemonUnavailableError:
    return DaemonUnavailableError(
        f"the trio-bridge daemon is not running (nothing answers at {where}); "
        "start it with: trio-bridge daemon"
    )


class Client:
    """A connection to the daemon. Use as a context manager (it owns an httpx client)."""

    def __init__(
        self,
        socket_path: Path,
        url: str | None = None,
        token: str | None = None,
        computer: str | None = None,
        reconnect_timeout: float = 30.0,
    ) -> None:
        #: sessions are on this computer of the mesh (None: the daemon's own; "*": all, for listing)
        self.computer = computer
        #: seconds the following commands (tail -f, wait) keep reconnecting to a daemon gone away
        self.reconnect_timeout = reconnect_timeout
        base_url, transport, self.where = client_target(socket_path, url)
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            headers=_headers(token),
            trust_env=False,  # no proxy for the daemon (and no proxy transports to build)
            # Long polls and streams set their own read timeouts per request.
            timeout=httpx.Timeout(30.0, connect=5.0),
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request. Raises :class:`ApiError` (4xx/5xx) or :class:`DaemonUnavailableError`."""
        if self.computer is not None and path.startswith("/sessions"):
            kwargs["params"] = {**kwargs.get("params", {}), "computer": self.computer}
        try:
            response = self._http.request(method, PREFIX + path, **kwargs)
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError) as exc:
            raise _unavailable(self.where, exc) from None
        _raise_for(response)
        return response

    # -- the API, one method per endpoint ---------------------------------------------

    def health(self) -> dict[str, Any]:
        return dict(self.request("GET", "/health").json())

    def version(self) -> dict[str, Any]:
        return dict(self.request("GET", "/version").json())

    def computers(self) -> dict[str, Any]:
        return dict(self.request("GET", "/computers").json())

    def sessions(self, states: Sequence[str] = ()) -> list[dict[str, Any]]:
        params = {"state": ",".join(states)} if states else {}
        return list(self.request("GET", "/sessions", params=params).json()["sessions"])

    def create(
        self,
        command: Sequence[str] | None = None,
        *,
        shell: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        title: str | None = None,
        width: int | None = None,
        height: int | None = None,
        agent: str | None = None,
        model: str | None = None,
        prompt: str | None = None,
        args: Sequence[str] = (),
        resume: str | None = None,
        name: str | None = None,
        stdin: str | None = None,
    ) -> dict[str, Any]:
        """Start a session: ``command``, ``shell``, an ``agent`` (with ``model``, a ``prompt``
        at start, extra ``args``), or the resumed conversation of session ``resume``;
        ``stdin="pipe"``: its command reads what :meth:`feed_stdin` sends, not its terminal."""
        body: dict[str, Any] = {"env": dict(env or {})}
        optional = {
            "command": list(command) if command is not None else None, "shell": shell, "cwd": cwd,
            "title": title, "width": width, "height": height, "agent": agent, "model": model,
            "prompt": prompt, "args": list(args) or None, "resume": resume, "name": name, "stdin": stdin,
        }  # fmt: skip
        body.update({k: v for k, v in optional.items() if v is not None})
        return dict(self.request("POST", "/sessions", json=body).json())

    def get(self, session_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/sessions/{_id(session_id)}").json())

    def kill(self, session_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/sessions/{_id(session_id)}").json())

    def signal(self, session_id: str, signal: str) -> None:
        self.request("POST", f"/sessions/{_id(session_id)}/signal", json={"signal": signal})

    def remove(self, session_id: str) -> None:
        """Remove an ended session (ApiError 409 ``session_running`` for a running one)."""
        self.request("DELETE", f"/sessions/{_id(session_id)}/record")

    def feed_stdin(self, session_id: str, data: bytes | Iterable[bytes]) -> dict[str, Any]:
        """Stream ``data`` (bytes, or chunks as they come: chunked, read only as fast as the
        command reads) into the stdin pipe of a session created with ``stdin="pipe"``; its end
        is the command's EOF. Returns ``{"delivered": N, "eof": bool}`` once the pipe is closed
        (ApiError 409 ``no_stdin_pipe``, ``stdin_busy``, ``stdin_closed``)."""
        return dict(
            self.request(
                "PUT", f"/sessions/{_id(session_id)}/stdin", content=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=httpx.Timeout(None, connect=5.0),
            ).json()
        )  # fmt: skip

    def send_text(self, session_id: str, text: str, *, enter: bool = False) -> None:
        self.request("POST", f"/sessions/{_id(session_id)}/input", json={"text": text, "enter": enter})

    def send_keys(self, session_id: str, keys: Sequence[str]) -> None:
        self.request("POST", f"/sessions/{_id(session_id)}/keys", json={"keys": list(keys)})

    def screen(self, session_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/sessions/{_id(session_id)}/screen").json())

    def output(self, session_id: str, offset: int = 0, limit: int = 1 << 20) -> tuple[bytes, int, int, bool]:
        """(bytes, next offset, end offset, complete) of the output from ``offset``."""
        response = self.request(
            "GET", f"/sessions/{_id(session_id)}/output", params={"offset": offset, "limit": limit}
        )
        headers = response.headers
        return (
            response.content,
            int(headers["X-Output-Next"]),
            int(headers["X-Output-End"]),
            headers.get("X-Output-Complete") == "true",
        )

    def prompt(self, session_id: str, text: str) -> str | None:
        """Submit a prompt to the session's agent, verified (ApiError 409
        ``prompt_not_confirmed``: it may not have been submitted). Returns None once the agent
        took it, or the daemon's message when the busy agent queued it (it will run: do not
        send it again)."""
        response = self.request(
            "POST", f"/sessions/{_id(session_id)}/prompt", json={"text": text},
            timeout=httpx.Timeout(60.0, connect=5.0),
        )  # fmt: skip
        if response.status_code == 202:
            return str(response.json().get("message") or "queued")
        return None

    def wait(self, session_id: str, timeout: float, until: Sequence[str] = ()) -> dict[str, Any]:
        """Long-poll up to ``timeout`` seconds; ``{"ended": bool, "session": {...}}``, and with
        ``until`` (agent states) ``"reached": bool``."""
        params: dict[str, Any] = {"timeout": timeout}
        if until:
            params["until"] = ",".join(until)
        return dict(
            self.request(
                "GET",
                f"/sessions/{_id(session_id)}/wait",
                params=params,
                timeout=httpx.Timeout(timeout + 30.0, connect=5.0),
            ).json()
        )

    def stream(
        self, session_id: str, offset: int = 0, on_open: Callable[[], object] | None = None
    ) -> Iterator[SseEvent]:
        """The session's output events from ``offset`` (see ``GET /v1/sessions/{id}/stream``);
        ``on_open`` is called once the daemon has accepted the stream.

        Raises:
            DaemonUnavailableError: nothing answers; httpx.TransportError: the connection
            dropped; ApiError: the daemon refused.
        """
        try:
            with self._http.stream(
                "GET",
                f"{PREFIX}/sessions/{_id(session_id)}/stream",
                params={"computer": self.computer} if self.computer is not None else {},
                headers={"Last-Event-ID": str(offset)},
                timeout=httpx.Timeout(None, connect=5.0),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                if on_open is not None:
                    on_open()
                yield from iter_sse(response.iter_lines())
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError) as exc:
            raise _unavailable(self.where, exc) from None

    def events(
        self, last_event_id: str | None = None, on_open: Callable[[], object] | None = None
    ) -> Iterator[SseEvent]:
        """Session lifecycle events (see ``GET /v1/events``), after ``last_event_id`` if given;
        ``on_open`` is called once the daemon has accepted the stream.

        Raises:
            DaemonUnavailableError: nothing answers; httpx.TransportError: the connection
            dropped; ApiError: the daemon refused.
        """
        headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
        try:
            with self._http.stream(
                "GET", f"{PREFIX}/events", headers=headers, timeout=httpx.Timeout(None, connect=5.0)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                if on_open is not None:
                    on_open()
                yield from iter_sse(response.iter_lines())
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError) as exc:
            raise _unavailable(self.where, exc) from None


class SseEvent:
    """One Server-Sent Event."""

    __slots__ = ("data", "event", "id")

    def __init__(self, event: str, data: str, id: str | None) -> None:
        self.event = event
        self.data = data
        self.id = id

    def json(self) -> Any:
        return json.loads(self.data)


def iter_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Events from the lines of an SSE body (comments skipped)."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if fields:
                yield SseEvent(fields.get("event", "message"), fields.get("data", ""), fields.get("id"))
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value


async def feed_stdin(
    http: httpx.AsyncClient, session_id: str, chunks: AsyncIterable[bytes]
) -> dict[str, Any]:
    """:meth:`Client.feed_stdin` for Trio code (``http``: an :func:`async_client`): the next
    chunk is asked of ``chunks`` only once the last one is sent.

    Raises:
        ApiError: the daemon refused; httpx.TransportError: the connection dropped (the daemon
        then closes the pipe: the command's EOF).
    """
    response = await http.put(
        f"{PREFIX}/sessions/{_id(session_id)}/stdin", content=chunks,
        headers={"Content-Type": "application/octet-stream"}, timeout=httpx.Timeout(None, connect=5.0),
    )  # fmt: skip
    _raise_for(response)
    return dict(response.json())


def async_client(socket_path: Path, url: str | None = None, token: str | None = None) -> httpx.AsyncClient:
    """An httpx.AsyncClient on the daemon (for Trio code)."""
    if url:
        transport = httpx.AsyncHTTPTransport(verify=url.startswith("https:"))
        return httpx.AsyncClient(base_url=url, transport=transport, headers=_headers(token), timeout=30.0)
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path), verify=False)
    return httpx.AsyncClient(
        base_url="http://trio-bridge", transport=transport, headers=_headers(token), timeout=30.0
    )
