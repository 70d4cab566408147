"""Hostile input through the real API: every refusal is a 4xx (never a 500) that names what
was wrong, and a refused request changes nothing (no record, no directory, no session).

A real daemon in the test's trio loop, real tmux, httpx on its unix socket. The full-disk test
mounts a small tmpfs as the daemon's state directory (it needs root; it is skipped, saying so,
where mounting is not permitted).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_bridge.api.app import MAX_ENV_STRING, MAX_JSON_DEPTH
from trio_bridge.tmux import SessionNotFoundError, SessionSpec, TmuxServer
from trio_bridge.tmux.server import TMUX_COMMAND_MAX

from .._api import Daemon, daemon_and_client
from ..conftest import Sandbox, live_pids_matching

JSON = {"Content-Type": "application/json"}


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """The API's error shape with this status and code; returns the message."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return str(body["error"]["message"])


async def nothing_changed(daemon: Daemon, client: httpx.AsyncClient, before: set[str]) -> None:
    """No session record and no session directory beyond ``before`` (the ids there were)."""
    listed = {s["id"] for s in (await client.get("/v1/sessions")).json()["sessions"]}
    assert listed == before
    directory = daemon.settings.state_dir / "sessions"
    on_disk = {p.name for p in directory.iterdir()} if directory.exists() else set()
    assert on_disk == before


async def ids(client: httpx.AsyncClient) -> set[str]:
    return {s["id"] for s in (await client.get("/v1/sessions")).json()["sessions"]}


async def output_of(client: httpx.AsyncClient, session_id: str) -> bytes:
    """The output of a session, once it ended."""
    waited = await client.get(f"/v1/sessions/{session_id}/wait", params={"timeout": 15})
    assert waited.json()["ended"], waited.text
    return (await client.get(f"/v1/sessions/{session_id}/output", params={"limit": 1 << 20})).content


# -- sizes -----------------------------------------------------------------------------------


def test_tmux_command_limit_is_tmuxs(sandbox: Sandbox) -> None:
    """TMUX_COMMAND_MAX is what this tmux really takes: a command whose arguments (each with its
    NUL) make exactly that many bytes runs; one byte more is refused by tmux itself."""

    def new_session(name: str, packed: int) -> subprocess.CompletedProcess[str]:
        head = ["new-session", "-d", "-s", name, "--", "/bin/sh", "-c"]
        script = ":" + " " * (packed - sum(len(a) + 1 for a in head) - 2)
        assert sum(len(a) + 1 for a in [*head, script]) == packed
        return sandbox.tmux(*head, script, check=False)

    at_limit = new_session("atlimit", TMUX_COMMAND_MAX)
    assert at_limit.returncode == 0, at_limit.stderr
    over = new_session("over", TMUX_COMMAND_MAX + 1)
    assert over.returncode != 0
    assert re.search(r"command too long|failed to send command", over.stderr), over.stderr


async def test_create_command_size_is_checked_before_tmux(sandbox: Sandbox, tmp_path: Path) -> None:
    """A command larger than tmux takes is a 413 naming the limit (it was tmux's "command too
    long" as a 500); the largest one tmux takes runs; neither leaves anything behind."""
    with trio.fail_after(40):
        async with daemon_and_client(sandbox) as (daemon, client):
            before = await ids(client)
            # refused by the API's first check: the command alone is too large
            huge = await client.post("/v1/sessions", json={"shell": "echo " + "x" * 30_000})
            message = assert_error(huge, 413, "command_too_large")
            assert str(TMUX_COMMAND_MAX) in message and "30022" in message
            await nothing_changed(daemon, client, before)

            # refused by the exact check, with tmux's start script around the command
            body = {"shell": ": " + "y" * (TMUX_COMMAND_MAX - 200), "cwd": str(tmp_path)}
            near = await client.post("/v1/sessions", json=body)
            message = assert_error(near, 413, "command_too_large")
            assert str(TMUX_COMMAND_MAX) in message
            await nothing_changed(daemon, client, before)

            # the message's size, less the shell line's, is what the start script adds: a line
            # that makes the command exactly the limit runs
            size = int(re.search(r"is (\d+) bytes", message)[1])  # type: ignore[index]
            fits = TMUX_COMMAND_MAX - (size - len(body["shell"].encode()))
            shell = "printf %s " + "z" * (fits - len("printf %s "))
            created = await client.post("/v1/sessions", json={"shell": shell, "cwd": str(tmp_path)})
            assert created.status_code == 201, created.text
            assert (await output_of(client, created.json()["id"])).count(b"z") == fits - len("printf %s ")
            over = await client.post("/v1/sessions", json={"shell": shell + "z", "cwd": str(tmp_path)})
            assert_error(over, 413, "command_too_large")
            await nothing_changed(daemon, client, before | {created.json()["id"]})


