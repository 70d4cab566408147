"""Helpers for tests that talk to a really running daemon over HTTP."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from trio_bridge.config import Settings, read_secret_file, resolve_settings
from trio_bridge.daemon import RunningDaemon, serve_daemon

from .conftest import Sandbox


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
    """A running daemon and a client on its unix socket; on exit, the sessions still running
    are killed (agents live on otherwise: they are sessions like any other)."""
    async with running_daemon(sandbox, **overrides) as daemon, daemon.client() as client:
        try:
            yield daemon, client
        finally:
            for session in (await client.get("/v1/sessions")).json()["sessions"]:
                if session["state"] == "running":
                    await client.delete(f"/v1/sessions/{session['id']}")


@attrs.frozen
class SseEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse a Server-Sent Events response (comments skipped). Use inside ``aclosing``.

    Reads ``aiter_raw`` (httpx's text iterators nest generators that warn when a test stops
    reading early)."""
    fields: dict[str, str] = {}
    buffer = b""
    async with aclosing(response.aiter_raw()) as chunks:
        async for chunk in chunks:
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.decode().removesuffix("\r")
                if not line:
                    if fields:
                        yield SseEvent(
                            fields.get("event", "message"), fields.get("data", ""), fields.get("id")
                        )
                    fields = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                fields[name] = fields[name] + "\n" + value if name == "data" and name in fields else value
