"""Sessions as resources: listing, creating, refusals, unknown sessions, killing.

Through real HTTP: httpx on the daemon's unix socket (and on TCP where it matters),
trio-websocket for the WebSocket, the daemon really running in the test's trio loop, real tmux,
nothing mocked. Each test runs its own daemon (``daemon_and_client``, which kills every session
it started before the daemon stops) and is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import httpx
import trio

from .._api import (
    assert_error,
    create,
    daemon_and_client,
    output,
    session_ids,
    tmux_sessions,
    wait_ended,
    ws_handshake,
)
from ..conftest import Sandbox


async def test_listing_is_oldest_first(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with daemon_and_client(sandbox) as (_, client):
            created = [(await create(client, tmp_path, command=["true"]))["id"] for _ in range(3)]
            assert await session_ids(client) == created
            assert await session_ids(client, "exited,running,starting") == created


async def test_create_command_shell_interactive_env_cwd_size(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with daemon_and_client(sandbox) as (_, client):
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
        async with daemon_and_client(sandbox) as (_, client):
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
        async with daemon_and_client(sandbox) as (daemon, client):
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


async def test_delete_kills_a_running_session_once(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (_, client):
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