async def test_environment_string_limit(sandbox: Sandbox, tmp_path: Path) -> None:
    """An environment variable longer than execve takes is a 413 naming the limit; the longest
    one it takes reaches the command."""
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (daemon, client):
            before = await ids(client)
            longest = "v" * (MAX_ENV_STRING - len("BIG="))
            body = {"command": ["printenv", "BIG"], "cwd": str(tmp_path), "env": {"BIG": longest}}
            created = await client.post("/v1/sessions", json=body)
            assert created.status_code == 201, created.text
            assert (await output_of(client, created.json()["id"])).count(b"v") == len(longest)
            before |= {created.json()["id"]}
            body["env"] = {"BIG": longest + "v"}
            message = assert_error(await client.post("/v1/sessions", json=body), 413, "env_too_large")
            assert str(MAX_ENV_STRING) in message
            await nothing_changed(daemon, client, before)


# -- text ------------------------------------------------------------------------------------


async def test_typing_into_a_dead_pane_keeps_tmux_alive(server: TmuxServer, tmp_path: Path) -> None:
    """A paste into a dead pane (a session's, from its command's end until its window is killed)
    crashed tmux 3.3a's whole server, every session with it (found by schemathesis: input right
    after a session ended answered 500 and the daemon lost every session). Now the paste is
    refused as "no such session" (the API's 409 session_ended), and tmux lives on."""
    with trio.fail_after(20):
        bystander = SessionSpec(["sleep", "60"], tmp_path, tmp_path / "exit-bystander")
        await server.new_session(bystander)
        await server.release(bystander)
        spec = SessionSpec(["true"], tmp_path, tmp_path / "exit")
        await server.new_session(spec)
        await server.release(spec)
        while not (await server.pane_status(spec.name)).dead:  # kept by remain-on-exit
            await trio.sleep(0.02)
        with pytest.raises(SessionNotFoundError):
            await server.send_text(spec.name, "hello", enter=True)
        assert await server.has_session(bystander.name)
        assert await server.has_session(spec.name)
        assert (await server.run("list-buffers", "-F", "#{buffer_name}")).stdout == b""
        await server.send_text(bystander.name, "still typed")
        # the paste is written to the pane's terminal, whose echo tmux reads some time later
        while "still typed" not in await server.capture(bystander.name):
            await trio.sleep(0.02)


def raw_body(fields: dict[str, Any]) -> bytes:
    """JSON with lone surrogates kept as ``\\udXXX`` escapes (httpx cannot encode them)."""
    return json.dumps(fields).encode()


async def test_create_refuses_surrogates_and_controls(sandbox: Sandbox, tmp_path: Path) -> None:
    """A lone surrogate anywhere in a create request, or a control character in plain text
    (title, cwd, agent names), is a 422 naming the field (a surrogate in title or env was a
    500); what may hold control characters (a shell script, an argument, a value) still does."""
    cwd = str(tmp_path)
    refused: list[tuple[dict[str, Any], str, str]] = [
        ({"command": ["true"], "title": "a\ud800"}, "invalid_title", "title"),
        ({"command": ["true"], "title": "\x1b]0;PWNED\x07\x1b[2J"}, "invalid_title", "U+001B"),
        ({"command": ["true"], "title": "tab\there"}, "invalid_title", "U+0009"),
        ({"command": ["true"], "title": "c1\x9b"}, "invalid_title", "U+009B"),
        ({"command": ["true"], "env": {"A": "x\udfff"}}, "invalid_env", "environment variable A"),
        ({"command": ["true"], "env": {"\ud800": "x"}}, "invalid_env", "surrogate"),
        ({"command": ["echo", "\udc80"]}, "invalid_command", "command[1]"),
        ({"shell": "echo \ud800"}, "invalid_command", "shell"),
        ({"command": ["true"], "cwd": cwd + "/\ud800"}, "invalid_cwd", "cwd"),
        ({"command": ["true"], "cwd": cwd + "/a\nb"}, "invalid_cwd", "U+000A"),
        ({"agent": "claude\x1b"}, "invalid_agent", "agent"),
        ({"agent": "claude", "prompt": "hi \ud800"}, "invalid_agent", "prompt"),
    ]
    with trio.fail_after(40):
        async with daemon_and_client(sandbox) as (daemon, client):
            before = await ids(client)
            for fields, code, named in refused:
                fields.setdefault("cwd", cwd)
                response = await client.post("/v1/sessions", content=raw_body(fields), headers=JSON)
                message = assert_error(response, 422, code)
                assert named in message, (fields, message)
                await nothing_changed(daemon, client, before)

            # control characters where a program may want them: a multi-line script, an
            # ESC in an argument and in an environment value; text beyond the BMP
            body = {
                "shell": 'printf "%s|%s|" "$1" "$TB_VALUE"\nprintf "two lines"',
                "cwd": cwd,
                "env": {"TB_VALUE": "v\x1bw\tx"},
                "title": "ok 😀 [[[" + "[" * MAX_JSON_DEPTH,
            }
            created = await client.post("/v1/sessions", json=body)
            assert created.status_code == 201, created.text
            assert created.json()["title"] == body["title"]
            assert b"|v\x1bw\tx|two lines" in await output_of(client, created.json()["id"])


