"""Who gets in, and what a connection may send: the token, the bind, the socket file, the body limit.

Through real HTTP: httpx on the daemon's unix socket (and on TCP where it matters),
trio-websocket for the WebSocket, the daemon really running in the test's trio loop, real tmux,
nothing mocked. Each test runs its own daemon (``daemon_and_client``, which kills every session
it started before the daemon stops) and is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from trio_bridge.api import ApiBindError
from trio_bridge.config import resolve_settings
from trio_bridge.daemon import serve_daemon

from .._api import (
    TOKEN,
    assert_error,
    create,
    daemon_and_client,
    output,
    output_until,
    running_daemon,
    session_ids,
    websocket_client_leak,
    ws_url,
)
from ..conftest import Sandbox


async def test_a_refused_body_closes_its_connection(sandbox: Sandbox) -> None:
    """A 401 answered before a 500 KB body was read: the connection closes, so the client's next
    request goes on a new one (reusing it waited forever: hypercorn neither served nor closed it)."""
    with trio.fail_after(30):
        async with daemon_and_client(sandbox, token=TOKEN) as (daemon, _), daemon.client() as anonymous:
            body = json.dumps({"command": ["echo", "x" * 500_000]})
            refused = await anonymous.post(
                "/v1/sessions", content=body, headers={"Content-Type": "application/json"}
            )
            assert_error(refused, 401, "unauthorized")
            assert refused.headers["connection"] == "close"
            with trio.fail_after(5):
                assert_error(await anonymous.get("/v1/health"), 401, "unauthorized")
            # an error without a body keeps its connection
            assert "connection" not in (await anonymous.get("/v1/health")).headers


@websocket_client_leak
async def test_token_is_required_everywhere(sandbox: Sandbox, tmp_path: Path) -> None:
    paths = ["/v1/health", "/v1/version", "/v1/sessions", "/metrics", "/v1/openapi.json", "/v1/no/such/route"]
    with trio.fail_after(30):
        async with daemon_and_client(sandbox, token=TOKEN, bind="127.0.0.1:0") as (daemon, client):
            session = await create(client, tmp_path, command=["sleep", "300"])
            paths += [f"/v1/sessions/{session['id']}", f"/v1/sessions/{session['id']}/output"]
            for tcp in (False, True):
                async with (
                    daemon.client(tcp=tcp) as anonymous,
                    daemon.client(tcp=tcp, token="y" * 20) as wrong,
                    daemon.client(tcp=tcp, token=TOKEN) as right,
                ):
                    for path in paths:
                        response = await anonymous.get(path)
                        assert_error(response, 401, "unauthorized")
                        assert response.headers["WWW-Authenticate"] == "Bearer"
                        assert_error(await wrong.get(path), 401, "unauthorized")
                        for header in (f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"):
                            response = await anonymous.get(path, headers={"Authorization": header})
                            assert_error(response, 401, "unauthorized")
                    # a refused create starts nothing; a refused kill kills nothing
                    assert_error(await anonymous.post("/v1/sessions", json={"command": ["true"]}), 401)
                    assert_error(await wrong.delete(f"/v1/sessions/{session['id']}"), 401)
                    assert (await right.get("/v1/health")).json() == {"status": "ok"}
                    assert await session_ids(right) == [session["id"]]
                    assert (await right.get("/metrics")).status_code == 200
                    lower = await anonymous.get("/v1/health", headers={"Authorization": f"bearer {TOKEN}"})
                    assert lower.status_code == 200  # the scheme is case-insensitive
            assert (await client.get(f"/v1/sessions/{session['id']}")).json()["state"] == "running"

            url = ws_url(daemon, f"/v1/sessions/{session['id']}/ws")
            for headers in ([], [(b"Authorization", b"Bearer " + b"y" * 20)]):
                with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                    async with trio_websocket.open_websocket_url(url, extra_headers=headers):
                        pass
                assert rejected.value.status_code == 401
            authorized = [(b"Authorization", f"Bearer {TOKEN}".encode())]
            async with trio_websocket.open_websocket_url(url, extra_headers=authorized) as ws:
                assert json.loads(await ws.get_message())["type"] == "hello"
    gc.collect()


async def test_non_loopback_bind_needs_a_token(sandbox: Sandbox) -> None:
    settings = resolve_settings(sandbox.env).settings
    with trio.fail_after(30):
        for bind in ("0.0.0.0:0", "[::]:0"):
            with pytest.RaisesGroup(
                pytest.RaisesExc(ApiBindError, match="without a token"), flatten_subgroups=True
            ):
                async with trio.open_nursery() as nursery:
                    await nursery.start(serve_daemon, dataclasses.replace(settings, bind=bind))
            assert not settings.api_socket.exists()  # a refused start leaves no socket behind
        async with daemon_and_client(sandbox, bind="0.0.0.0:0", token=TOKEN) as (daemon, client):
            assert daemon.running.api_url is not None
            assert daemon.running.api_url.startswith("http://0.0.0.0:")
            port = daemon.running.api_url.rsplit(":", 1)[1]
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as tcp:
                assert (await tcp.get("/v1/health")).json() == {"status": "ok"}
            assert (await client.get("/v1/health")).status_code == 200


async def test_socket_file_and_a_second_daemon(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = resolve_settings(sandbox.env).settings
    socket_path = settings.api_socket
    with trio.fail_after(30):
        # a socket left by a daemon that died is taken over
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(socket_path))
        stale.close()
        async with daemon_and_client(sandbox, bind="127.0.0.1:0") as (daemon, client):
            assert daemon.running.api_socket == socket_path
            assert stat.S_ISSOCK(socket_path.lstat().st_mode)
            assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
            assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
            identity = socket_path.stat().st_ino

            # another daemon (another state directory) on the same socket path: refused
            other = dataclasses.replace(
                settings, state_dir=tmp_path / "other-state", runtime_dir=settings.runtime_dir
            )
            with pytest.RaisesGroup(
                pytest.RaisesExc(ApiBindError, match="another trio-bridge daemon"), flatten_subgroups=True
            ):
                async with trio.open_nursery() as nursery:
                    await nursery.start(serve_daemon, other)
            # ...and on the same TCP port (with a socket of its own): refused, its socket removed
            assert daemon.running.api_url is not None
            port = daemon.running.api_url.rsplit(":", 1)[1]
            taken = dataclasses.replace(other, runtime_dir=tmp_path / "other-run", bind=f"127.0.0.1:{port}")
            with pytest.RaisesGroup(
                pytest.RaisesExc(ApiBindError, match="address already in use"), flatten_subgroups=True
            ):
                async with trio.open_nursery() as nursery:
                    await nursery.start(serve_daemon, taken)
            assert not (tmp_path / "other-run" / "api.sock").exists()

            assert socket_path.stat().st_ino == identity  # still ours, still serving
            assert (await client.get("/v1/health")).status_code == 200
            async with daemon.client(tcp=True) as tcp:
                assert (await tcp.get("/v1/health")).status_code == 200
        assert not socket_path.exists()

        # something that is not a socket is never removed
        socket_path.write_text("precious")
        with pytest.RaisesGroup(pytest.RaisesExc(ApiBindError, match="not a socket"), flatten_subgroups=True):
            async with running_daemon(sandbox):
                pass
        assert socket_path.read_text() == "precious"
        socket_path.unlink()


@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object AsyncIteratorByteStream:"
    "pytest.PytestUnraisableExceptionWarning"
)
async def test_request_body_limit(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with daemon_and_client(sandbox, max_body_bytes=1000) as (_, client):
            cat = await create(client, tmp_path, command=["cat"])
            sid = cat["id"]
            before = (await client.get("/v1/sessions")).json()
            as_json = {"Content-Type": "application/json"}

            def body(size: int, text: str) -> bytes:
                raw = json.dumps({"text": text, "enter": True}).encode()
                return raw[:-1] + b" " * (size - len(raw)) + b"}"

            path = f"/v1/sessions/{sid}/input"
            exactly = await client.post(path, content=body(1000, "fits"), headers=as_json)
            assert exactly.status_code == 204, exactly.text
            over = await client.post(path, content=body(1001, "over"), headers=as_json)
            assert "1000" in assert_error(over, 413, "body_too_large")["message"]
            big = await client.post("/v1/sessions", json={"command": ["echo", "x" * 5000]})
            assert_error(big, 413, "body_too_large")

            async def chunked() -> AsyncIterator[bytes]:
                yield b'{"command": ["echo", "'
                for _ in range(50):
                    yield b"x" * 100
                yield b'"]}'

            # Without a Content-Length (chunked): the same answer, which closes the connection
            # (the rest of the body was never read), so the client's next request takes a new one
            # instead of waiting forever on this one.
            streamed = await client.post("/v1/sessions", content=chunked(), headers=as_json)
            assert_error(streamed, 413, "body_too_large")
            assert streamed.headers["connection"] == "close"

            await output_until(client, sid, b"fits\r\n", 2)
            await trio.sleep(0.1)
            assert b"over" not in await output(client, sid)
            assert (await client.get("/v1/sessions")).json() == before
