"""Helpers for tests that talk to a really running daemon over HTTP (the API's tests in
``tests/api/`` and every other test that needs a daemon): the daemon and its clients, the
API's error shape, sessions, output, one Server-Sent Events parser, WebSockets."""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import pytest
import trio
import trio_websocket

from trio_bridge.config import Settings, read_secret_file, resolve_settings
from trio_bridge.daemon import RunningDaemon, serve_daemon

from .conftest import Sandbox

TOKEN = "x" * 20
ALL = {"limit": 1 << 20}
API_RESTARTS = 'trio_bridge_supervisor_restarts_total{service="api"}'

_IGNORE_LEAKED_SOCKET = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
_Test = TypeVar("_Test", bound=Callable[..., Awaitable[None]])


def websocket_client_leak(test: _Test) -> _Test:
    """For a test that meets trio-websocket's client leak: the client drops its TCP socket
    without closing it after a close handshake the server started, and after a rejected
    handshake (seen at garbage collection). The test's garbage is collected as it ends, its own
    frame gone (what its locals held, a ``pytest.raises`` traceback too), with that warning
    ignored; else the next test, whichever it is, fails of it."""

    @functools.wraps(test)
    async def collected(*args: Any, **kwargs: Any) -> None:
        try:
            await test(*args, **kwargs)
        finally:
            gc.collect()

    return _IGNORE_LEAKED_SOCKET(collected)  # type: ignore[no-any-return]


@attrs.frozen
class Daemon:
    settings: Settings
    running: RunningDaemon

    @property
    def manager(self) -> Any:
        return self.running.manager

    @property
    def tcp_token(self) -> str:
        """The token TCP requests need: the configured one, or the one the daemon made."""
        return self.settings.token or read_secret_file(self.settings.token_path)

    def client(self, *, token: str | None = None, tcp: bool = False) -> httpx.AsyncClient:
        """An httpx client on the unix socket (or on the TCP listener, with the token the daemon
        made for it unless ``token`` is given)."""
        if tcp and token is None and self.settings.token is None:
            token = self.tcp_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if tcp:
            assert self.running.api_url is not None
            return httpx.AsyncClient(base_url=self.running.api_url, headers=headers, timeout=20)
        transport = httpx.AsyncHTTPTransport(uds=str(self.running.api_socket))
        return httpx.AsyncClient(
            transport=transport, base_url="http://trio-bridge", headers=headers, timeout=20
        )