#: any code point: lone surrogates (which st.characters never draws), C0 and C1 controls, NUL,
#: beyond the BMP
ANY_TEXT = st.text(
    st.characters(codec=None) | st.integers(0xD800, 0xDFFF).map(chr) | st.integers(0, 0x9F).map(chr),
    max_size=12,
)


def create_body(field: str, text: str, cwd: str) -> dict[str, Any]:
    """A create request with ``text`` in ``field``, running only harmless programs."""
    command: dict[str, Any] = {"command": ["printf", "%s", "x"], "cwd": cwd}
    if field in ("title", "model", "prompt", "resume"):
        return {**command, field: text}
    if field == "agent":
        return {"agent": text, "cwd": cwd}
    if field == "args":
        return {**command, "args": [text]}
    if field == "cwd":
        return {**command, "cwd": f"{cwd}/{text}"}
    if field == "command":
        return {**command, "command": ["printf", "%s", text]}
    if field == "shell":
        return {"shell": ": " + shlex.quote(text), "cwd": cwd}
    if field == "env name":
        return {**command, "env": {text: "x"}}
    assert field == "env value"
    return {**command, "env": {"TB_FUZZ": text}}


async def test_hostile_text_fuzz(sandbox: Sandbox, tmp_path: Path) -> None:
    """Hypothesis puts any text (lone surrogates, control characters, NUL) into each text field
    of a create request and into typed input: never a 5xx; a refusal is a 4xx that changes
    nothing; what is accepted is kept as given."""
    cwd = str(tmp_path)
    fields = ["title", "cwd", "command", "shell", "env name", "env value", "agent", "model", "prompt",
              "args", "resume"]  # fmt: skip
    seen: dict[int, int] = {}

    def fuzz(url: str, daemon_dir: Path) -> None:
        transport = httpx.HTTPTransport(uds=url)
        with httpx.Client(transport=transport, base_url="http://trio-bridge", timeout=20) as client:
            cat = client.post("/v1/sessions", json={"command": ["cat"], "cwd": cwd}).json()["id"]

            def listed() -> set[str]:
                return {r["id"] for r in client.get("/v1/sessions").json()["sessions"]}

            @settings(max_examples=120, derandomize=True, database=None, deadline=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(field=st.sampled_from([*fields, "input"]), text=ANY_TEXT)
            def one(field: str, text: str) -> None:
                before = listed()
                if field == "input":
                    body = json.dumps({"text": text}).encode()  # escapes keep lone surrogates
                    response = client.post(f"/v1/sessions/{cat}/input", content=body, headers=JSON)
                else:
                    body = json.dumps(create_body(field, text, cwd)).encode()
                    response = client.post("/v1/sessions", content=body, headers=JSON)
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                assert response.status_code < 500, (field, text, response.text)
                if response.status_code >= 400:
                    assert set(response.json()) == {"error"}, response.text
                    assert listed() == before, (field, text)
                    on_disk = {p.name for p in (daemon_dir / "sessions").iterdir()}
                    assert on_disk == before, (field, text)
                elif field == "title" and text:  # (an empty title is the command's)
                    assert response.json()["title"] == text

            one()

    with trio.fail_after(50):
        async with daemon_and_client(sandbox) as (daemon, _client):
            await trio.to_thread.run_sync(
                fuzz, str(daemon.running.api_socket), daemon.settings.state_dir, abandon_on_cancel=True
            )
    assert seen.get(201) and seen.get(204) and seen.get(422), seen  # both accepted and refused


async def test_json_nesting_is_bounded(sandbox: Sandbox) -> None:
    """A body nested deeper than MAX_JSON_DEPTH is a 400 before it is parsed (100 000 levels
    were a RecursionError: a 500); one level less is parsed (then refused by the schema)."""
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (daemon, client):
            before = await ids(client)
            for path in ("/v1/sessions", "/v1/sessions/nope/input", "/v1/sessions/nope/keys"):
                deep = b"[" * 100_000 + b"]" * 100_000
                message = assert_error(
                    await client.post(path, content=deep, headers=JSON), 400, "invalid_json"
                )
                assert str(MAX_JSON_DEPTH) in message
                unclosed = b'{"command": ' + b"[" * 100_000
                assert_error(await client.post(path, content=unclosed, headers=JSON), 400, "invalid_json")

            def nested(levels: int) -> bytes:  # an object holding arrays: `levels` deep in all
                return b'{"command": ' + b"[" * (levels - 1) + b'"x"' + b"]" * (levels - 1) + b"}"

            at_limit = await client.post("/v1/sessions", content=nested(MAX_JSON_DEPTH), headers=JSON)
            assert_error(at_limit, 422, "invalid_request")  # parsed: a list is no string
            over = await client.post("/v1/sessions", content=nested(MAX_JSON_DEPTH + 1), headers=JSON)
            assert_error(over, 400, "invalid_json")
            await nothing_changed(daemon, client, before)


@pytest.mark.filterwarnings(  # trio-websocket's client leaks its socket after a close it did not start
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
async def test_websocket_message_nesting_is_bounded(sandbox: Sandbox, tmp_path: Path) -> None:
    """A WebSocket text message nested 100 000 deep is an error message (it was a RecursionError
    that ended the connection); the connection stays usable."""
    token = "t" * 24
    with trio.fail_after(30):
        async with daemon_and_client(sandbox, bind="127.0.0.1:0", token=token) as (daemon, client):
            client.headers["Authorization"] = f"Bearer {token}"
            created = await client.post("/v1/sessions", json={"command": ["cat"], "cwd": str(tmp_path)})
            assert created.status_code == 201, created.text
            assert daemon.running.api_url is not None
            url = (
                "ws" + daemon.running.api_url.removeprefix("http") + f"/v1/sessions/{created.json()['id']}/ws"
            )
            headers = [(b"Authorization", f"Bearer {token}".encode())]
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                assert json.loads(await ws.get_message())["type"] == "hello"
                await ws.send_message("[" * 100_000 + "]" * 100_000)
                reply = json.loads(await ws.get_message())
                assert reply["type"] == "error" and str(MAX_JSON_DEPTH) in reply["message"], reply
                await ws.send_message(json.dumps({"type": "input", "text": "still here", "enter": True}))
                received = b""
                while b"still here\r\n" not in received:
                    message = await ws.get_message()
                    received += message if isinstance(message, bytes) else b""


async def test_cwd_errors_are_422(sandbox: Sandbox, tmp_path: Path) -> None:
    """Whatever the operating system says about a cwd is a 422 (a name over 255 bytes was a
    500)."""
    (tmp_path / "file").write_text("")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cwds = [
        f"{tmp_path}/{'a' * 300}",  # ENAMETOOLONG: one name
        "/" + "/".join(["b" * 200] * 30),  # ENAMETOOLONG: the whole path
        f"{tmp_path}/file/sub",  # ENOTDIR
        f"{tmp_path}/loop/sub",  # ELOOP
        f"{tmp_path}/missing",
        "relative/path",
    ]
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (daemon, client):
            before = await ids(client)
            for cwd in cwds:
                response = await client.post("/v1/sessions", json={"command": ["true"], "cwd": cwd})
                assert_error(response, 422, "invalid_cwd")
            await nothing_changed(daemon, client, before)


async def test_405_says_what_is_allowed(sandbox: Sandbox) -> None:
    with trio.fail_after(20):
        async with daemon_and_client(sandbox) as (_daemon, client):
            response = await client.request("TRACE", "/v1/health")
            assert_error(response, 405, "method_not_allowed")
            assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
            response = await client.put("/v1/sessions")
            assert {"GET", "POST"} <= set(response.headers["Allow"].split(", "))


async def test_an_unread_body_does_not_stall_the_connection(sandbox: Sandbox) -> None:
    """A body no route reads (OPTIONS or GET with a body, a POST to a route that takes none),
    sent after its headers (as http.client does): the answer says ``Connection: close``. It was
    kept open, and the client's next request on it hung (found by schemathesis)."""
    body = b'{"text": "x"}'
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (daemon, _client):
            for method, path in [
                ("OPTIONS", "/v1/sessions/nope/hooks"), ("GET", "/v1/health"),
                ("GET", "/v1/sessions/nope/input"), ("POST", "/v1/sessions/nope/relay"),
            ]:  # fmt: skip
                async with await trio.open_unix_socket(str(daemon.running.api_socket)) as stream:
                    head = (
                        f"{method} {path} HTTP/1.1\r\nHost: trio-bridge\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n"
                    )
                    await stream.send_all(head.encode())
                    await trio.sleep(0.05)  # the answer may come before the body
                    with contextlib.suppress(trio.BrokenResourceError):
                        await stream.send_all(body)  # (the daemon may have closed already)
                    answer = b""
                    with trio.fail_after(5):
                        while chunk := await stream.receive_some():
                            answer += chunk  # ...to the end: the daemon closes the connection
                headers = answer.split(b"\r\n\r\n")[0].lower().split(b"\r\n")
                assert not headers[0].startswith(b"http/1.1 5"), headers
                assert b"connection: close" in headers, (method, path, headers)


# -- a full disk -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (mode 0700), unmounted at the end."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        unmounted = subprocess.run(["umount", str(where)], capture_output=True, timeout=10, check=False)
        if unmounted.returncode != 0:  # something still holds a file open: detach it anyway
            subprocess.run(["umount", "-l", str(where)], timeout=10, check=False)


def fill(directory: Path) -> None:
    """Write to ``directory`` until its file system is full."""
    with (directory / "filler").open("wb") as file:
        try:
            while True:
                file.write(b"\0" * (64 << 10))
                file.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    # what a partly written last block left free goes too
    for n in range(1000):
        try:
            (directory / f"filler{n}").write_bytes(b"\0" * 512)
        except OSError:
            break


async def test_full_disk(sandbox: Sandbox, tmp_path: Path) -> None:
    """On a full file system: creating a session is a 507 ``insufficient_storage`` that leaves
    nothing behind (it was a 500 with an empty directory and an ``exited`` record); ``DELETE``
    stops the session even though its last screen cannot be kept (it was a 500 and the session
    ran on); once there is room again, the daemon carries on."""
    marker = f"{time.monotonic_ns() % 10**9 + 10**9}"
    with small_tmpfs(sandbox.root / "disk", "4m") as disk, trio.fail_after(50):
        async with daemon_and_client(sandbox, state_dir=disk / "state") as (daemon, client):
            running = await client.post(
                "/v1/sessions", json={"shell": f"echo started; sleep {marker}", "cwd": str(tmp_path)}
            )
            assert running.status_code == 201, running.text
            session_id = running.json()["id"]
            with trio.fail_after(10):
                while b"started" not in (await client.get(f"/v1/sessions/{session_id}/output")).content:
                    await trio.sleep(0.05)
            assert live_pids_matching(f"sleep {marker}")
            before = await ids(client)

            await trio.to_thread.run_sync(fill, disk)
            for body in ({"command": ["true"]}, {"shell": "true", "env": {"A": "b"}, "title": "t"}):
                body["cwd"] = str(tmp_path)
                response = await client.post("/v1/sessions", json=body)
                message = assert_error(response, 507, "insufficient_storage")
                assert "full" in message
                await nothing_changed(daemon, client, before)

            killed = await client.delete(f"/v1/sessions/{session_id}")
            assert killed.status_code < 500, killed.text
            with trio.fail_after(10):
                while live_pids_matching(f"sleep {marker}"):
                    await trio.sleep(0.05)
            assert sandbox.tmux("has-session", "-t", f"=tb-{session_id}", check=False).returncode != 0

            for path in disk.glob("filler*"):
                path.unlink()
            again = await client.post("/v1/sessions", json={"command": ["true"], "cwd": str(tmp_path)})
            assert again.status_code == 201, again.text
            # what the daemon says happened, though its database could not take it
            assert (await client.get(f"/v1/sessions/{session_id}")).json()["state"] == "killed"
            assert os.path.isdir(disk / "state" / "sessions" / again.json()["id"])
            metrics = (await client.get("/metrics")).text
            assert re.search(r'restarts_total\{service="sessions"\} 0\.0', metrics), "a service crashed"
            assert re.search(r'restarts_total\{service="api"\} 0\.0', metrics), "a service crashed"
