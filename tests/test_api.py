"""The HTTP API through real HTTP: httpx on the daemon's unix socket (and on TCP where it
matters), trio-websocket for the WebSocket, the daemon really running in the test's trio loop,
real tmux, nothing mocked.

Each test runs its own daemon (``api()``), kills every session it started before the daemon
stops, and is bounded by ``trio.fail_after``. Known bugs are ``xfail(strict=True)`` tests whose
reason starts with ``BUG:``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import re
import shlex
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from trio_bridge._version import __version__
from trio_bridge.api import ApiBindError, ApiContext, create_app
from trio_bridge.config import resolve_settings
from trio_bridge.daemon import serve_daemon

from ._api import Daemon, SseEvent, running_daemon, sse_events
from .conftest import Sandbox

TOKEN = "x" * 20
ALL = {"limit": 1 << 20}
API_RESTARTS = 'trio_bridge_supervisor_restarts_total{service="api"}'

#: trio-websocket's client drops its TCP socket without closing it after a close handshake the
#: server started, and after a rejected handshake (a client-side leak, seen at garbage
#: collection): the tests that meet it collect it themselves.
websocket_client_leak = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


# -- helpers ---------------------------------------------------------------------------------


@asynccontextmanager
async def api(sandbox: Sandbox, **overrides: Any) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """A running daemon and a client on its unix socket; every session still running at the end
    is killed through the API before the daemon stops. A test that passed must not have crashed
    the API (its supervisor would have restarted it silently)."""
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


# -- service routes, listing, creating -------------------------------------------------------


async def test_health_version_and_listing_with_state_filters(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (_, client):
            health = await client.get("/v1/health")
            assert health.status_code == 200 and health.headers["content-type"] == "application/json"
            assert health.json() == {"status": "ok"}
            assert (await client.get("/v1/version")).json() == {"version": __version__, "api": "v1"}
            assert (await client.get("/v1/sessions")).json() == {"sessions": []}

            done = await create(client, tmp_path, command=["true"])
            await wait_ended(client, done["id"])
            first = await create(client, tmp_path, command=["sleep", "300"])
            second = await create(client, tmp_path, command=["sleep", "300"])

            # filtered by one or several (comma-separated, spaces allowed) states; the order is
            # test_listing_is_oldest_first's business
            everything = sorted([done["id"], first["id"], second["id"]])
            assert sorted(await session_ids(client)) == everything
            assert sorted(await session_ids(client, "")) == everything
            assert sorted(await session_ids(client, "running")) == sorted([first["id"], second["id"]])
            assert await session_ids(client, "exited") == [done["id"]]
            assert await session_ids(client, "killed,lost") == []
            assert sorted(await session_ids(client, "exited, running")) == everything
            listed = (await client.get("/v1/sessions", params={"state": "exited"})).json()["sessions"][0]
            assert listed == (await client.get(f"/v1/sessions/{done['id']}")).json()
            assert listed["state"] == "exited" and listed["exit_code"] == 0 and listed["ended_at"] > 0

            for state in ("sleeping", "running,sleeping", "RUNNING", ","):
                response = await client.get("/v1/sessions", params={"state": state})
                assert_error(response, 422, "invalid_state")
            unknown = await client.get("/v1/sessions", params={"state": "sleeping"})
            assert "sleeping" in assert_error(unknown, 422)["message"]


async def test_listing_is_oldest_first(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with api(sandbox) as (_, client):
            created = [(await create(client, tmp_path, command=["true"]))["id"] for _ in range(3)]
            assert await session_ids(client) == created
            assert await session_ids(client, "exited,running,starting") == created


async def test_create_command_shell_interactive_env_cwd_size(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with api(sandbox) as (_, client):
            # command: an argv, each argument passed verbatim (no shell reads it)
            argv = ["printf", "[%s]", "a b", "$HOME", "'q'", '"d"', ";echo no", "`id`", "é", ""]
            command = await create(client, tmp_path, command=argv, title="verbatim")
            assert (command["command"], command["title"], command["cwd"]) == (argv, "verbatim", str(tmp_path))
            assert (await wait_ended(client, command["id"]))["exit_code"] == 0
            printed = "[a b][$HOME]['q'][\"d\"][;echo no][`id`][é][]"
            assert await output(client, command["id"]) == printed.encode()

            # shell: one line for /bin/sh -c, in cwd; its exit code is recorded
            shell = await create(client, tmp_path, shell="echo from-shell; pwd; exit 3")
            assert shell["command"] == ["/bin/sh", "-c", "echo from-shell; pwd; exit 3"]
            assert shell["title"] == "/bin/sh -c echo from-shell; pwd; exit 3"
            ended = await wait_ended(client, shell["id"])
            assert (ended["state"], ended["exit_code"], ended["exit_signal"]) == ("exited", 3, None)
            assert await output(client, shell["id"]) == f"from-shell\r\n{tmp_path}\r\n".encode()

            # env: the values arrive exactly (quotes, $, newline, empty); names are recorded
            tricky = "a 'b' \"c\" $d `e`\nline2"
            env = await create(
                client, tmp_path, command=["printenv", "GREETING", "TRICKY", "EMPTY"],
                env={"GREETING": "hello", "TRICKY": tricky, "EMPTY": ""},
            )  # fmt: skip
            assert env["env_keys"] == ["EMPTY", "GREETING", "TRICKY", "TRIO_BRIDGE_API_SOCKET"]
            assert (await wait_ended(client, env["id"]))["exit_code"] == 0
            expected = "hello\n" + tricky + "\n\n"
            assert await output(client, env["id"]) == expected.replace("\n", "\r\n").encode()

            # the terminal's size
            size = await create(client, tmp_path, command=["stty", "size"], width=100, height=30)
            await wait_ended(client, size["id"])
            assert await output(client, size["id"]) == b"30 100\r\n"

            # no cwd: the daemon's home directory
            home = await create(client, None, command=["pwd"])
            assert home["cwd"] == str(Path.home())
            await wait_ended(client, home["id"])
            assert await output(client, home["id"]) == f"{Path.home()}\r\n".encode()

            # a program that does not exist: the session starts and exits with 127
            missing = await create(client, tmp_path, command=["/nonexistent/program"])
            ended = await wait_ended(client, missing["id"])
            assert (ended["state"], ended["exit_code"]) == ("exited", 127)
            assert b"/nonexistent/program" in await output(client, missing["id"])

            # neither: an interactive login shell ($SHELL -l), which runs until killed (nothing is
            # typed into it: what a login profile does, and how long it takes, is the machine's)
            interactive = await create(client, tmp_path)
            login_shell = shlex.split(os.environ.get("SHELL") or "/bin/sh")[0]
            assert interactive["command"] == [login_shell, "-l"]
            sid = interactive["id"]
            still = await client.get(f"/v1/sessions/{sid}/wait", params={"timeout": 0.3})
            assert still.json()["ended"] is False and still.json()["session"]["state"] == "running"
            assert f"tb-{sid}" in tmux_sessions(sandbox)
            killed = await client.delete(f"/v1/sessions/{sid}")
            assert killed.status_code == 200 and killed.json()["state"] == "killed"
            assert f"tb-{sid}" not in tmux_sessions(sandbox)


async def test_refused_requests_are_json_errors_and_change_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with trio.fail_after(30):
        async with api(sandbox) as (_, client):
            await create(client, tmp_path, command=["sleep", "300"])
            before = (await client.get("/v1/sessions")).json()
            tmux_before = tmux_sessions(sandbox)
            assert len(tmux_before) == 1
            ok = {"command": ["true"], "cwd": str(tmp_path)}
            refused: list[tuple[object, str]] = [
                ({**ok, "cwd": "relative/dir"}, "invalid_cwd"),
                ({**ok, "cwd": str(tmp_path / "missing")}, "invalid_cwd"),
                ({**ok, "cwd": str(tmp_path / "a-file")}, "invalid_cwd"),
                ({**ok, "env": {"BAD NAME": "x"}}, "invalid_env"),
                ({**ok, "env": {"1X": "x"}}, "invalid_env"),
                ({**ok, "env": {"A=B": "x"}}, "invalid_env"),
                ({**ok, "env": {"": "x"}}, "invalid_env"),
                ({**ok, "env": {"touch\n": "x"}}, "invalid_env"),  # a line of the env file
                ({**ok, "env": {"NUL": "a\0b"}}, "invalid_env"),
                ({**ok, "shell": "true"}, "invalid_command"),
                ({**ok, "command": [""]}, "invalid_command"),
                ({**ok, "command": ["echo", "a\0b"]}, "invalid_command"),
                ({**ok, "command": []}, "invalid_request"),
                ({**ok, "colour": "red"}, "invalid_request"),
                ({**ok, "command": "true"}, "invalid_request"),
                ({**ok, "command": [1]}, "invalid_request"),
                ({**ok, "env": {"A": 1}}, "invalid_request"),
                ({**ok, "env": ["A"]}, "invalid_request"),
                ({**ok, "width": "wide"}, "invalid_request"),
                ({**ok, "width": 1}, "invalid_request"),
                ({**ok, "height": 1001}, "invalid_request"),
                ({**ok, "title": "t" * 201}, "invalid_request"),
                ({**ok, "cwd": 5}, "invalid_request"),
                ({"shell": ""}, "invalid_request"),
                ([], "invalid_request"),
                (None, "invalid_request"),
                ("true", "invalid_request"),
            ]
            for body, code in refused:
                assert_error(await client.post("/v1/sessions", json=body), 422, code)

            as_json = {"Content-Type": "application/json"}
            for raw in (b"{not json", b'{"command": ["true"]', b"", b'{"command": ["\xff"]}'):
                malformed = await client.post("/v1/sessions", content=raw, headers=as_json)
                assert_error(malformed, 400, "invalid_json")
            # A body that is not declared JSON is not read as JSON (a browser's "simple"
            # cross-site POST cannot create a session).
            for content_type in ("text/plain", "application/x-www-form-urlencoded"):
                response = await client.post(
                    "/v1/sessions", content=json.dumps(ok), headers={"Content-Type": content_type}
                )
                assert_error(response, 422, "invalid_request")

            assert_error(await client.put("/v1/sessions", json=ok), 405, "method_not_allowed")
            assert_error(await client.patch(f"/v1/sessions/{before['sessions'][0]['id']}"), 405)
            assert_error(await client.get("/v1/no/such/route"), 404, "not_found")
            assert_error(await client.get("/static/app.py"), 404, "not_found")
            # an empty segment is no route, not a redirect to another resource (werkzeug's 308 to
            # "/v1/sessions/screen", the session named "screen")
            assert_error(await client.get("/v1/sessions//screen"), 404, "not_found")
            assert_error(await client.get("/v1/sessions", params={"colour": "red"}), 422, "invalid_request")

            assert (await client.get("/v1/sessions")).json() == before
            assert tmux_sessions(sandbox) == tmux_before


async def test_unknown_session_is_404_on_every_route(sandbox: Sandbox) -> None:
    with trio.fail_after(20):
        async with api(sandbox) as (daemon, client):
            routes: list[tuple[str, str, Any]] = [
                ("GET", "", None), ("DELETE", "", None), ("POST", "/input", {"text": "x"}),
                ("POST", "/keys", {"keys": ["Enter"]}), ("GET", "/screen", None), ("GET", "/output", None),
                ("GET", "/wait", None), ("GET", "/stream", None), ("GET", "/agent", None),
            ]  # fmt: skip
            for unknown in ("nosuchsession", "0123456789ab", "a%2Fb"):
                for method, suffix, body in routes:
                    response = await client.request(method, f"/v1/sessions/{unknown}{suffix}", json=body)
                    # "a%2Fb": no route at all ("/" cannot be part of an id)
                    assert_error(response, 404, "not_found" if unknown == "a%2Fb" else "session_not_found")
            async with daemon.client() as once:  # see test_a_refused_websocket_does_not_crash_the_api
                unknown_ws = await ws_handshake(once, "/v1/sessions/nosuchsession/ws")
            assert_error(unknown_ws, 404, "session_not_found")
            assert await session_ids(client) == []


# -- kill, input, keys -----------------------------------------------------------------------


async def test_delete_kills_a_running_session_once(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (_, client):
            sleeper = await create(client, tmp_path, command=["sleep", "300"])
            sid = sleeper["id"]
            assert f"tb-{sid}" in tmux_sessions(sandbox)
            killed = await client.delete(f"/v1/sessions/{sid}")
            assert killed.status_code == 200, killed.text
            record = killed.json()
            # SIGHUP: closing its window hung it up (issue 14: a killed session says how it ended)
            assert (record["id"], record["state"], record["exit_code"], record["exit_signal"]) == (
                sid, "killed", None, 1,
            )  # fmt: skip
            assert record["ended_at"] >= record["created_at"]
            assert f"tb-{sid}" not in tmux_sessions(sandbox)
            assert (await client.get(f"/v1/sessions/{sid}")).json() == record
            assert await session_ids(client, "killed") == [sid]

            assert_error(await client.delete(f"/v1/sessions/{sid}"), 409, "session_ended")
            late_input = await client.post(f"/v1/sessions/{sid}/input", json={"text": "x"})
            assert_error(late_input, 409, "session_ended")
            late_keys = await client.post(f"/v1/sessions/{sid}/keys", json={"keys": ["C-c"]})
            assert_error(late_keys, 409, "session_ended")
            waited = await client.get(f"/v1/sessions/{sid}/wait", params={"timeout": 10})
            assert waited.json() == {"ended": True, "session": record}
            done = await client.get(f"/v1/sessions/{sid}/output")
            assert done.headers["X-Output-Complete"] == "true"

            # Three kills at once: each answers with the killed record or 409, never a 5xx.
            other = await create(client, tmp_path, command=["sleep", "300"])
            answers: list[httpx.Response] = []

            async def kill() -> None:
                answers.append(await client.delete(f"/v1/sessions/{other['id']}"))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(kill)
            for answer in answers:
                if answer.status_code != 200:
                    assert_error(answer, 409, "session_ended")
                else:
                    assert answer.json()["state"] == "killed"
            assert any(answer.status_code == 200 for answer in answers)
            assert (await client.get(f"/v1/sessions/{other['id']}")).json()["state"] == "killed"


async def test_screen_of_a_killed_session(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with api(sandbox) as (_, client):
            session = await create(client, tmp_path, shell="echo visible-text; exec sleep 300")
            sid = session["id"]
            await output_until(client, sid, b"visible-text\r\n")
            assert "visible-text" in (await client.get(f"/v1/sessions/{sid}/screen")).json()["text"]
            assert (await client.delete(f"/v1/sessions/{sid}")).json()["state"] == "killed"
            assert (await client.get(f"/v1/sessions/{sid}")).status_code == 200
            screen = await client.get(f"/v1/sessions/{sid}/screen")
            assert screen.status_code == 200, screen.text
            assert screen.json()["live"] is False and "visible-text" in screen.json()["text"]


async def test_input_is_typed_exactly(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (_, client):
            cat = await create(client, tmp_path, command=["cat"])
            sid = cat["id"]

            async def type_(text: str, enter: bool = False) -> None:
                response = await client.post(f"/v1/sessions/{sid}/input", json={"text": text, "enter": enter})
                assert response.status_code == 204 and response.content == b"", response.text

            await type_("hello", enter=True)  # the terminal echoes it, then cat writes it back
            assert await output_until(client, sid, b"hello\r\n", 2) == b"hello\r\nhello\r\n"

            await type_("partial")  # no Enter: echoed, but cat has not read the line yet
            await output_until(client, sid, b"partial")
            await trio.sleep(0.2)
            assert (await output(client, sid)).count(b"partial") == 1
            enter = await client.post(f"/v1/sessions/{sid}/keys", json={"keys": ["Enter"]})
            assert enter.status_code == 204
            await output_until(client, sid, b"partial\r\n", 2)

            await type_("héllo € 😀 x", enter=True)
            await output_until(client, sid, "héllo € 😀 x\r\n".encode(), 2)
            # a multi-line paste (CRLF is a newline): cat writes back each line as it comes
            await type_("one\r\ntwo\nthree", enter=True)
            data = await output_until(client, sid, b"three", 2)
            data = await output_until(client, sid, b"\r\nthree\r\n")
            assert data.count(b"one\r\n") == 2 and data.count(b"two\r\n") == 2 and data.count(b"three") == 2

            before = await output(client, sid)
            for text in ("a\x1bb", "\x03", "\x7f", "x\x85y", "\x00", "a\rb"):
                response = await client.post(f"/v1/sessions/{sid}/input", json={"text": text})
                assert_error(response, 422, "invalid_text")
            surrogate = await client.post(
                f"/v1/sessions/{sid}/input", content=b'{"text": "\\ud800"}',
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            assert "surrogate" in assert_error(surrogate, 422, "invalid_text")["message"]
            not_utf8 = await client.post(
                f"/v1/sessions/{sid}/input", content=b'{"text": "\xff"}',
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            assert_error(not_utf8, 400, "invalid_json")
            for body in ({"text": "x", "enter": "yes"}, {"text": None}, {}, {"text": "x", "more": 1}):
                response = await client.post(f"/v1/sessions/{sid}/input", json=body)
                assert_error(response, 422, "invalid_request")
            await trio.sleep(0.2)
            assert await output(client, sid) == before  # nothing was typed

            assert (await client.post(f"/v1/sessions/{sid}/keys", json={"keys": ["C-d"]})).status_code == 204
            assert (await wait_ended(client, sid))["exit_code"] == 0
            late = await client.post(f"/v1/sessions/{sid}/input", json={"text": "late", "enter": True})
            assert_error(late, 409, "session_ended")


async def test_input_larger_than_max_input_bytes_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox, max_input_bytes=100) as (_, client):
            cat = await create(client, tmp_path, command=["cat"])
            sid = cat["id"]
            path = f"/v1/sessions/{sid}/input"
            assert (await client.post(path, json={"text": "x" * 100, "enter": True})).status_code == 204
            for text in ("y" * 101, "é" * 51, "z" * 5000):  # bytes count, not characters
                error = assert_error(await client.post(path, json={"text": text, "enter": True}), 413)
                assert error["code"] == "input_too_large" and "100" in error["message"]
            assert (await client.post(path, json={"text": "é" * 50, "enter": True})).status_code == 204
            assert (await client.post(path, json={"text": "end", "enter": True})).status_code == 204
            data = await output_until(client, sid, b"end\r\n", 2)
            lines = [b"x" * 100, "é".encode() * 50, b"end"]
            assert data == b"".join(line + b"\r\n" + line + b"\r\n" for line in lines)


async def test_keys(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (_, client):
            sleeper = await create(client, tmp_path, command=["sleep", "300"])
            sid = sleeper["id"]
            path = f"/v1/sessions/{sid}/keys"
            for unknown in (["Hyper"], ["ab"], ["Enter", "C-c; kill-server"], ["c-c"], ["\x03"], ["-t"]):
                assert_error(await client.post(path, json={"keys": unknown}), 422, "unknown_key")
            bodies: list[object] = [
                {"keys": []},
                {"keys": "C-c"},
                {"keys": [3]},
                {"keys": ["Enter"] * 257},
                {},
            ]
            for body in bodies:
                assert_error(await client.post(path, json=body), 422, "invalid_request")
            still = await client.get(f"/v1/sessions/{sid}/wait", params={"timeout": 0.1})
            assert still.json()["ended"] is False  # no refused key reached it

            assert (await client.post(path, json={"keys": ["C-c"]})).status_code == 204
            stopped = await wait_ended(client, sid)
            # sleep dies of SIGINT: the record says the signal (not the shell's 130)
            assert (stopped["state"], stopped["exit_code"], stopped["exit_signal"]) == ("exited", None, 2)

            # keys are pressed in order: a backspace edits the line before Enter sends it
            sh = await create(client, tmp_path, command=["sh"])
            typed = await client.post(f"/v1/sessions/{sh['id']}/input", json={"text": "echo abc"})
            assert typed.status_code == 204
            keys = await client.post(f"/v1/sessions/{sh['id']}/keys", json={"keys": ["BSpace", "Enter"]})
            assert keys.status_code == 204
            data = await output_until(client, sh["id"], b"\r\nab\r\n")
            assert b"\r\nabc\r\n" not in data
            await client.post(f"/v1/sessions/{sh['id']}/keys", json={"keys": ["C-d"]})
            assert (await wait_ended(client, sh["id"]))["exit_code"] == 0


# -- screen, output, wait --------------------------------------------------------------------


async def test_screen_output_ranges_and_wait(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (_, client):
            script = "stty -echo; echo visible-text; read x; echo after-$x; exit 5"
            session = await create(client, tmp_path, shell=script)
            sid = session["id"]
            whole = await output_until(client, sid, b"visible-text\r\n")
            assert whole == b"visible-text\r\n"

            screen = (await client.get(f"/v1/sessions/{sid}/screen")).json()
            assert set(screen) == {"id", "text", "live"}
            assert screen["id"] == sid and screen["live"] is True
            assert screen["text"].splitlines()[0] == "visible-text"

            part = await client.get(f"/v1/sessions/{sid}/output", params={"offset": 3, "limit": 5})
            assert part.headers["content-type"] == "application/octet-stream"
            assert part.content == whole[3:8] == b"ible-"
            assert (part.headers["X-Output-Offset"], part.headers["X-Output-Next"]) == ("3", "8")
            assert part.headers["X-Output-End"] == str(len(whole))
            assert part.headers["X-Output-Complete"] == "false"
            for beyond in (len(whole), len(whole) + 1, 10**9):
                empty = await client.get(f"/v1/sessions/{sid}/output", params={"offset": beyond})
                assert empty.status_code == 200 and empty.content == b""
                assert empty.headers["X-Output-Offset"] == empty.headers["X-Output-Next"] == str(beyond)
                # X-Output-End: see test_output_end_header_beyond_the_end
            for params in ({"offset": -1}, {"offset": "x"}, {"limit": 0}, {"limit": (1 << 20) + 1}):
                response = await client.get(f"/v1/sessions/{sid}/output", params=params)
                assert_error(response, 422, "invalid_request")

            # wait: a running session is still running after the timeout, which is kept
            start = trio.current_time()
            waited = await client.get(f"/v1/sessions/{sid}/wait", params={"timeout": 0.2})
            assert 0.2 <= trio.current_time() - start < 1.5
            assert waited.json()["ended"] is False and waited.json()["session"]["state"] == "running"
            now = await client.get(f"/v1/sessions/{sid}/wait", params={"timeout": 0})
            assert now.json()["ended"] is False
            for timeout in (-1, -0.001, 601, "soon"):
                response = await client.get(f"/v1/sessions/{sid}/wait", params={"timeout": timeout})
                assert_error(response, 422, "invalid_request")

            # ...and returns as soon as the session ends
            result: list[httpx.Response] = []

            async def long_poll() -> None:
                result.append(await client.get(f"/v1/sessions/{sid}/wait", params={"timeout": 20}))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_poll)
                await trio.sleep(0.2)
                await client.post(f"/v1/sessions/{sid}/input", json={"text": "go", "enter": True})
            ended = result[0].json()
            assert ended["ended"] is True
            assert (ended["session"]["state"], ended["session"]["exit_code"]) == ("exited", 5)

            final = await output(client, sid)
            assert final == b"visible-text\r\nafter-go\r\n"
            kept = (await client.get(f"/v1/sessions/{sid}/screen")).json()
            assert kept["live"] is False
            assert kept["text"].splitlines()[:2] == ["visible-text", "after-go"]
            assert "Pane is dead" not in kept["text"]
            last = await client.get(f"/v1/sessions/{sid}/output", params={"offset": 14})
            assert last.content == final[14:] == b"after-go\r\n"
            assert last.headers["X-Output-Complete"] == "true"
            assert last.headers["X-Output-Next"] == last.headers["X-Output-End"] == str(len(final))


async def test_output_end_header_beyond_the_end(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with api(sandbox) as (_, client):
            session = await create(client, tmp_path, command=["echo", "four"])
            await wait_ended(client, session["id"])
            assert await output(client, session["id"]) == b"four\r\n"
            beyond = await client.get(f"/v1/sessions/{session['id']}/output", params={"offset": 1000})
            assert beyond.content == b"" and beyond.headers["X-Output-Complete"] == "true"
            assert beyond.headers["X-Output-End"] == "6"


async def test_large_output_pages_and_streams_exactly(sandbox: Sandbox, tmp_path: Path) -> None:
    expected = "".join(f"{n}\r\n" for n in range(1, 40001)).encode()
    with trio.fail_after(30):
        async with api(sandbox) as (_, client):
            session = await create(client, tmp_path, command=["seq", "1", "40000"])
            sid = session["id"]
            await wait_ended(client, sid)
            pages = []
            offset = 0
            while True:
                page = await client.get(f"/v1/sessions/{sid}/output", params={"offset": offset})
                assert page.headers["X-Output-Offset"] == str(offset)
                assert page.headers["X-Output-End"] == str(len(expected))
                assert page.headers["X-Output-Complete"] == "true"
                assert len(page.content) == min(1 << 16, len(expected) - offset)  # the default limit
                if not page.content:
                    break
                pages.append(page.content)
                offset = int(page.headers["X-Output-Next"])
            assert len(pages) == math.ceil(len(expected) / (1 << 16)) and b"".join(pages) == expected

            events = await read_stream(client, sid)
            assert events[-1].event == "end"
            assert check_output_events(events, 0) == expected
            assert all(len(e.json()["data"]) <= 1 << 16 for e in events if e.event == "output")


async def test_retention_dropped_output(sandbox: Sandbox, tmp_path: Path) -> None:
    size = 2_500_000
    with trio.fail_after(40):
        async with api(sandbox, output_max_bytes=1 << 20) as (_, client):
            script = f"head -c {size} /dev/zero | tr '\\0' x; echo"
            session = await create(client, tmp_path, shell=script)
            sid = session["id"]
            assert (await wait_ended(client, sid))["exit_code"] == 0
            first_kept = 2 << 20  # whole 1 MiB segments are dropped, the newest one is kept
            dropped = await client.get(f"/v1/sessions/{sid}/output")
            error = assert_error(dropped, 410, "offset_dropped", fields=frozenset({"first_offset"}))
            assert str(first_kept) in error["message"]
            assert error["first_offset"] == first_kept
            kept = await client.get(f"/v1/sessions/{sid}/output", params={"offset": first_kept, **ALL})
            assert kept.content == b"x" * (size - first_kept) + b"\r\n"
            assert kept.headers["X-Output-End"] == str(size + 2)

            events = await read_stream(client, sid)
            assert events[0].event == "resync" and events[0].id == str(first_kept)
            assert events[0].json() == {"requested": 0, "offset": first_kept}
            assert check_output_events(events, first_kept) == kept.content
            assert events[-1].event == "end"


# -- Server-Sent Events ----------------------------------------------------------------------


async def test_sse_live_resume_utf8_and_end(sandbox: Sandbox, tmp_path: Path) -> None:
    # '€' is \342\202\254: its first byte is written alone, the rest only after input.
    script = (
        "stty -echo; printf 'a\\342'; read x; printf '\\202\\254b\\n'; read y; printf 'l%s\\n' 1 2 3; exit 3"
    )
    with trio.fail_after(30):
        async with api(sandbox) as (_, client):
            session = await create(client, tmp_path, shell=script)
            sid = session["id"]
            path = f"/v1/sessions/{sid}"

            # live: the stream holds back the incomplete character, then sends it whole
            first: list[SseEvent] = []
            async with (
                client.stream("GET", f"{path}/stream") as response,
                aclosing(sse_events(response)) as parsed,
            ):
                async for event in parsed:
                    first.append(event)
                    if event.event == "output" and event.id == "1":
                        assert event.json() == {"offset": 0, "data": "a"}  # not "a\ufffd"
                        await client.post(f"{path}/input", json={"text": "go", "enter": True})
                    if event.event == "output" and "b\r\n" in event.json()["data"]:
                        break
            assert check_output_events(first, 0) == "a€b\r\n".encode()
            resume_at = first[-1].id
            assert resume_at == str(len("a€b\r\n".encode())) == "7"

            # reconnecting with Last-Event-ID resumes exactly there, and ends with the record
            await client.post(f"{path}/input", json={"text": "more", "enter": True})
            rest = await read_stream(client, sid, headers={"Last-Event-ID": resume_at})
            assert check_output_events(rest, 7) == b"l1\r\nl2\r\nl3\r\n"
            end = rest[-1]
            assert end.event == "end" and end.id is None
            record = end.json()
            assert (record["id"], record["state"], record["exit_code"]) == (sid, "exited", 3)
            assert record == (await client.get(path)).json()

            exact = await output(client, sid)
            assert check_output_events(first, 0) + check_output_events(rest, 7) == exact

            # a start offset: Last-Event-ID wins over ?offset=
            again = await read_stream(client, sid, headers={"Last-Event-ID": "7"}, params={"offset": 0})
            assert check_output_events(again, 7) == exact[7:]
            from_1 = await read_stream(client, sid, params={"offset": 1})
            assert check_output_events(from_1, 1) == exact[1:]
            for start in (str(len(exact)), "1000000"):
                only_end = await read_stream(client, sid, headers={"Last-Event-ID": start})
                assert [e.event for e in only_end] == ["end"]
            for bad in (b"abc", b"-1", "²".encode(), b"1.5"):
                response = await client.get(f"{path}/stream", headers={b"Last-Event-ID": bad})
                assert_error(response, 400, "invalid_last_event_id")
            assert_error(await client.get(f"{path}/stream", params={"offset": -1}), 422, "invalid_request")


async def test_lifecycle_events(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (_, client):
            seen: list[tuple[str, str, str]] = []
            async with (
                client.stream("GET", "/v1/events") as response,
                aclosing(sse_events(response)) as events,
            ):
                assert response.headers["content-type"].startswith("text/event-stream")
                done = await create(client, tmp_path, command=["true"])
                sleeper = await create(client, tmp_path, command=["sleep", "300"])
                killed = await client.delete(f"/v1/sessions/{sleeper['id']}")
                assert killed.status_code == 200
                async for event in events:
                    body = event.json()
                    assert body["kind"] == event.event and body["agent"] is None
                    seen.append((event.event, body["session"]["id"], body["session"]["state"]))
                    if len(seen) == 6:
                        break
            mine = [(kind, state) for kind, sid, state in seen if sid == done["id"]]
            assert mine == [("created", "starting"), ("running", "running"), ("exited", "exited")]
            theirs = [(kind, state) for kind, sid, state in seen if sid == sleeper["id"]]
            assert theirs == [("created", "starting"), ("running", "running"), ("killed", "killed")]


async def test_a_stream_whose_client_left_stops_reading_at_once(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (daemon, client):
            quiet = await create(client, tmp_path, command=["sleep", "300"])
            async with daemon.client() as reader, reader.stream("GET", f"/v1/sessions/{quiet['id']}/stream"):
                with trio.fail_after(5):
                    while metric((await client.get("/metrics")).text, "trio_bridge_output_readers") != 1:
                        await trio.sleep(0.05)
            # The client is gone: its reader ends now, not at the next keepalive (15 s).
            with trio.fail_after(5):
                while True:
                    text = (await client.get("/metrics")).text
                    if (
                        metric(text, "trio_bridge_output_readers") == 0
                        and metric(text, "trio_bridge_api_streams") == 0
                    ):
                        break
                    await trio.sleep(0.05)


# -- WebSocket -------------------------------------------------------------------------------


@websocket_client_leak
async def test_websocket_round_trip(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox, bind="127.0.0.1:0", max_input_bytes=50) as (daemon, client):
            session = await create(client, tmp_path, command=["cat"])
            sid = session["id"]
            url = ws_url(daemon, f"/v1/sessions/{sid}/ws")
            async with open_ws(daemon, url, same_origin(daemon)) as ws:
                hello = json.loads(await ws.get_message())
                assert (hello["type"], hello["offset"]) == ("hello", 0)
                assert hello["session"] == (await client.get(f"/v1/sessions/{sid}")).json()

                await ws.send_message(json.dumps({"type": "input", "text": "ping", "enter": True}))
                assert await ws_until(ws, b"ping\r\n", 2) == b"ping\r\nping\r\n"
                await ws.send_message(b"pong\r")  # raw bytes, typed as keys
                assert await ws_until(ws, b"pong\r\n", 2) == b"pong\r\npong\r\n"

                # refused messages answer with an error and the connection stays usable
                refusals = [
                    "not json", json.dumps({"type": "nope"}), json.dumps([1]), json.dumps({"type": "input"}),
                    json.dumps({"type": "input", "text": "a\x1bb"}),
                    json.dumps({"type": "input", "text": "x" * 51}),
                    json.dumps({"type": "keys", "keys": ["Hyper"]}),
                    json.dumps({"type": "keys", "keys": "C-c"}),
                ]  # fmt: skip
                for message in refusals:
                    await ws.send_message(message)
                    reply = json.loads(await ws.get_message())
                    assert reply["type"] == "error" and reply["message"], (message, reply)

                # other readers: from the end (new output only), and with the screen first
                end_url = ws_url(daemon, f"/v1/sessions/{sid}/ws?offset=end")
                screen_url = ws_url(daemon, f"/v1/sessions/{sid}/ws?screen=1&offset=end")
                async with (
                    open_ws(daemon, end_url) as tail,
                    open_ws(daemon, screen_url) as screen,
                ):
                    so_far = len(b"ping\r\n" * 2 + b"pong\r\n" * 2)
                    assert json.loads(await tail.get_message())["offset"] == so_far
                    assert json.loads(await screen.get_message())["type"] == "hello"
                    shown = json.loads(await screen.get_message())
                    assert shown["type"] == "screen" and shown["text"].splitlines()[:2] == ["ping", "ping"]
                    await ws.send_message(json.dumps({"type": "input", "text": "later", "enter": True}))
                    assert await ws_until(tail, b"later\r\n", 2) == b"later\r\nlater\r\n"
                    await ws_until(ws, b"later\r\n", 2)

                    # the session ends: every reader gets the final record, then close 1000
                    await ws.send_message(json.dumps({"type": "keys", "keys": ["C-d"]}))
                    for reader in (ws, tail, screen):
                        end = await ws_json(reader)
                        assert end["type"] == "end", end
                        assert (end["session"]["state"], end["session"]["exit_code"]) == ("exited", 0)
                        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                            await reader.get_message()
                        assert closed.value.reason.code == 1000

            # a bad offset: an error message, then close 1008
            async with open_ws(daemon, f"{url}?offset=x") as bad:
                assert json.loads(await bad.get_message())["type"] == "error"
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await bad.get_message()
                assert closed.value.reason.code == 1008
            # an ended session: its whole output, the end, close 1000
            async with open_ws(daemon, url) as replay:
                assert json.loads(await replay.get_message())["session"]["state"] == "exited"
                assert await ws_until(replay, b"later\r\n", 2) == await output(client, sid)
                assert (await ws_json(replay))["type"] == "end"
    gc.collect()


@websocket_client_leak
async def test_websocket_origin_and_unknown_session(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox, bind="127.0.0.1:0") as (daemon, client):
            session = await create(client, tmp_path, command=["sleep", "300"])
            url = ws_url(daemon, f"/v1/sessions/{session['id']}/ws")
            assert daemon.running.api_url is not None
            lookalike = daemon.running.api_url.encode() + b".evil.example"
            for origin in (b"http://evil.example", b"null", lookalike):
                with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                    async with open_ws(daemon, url, [(b"Origin", origin)]):
                        pass
                assert rejected.value.status_code == 403
                assert json.loads(rejected.value.body or b"")["error"]["code"] == "cross_origin"
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                async with open_ws(daemon, ws_url(daemon, "/v1/sessions/nosuch/ws")):
                    pass
            assert rejected.value.status_code == 404
            # same origin, and no Origin at all (not a browser): accepted
            for headers in (same_origin(daemon), []):
                async with open_ws(daemon, url, headers) as ws:
                    assert json.loads(await ws.get_message())["type"] == "hello"
            # the refusal over the unix socket too (on a connection of its own: see
            # test_a_refused_websocket_does_not_crash_the_api)
            async with daemon.client() as once:
                path = f"/v1/sessions/{session['id']}/ws"
                refused = await ws_handshake(once, path, Origin="http://evil.example")
            assert_error(refused, 403, "cross_origin")
            assert metric((await client.get("/metrics")).text, API_RESTARTS) == 0
    gc.collect()


async def test_a_refused_websocket_does_not_crash_the_api(sandbox: Sandbox, tmp_path: Path) -> None:
    handshake = (
        b"GET /v1/sessions/x/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with trio.fail_after(20):
        async with api(sandbox, token=TOKEN, bind="127.0.0.1:0") as (daemon, client):
            session = await create(client, tmp_path, command=["sleep", "300"])
            async with client.stream("GET", f"/v1/sessions/{session['id']}/stream") as stream:
                assert stream.status_code == 200
                assert daemon.running.api_url is not None
                host, port = daemon.running.api_url.removeprefix("http://").rsplit(":", 1)
                # anonymous, over TCP: a WebSocket handshake (refused), then a plain request
                async with await trio.open_tcp_stream(host, int(port)) as tcp:
                    await tcp.send_all(handshake + b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
                    with trio.move_on_after(1):
                        while await tcp.receive_some():
                            pass
                text = (await client.get("/metrics")).text
                assert metric(text, API_RESTARTS) == 0
                assert metric(text, "trio_bridge_api_streams") == 1  # the open stream was not cut


# -- access ----------------------------------------------------------------------------------


async def test_a_refused_body_closes_its_connection(sandbox: Sandbox) -> None:
    """A 401 answered before a 500 KB body was read: the connection closes, so the client's next
    request goes on a new one (reusing it waited forever: hypercorn neither served nor closed it)."""
    with trio.fail_after(30):
        async with api(sandbox, token=TOKEN) as (daemon, _), daemon.client() as anonymous:
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
        async with api(sandbox, token=TOKEN, bind="127.0.0.1:0") as (daemon, client):
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
        async with api(sandbox, bind="0.0.0.0:0", token=TOKEN) as (daemon, client):
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
        async with api(sandbox, bind="127.0.0.1:0") as (daemon, client):
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


# httpx cannot close a streamed request body the server answered before reading it all
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object AsyncIteratorByteStream:"
    "pytest.PytestUnraisableExceptionWarning"
)
async def test_request_body_limit(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox, max_body_bytes=1000) as (_, client):
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


# -- metrics and the OpenAPI document --------------------------------------------------------


async def test_metrics_match_reality(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (_, client):
            first = await create(client, tmp_path, command=["sleep", "300"])
            await create(client, tmp_path, command=["sleep", "300"])
            done = await create(client, tmp_path, command=["echo", "hi"])
            await wait_ended(client, done["id"])
            await client.delete(f"/v1/sessions/{first['id']}")

            response = await client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = response.text
            states = ("running", "exited", "killed")
            counts = {state: len(await session_ids(client, state)) for state in states}
            assert counts == {"running": 1, "exited": 1, "killed": 1}
            for state, count in counts.items():
                assert metric(text, f'trio_bridge_sessions{{state="{state}"}}') == count
            assert metric(text, 'trio_bridge_sessions{state="starting"}') == 0
            assert metric(text, 'trio_bridge_sessions{state="lost"}') == 0
            assert metric(text, "trio_bridge_output_bytes_total") >= len(b"hi\r\n")
            assert metric(text, API_RESTARTS) == 0
            assert metric(text, "trio_bridge_api_streams") == 0
            assert metric(text, "trio_bridge_tasks") > 5
            assert "# TYPE trio_bridge_sessions gauge" in text

            # an open stream is counted while it is open
            running = (await session_ids(client, "running"))[0]
            async with client.stream("GET", f"/v1/sessions/{running}/stream") as stream:
                assert stream.status_code == 200
                with trio.fail_after(5):
                    while metric((await client.get("/metrics")).text, "trio_bridge_output_readers") != 1:
                        await trio.sleep(0.02)
                assert metric((await client.get("/metrics")).text, "trio_bridge_api_streams") == 1


async def test_openapi_document_matches_the_routes(sandbox: Sandbox) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (daemon, client):
            response = await client.get("/v1/openapi.json")
            assert response.status_code == 200
            document = response.json()
            app = create_app(ApiContext(daemon.manager))
    assert document["openapi"].startswith("3.") and document["info"]["version"] == __version__
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    routed = set()
    for rule in app.url_map.iter_rules():
        # Left out: the WebSocket route (OpenAPI 3 has no WebSocket operations), the document
        # itself, and Quart's static route (the package has no static folder: it serves nothing).
        if rule.websocket or rule.endpoint in ("static", "openapi"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routed |= {(path, method) for method in rule.methods or () if method not in ("HEAD", "OPTIONS")}
    assert routed == documented
    assert ("/v1/sessions/{session_id}", "DELETE") in routed and len(routed) >= 16
    for path, method in documented:
        operation = document["paths"][path][method.lower()]
        responses = operation["responses"]
        # a success: 2xx, or the login door's redirect (303)
        assert "default" in responses and any(code[0] in "23" for code in responses), (path, method)
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), (path, method, declared)
    for ref in re.findall(r'"#/components/schemas/(\w+)"', json.dumps(document)):
        assert ref in document["components"]["schemas"], ref


# -- shutdown --------------------------------------------------------------------------------


@websocket_client_leak
async def test_shutdown_ends_streams_cleanly_and_sessions_survive(sandbox: Sandbox, tmp_path: Path) -> None:
    stream_events: list[str] = []
    lifecycle_events: list[str] = []
    ws_close: list[int | None] = []
    socket_path = resolve_settings(sandbox.env).settings.api_socket
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
    with trio.fail_after(30):
        # The client outlives the daemon: its streams must end by the server's doing.
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://trio-bridge", timeout=20) as client,
            trio.open_nursery() as readers,
        ):
            async with running_daemon(sandbox, bind="127.0.0.1:0") as daemon:
                session = await create(client, tmp_path, shell="echo started; exec sleep 300")
                sid = session["id"]
                await output_until(client, sid, b"started\r\n")
                opened = [trio.Event() for _ in range(3)]

                async def read_sse(path: str, into: list[str], ready: trio.Event) -> None:
                    async with (
                        client.stream("GET", path) as response,
                        aclosing(sse_events(response)) as parsed,
                    ):
                        ready.set()
                        async for event in parsed:
                            into.append(event.event)

                async def read_ws(url: str, ready: trio.Event) -> None:
                    async with open_ws(daemon, url) as ws:
                        assert json.loads(await ws.get_message())["type"] == "hello"
                        ready.set()
                        try:
                            while True:
                                await ws.get_message()
                        except trio_websocket.ConnectionClosed as exc:
                            ws_close.append(exc.reason.code)

                readers.start_soon(read_sse, f"/v1/sessions/{sid}/stream", stream_events, opened[0])
                readers.start_soon(read_sse, "/v1/events", lifecycle_events, opened[1])
                readers.start_soon(read_ws, ws_url(daemon, f"/v1/sessions/{sid}/ws"), opened[2])
                for event in opened:
                    await event.wait()
                with trio.fail_after(5):
                    while stream_events != ["output"]:
                        await trio.sleep(0.01)
                stopping_at = trio.current_time()
            # leaving running_daemon cancelled the daemon's nursery
            stopped_in = trio.current_time() - stopping_at
        ended_in = trio.current_time() - stopping_at  # the readers are done too
    gc.collect()
    assert stream_events == ["output", "shutdown"]
    assert lifecycle_events == ["shutdown"]
    assert ws_close == [1001]
    assert stopped_in < 3 and ended_in < 3, (stopped_in, ended_in)
    assert not socket_path.exists()
    # the session outlived the daemon
    assert tmux_sessions(sandbox) == {f"tb-{sid}"}
    sandbox.tmux("kill-session", "-t", f"=tb-{sid}")


async def test_shutdown_answers_a_long_poll(sandbox: Sandbox, tmp_path: Path) -> None:
    socket_path = resolve_settings(sandbox.env).settings.api_socket
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
    answers: list[httpx.Response | Exception] = []
    sid = None
    try:
        with trio.fail_after(30):
            # (left in reverse: the daemon stops first, while the poll is waiting)
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://trio-bridge", timeout=20) as client,
                trio.open_nursery() as pollers,
                running_daemon(sandbox),
            ):
                sid = (await create(client, tmp_path, command=["sleep", "300"]))["id"]

                async def long_poll() -> None:
                    try:
                        answers.append(await client.get(f"/v1/sessions/{sid}/wait", params={"timeout": 20}))
                    except httpx.TransportError as exc:
                        answers.append(exc)

                pollers.start_soon(long_poll)
                await trio.sleep(0.3)  # the poll is waiting in the daemon
    finally:
        if sid is not None:
            sandbox.tmux("kill-session", "-t", f"=tb-{sid}", check=False)
    assert isinstance(answers[0], httpx.Response), answers
    assert answers[0].status_code in (200, 503)


async def test_head_on_a_stream_route_completes(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (daemon, client):
            session = await create(client, tmp_path, command=["sleep", "300"])
            for path in ("/v1/events", f"/v1/sessions/{session['id']}/stream"):
                async with daemon.client() as head_client:
                    head = await head_client.head(path)
                    assert head.status_code == 200 and head.content == b""
                    answered = None
                    with trio.move_on_after(1):  # the next request on the same connection
                        answered = (await head_client.get("/v1/health")).status_code
                    assert answered == 200, path
            assert metric((await client.get("/metrics")).text, "trio_bridge_api_streams") == 0