@asynccontextmanager
async def running_daemon(sandbox: Sandbox, **overrides: Any) -> AsyncIterator[Daemon]:
    """A daemon in this test's event loop (its API really listening), stopped on exit."""
    settings = dataclasses.replace(resolve_settings(sandbox.env).settings, **overrides)
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve_daemon, settings)
        yield Daemon(settings, running)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def daemon_and_client(
    sandbox: Sandbox, **overrides: Any
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """A running daemon and a client on its unix socket (with the ``token`` setting, if one is
    given); every session still running at the end is killed through the API before the daemon
    stops (agents live on otherwise: they are sessions like any other). A test that passed must
    not have crashed the API (its supervisor would have restarted it silently)."""
    async with (
        running_daemon(sandbox, **overrides) as daemon,
        daemon.client(token=overrides.get("token")) as client,
    ):
        try:
            yield daemon, client
            assert metric((await client.get("/metrics")).text, API_RESTARTS) == 0, "the API crashed"
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(15):
                await kill_running(client)


async def kill_running(client: httpx.AsyncClient) -> None:
    listing = await client.get("/v1/sessions", params={"state": "starting,running"})
    for record in listing.json()["sessions"]:
        await client.delete(f"/v1/sessions/{record['id']}")


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, *, fields: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The API's error shape, exactly: ``{"error": {"code", "message"}}``, JSON, no traceback;
    ``fields``: the further members this error documents (e.g. a 410's ``first_offset``)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", *fields}, body
    assert all(isinstance(body["error"][k], str) and body["error"][k] for k in ("code", "message")), body
    assert "Traceback" not in response.text and 'File "' not in response.text
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


async def create(client: httpx.AsyncClient, cwd: Path | None, **body: Any) -> dict[str, Any]:
    if cwd is not None:
        body["cwd"] = str(cwd)
    response = await client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    record = dict(response.json())
    assert record["state"] == "running" and record["origin"] == "api", record
    assert record["tmux_name"] == f"tb-{record['id']}"
    return record


async def wait_ended(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/sessions/{session_id}/wait", params={"timeout": 15})
    assert response.status_code == 200 and response.json()["ended"] is True, response.text
    return dict(response.json()["session"])


async def output(client: httpx.AsyncClient, session_id: str) -> bytes:
    response = await client.get(f"/v1/sessions/{session_id}/output", params=ALL)
    assert response.status_code == 200, response.text
    return response.content


async def output_until(client: httpx.AsyncClient, session_id: str, needle: bytes, count: int = 1) -> bytes:
    """The session's whole output, once ``needle`` is in it ``count`` times."""
    data = b""
    try:
        with trio.fail_after(10):
            while (data := await output(client, session_id)).count(needle) < count:
                await trio.sleep(0.02)
    except trio.TooSlowError:
        raise AssertionError(f"{needle!r} x{count} never came: {data!r}") from None
    return data


async def session_ids(client: httpx.AsyncClient, state: str | None = None) -> list[str]:
    params = {"state": state} if state is not None else {}
    response = await client.get("/v1/sessions", params=params)
    assert response.status_code == 200, response.text
    return [s["id"] for s in response.json()["sessions"]]


def tmux_sessions(sandbox: Sandbox) -> set[str]:
    """trio-bridge's sessions on the sandbox's tmux server (not the hub)."""
    listed = sandbox.tmux("list-sessions", "-F", "#{session_name}", check=False).stdout.split()
    return {name for name in listed if name.startswith("tb-") and name != "tb-hub"}


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found is not None, (name, text)
    return float(found[1])


async def read_stream(
    client: httpx.AsyncClient,
    session_id: str,
    *,
    headers: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> list[SseEvent]:
    """A session's SSE stream, read to its ``end`` event."""
    events = []
    async with (
        client.stream(
            "GET", f"/v1/sessions/{session_id}/stream", headers=headers or {}, params=params or {}
        ) as response,
        aclosing(sse_events(response)) as parsed,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        async for event in parsed:
            events.append(event)
            if event.event == "end":
                break
    return events


def check_output_events(events: list[SseEvent], start: int) -> bytes:
    """Output events continue each other exactly from ``start``; each id is the offset after
    the event's bytes; no character was split (no U+FFFD). Returns the bytes."""
    offset = start
    data = b""
    for event in events:
        if event.event != "output":
            continue
        body = event.json()
        assert body["offset"] == offset, (body, offset)
        assert "\ufffd" not in body["data"]
        chunk = body["data"].encode()
        assert event.id == str(offset + len(chunk)), (event, offset)
        data += chunk
        offset += len(chunk)
    return data


def ws_url(daemon: Daemon, path: str) -> str:
    assert daemon.running.api_url is not None
    return "ws" + daemon.running.api_url.removeprefix("http") + path


def open_ws(
    daemon: Daemon, url: str, headers: list[tuple[bytes, bytes]] | None = None
) -> AbstractAsyncContextManager[trio_websocket.WebSocketConnection]:
    """A WebSocket to the TCP listener, with the token the daemon made for it."""
    auth = [(b"Authorization", f"Bearer {daemon.tcp_token}".encode())]
    return trio_websocket.open_websocket_url(url, extra_headers=auth + (headers or []))


def same_origin(daemon: Daemon) -> list[tuple[bytes, bytes]]:
    assert daemon.running.api_url is not None
    return [(b"Origin", daemon.running.api_url.encode())]


async def ws_handshake(client: httpx.AsyncClient, path: str, **headers: str) -> httpx.Response:
    """A WebSocket opening handshake sent by hand (over the unix socket), to read the refusal."""
    upgrade = {
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }  # fmt: skip
    return await client.get(path, headers={**upgrade, **headers})


async def ws_until(ws: trio_websocket.WebSocketConnection, needle: bytes, count: int = 1) -> bytes:
    """Binary (output) messages until ``needle`` was seen ``count`` times; no text message may
    come meanwhile."""
    received = b""
    while received.count(needle) < count:
        message = await ws.get_message()
        assert isinstance(message, bytes), message
        received += message
    return received


async def ws_json(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    """The next text message (skipping output bytes), as JSON."""
    while True:
        message = await ws.get_message()
        if isinstance(message, str):
            return dict(json.loads(message))


@attrs.frozen
class SseEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


class _SseParser:
    """Server-Sent Events, line by line (comments skipped): the one parser of the tests."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def line(self, line: str) -> SseEvent | None:
        """Take one line (without its end); the event it completes, if any."""
        fields = self._fields
        if not line:
            self._fields = {}
            if fields:
                return SseEvent(fields.get("event", "message"), fields.get("data", ""), fields.get("id"))
            return None
        if not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = fields[name] + "\n" + value if name == "data" and name in fields else value
        return None


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse a Server-Sent Events response. Use inside ``aclosing``.

    Reads ``aiter_raw`` (httpx's text iterators nest generators that warn when a test stops
    reading early)."""
    parser = _SseParser()
    buffer = b""
    async with aclosing(response.aiter_raw()) as chunks:
        async for chunk in chunks:
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                if (event := parser.line(raw.decode().removesuffix("\r"))) is not None:
                    yield event


def sse_events_sync(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Parse a Server-Sent Events response read synchronously (``response.iter_lines()``)."""
    parser = _SseParser()
    for line in lines:
        if (event := parser.line(line)) is not None:
            yield event
