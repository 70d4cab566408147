"""Typing into a session: ``/input`` and ``/keys``.

Through real HTTP: httpx on the daemon's unix socket (and on TCP where it matters),
trio-websocket for the WebSocket, the daemon really running in the test's trio loop, real tmux,
nothing mocked. Each test runs its own daemon (``daemon_and_client``, which kills every session
it started before the daemon stops) and is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

from pathlib import Path

import trio

from .._api import (
    assert_error,
    create,
    daemon_and_client,
    output,
    output_until,
    wait_ended,
)
from ..conftest import Sandbox


async def test_input_is_typed_exactly(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (_, client):
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
        async with daemon_and_client(sandbox, max_input_bytes=100) as (_, client):
            cat = await create(client, tmp_path, command=["cat"])
            sid = cat["id"]
            path = f"/v1/sessions/{sid}/input"
            assert (await client.post(path, json={"text": "x" * 100, "enter": True})).status_code == 204
            for text in ("y" * 101, "é" * 51, "z" * 5000):  # bytes count, not characters
                error = assert_error(await client.post(path, json={"text": text, "enter": True}), 413)
                assert error["code"] == "input_too_large" and "100" in error["message"]
            # each line once cat printed the last: else the next line's echo may come first
            await output_until(client, sid, b"x" * 100 + b"\r\n", 2)
            assert (await client.post(path, json={"text": "é" * 50, "enter": True})).status_code == 204
            await output_until(client, sid, "é".encode() * 50 + b"\r\n", 2)
            assert (await client.post(path, json={"text": "end", "enter": True})).status_code == 204
            data = await output_until(client, sid, b"end\r\n", 2)
            lines = [b"x" * 100, "é".encode() * 50, b"end"]
            assert data == b"".join(line + b"\r\n" + line + b"\r\n" for line in lines)


async def test_keys(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (_, client):
            # (C-c once sleep runs: before, it would stop the session's start instead)
            sleeper = await create(client, tmp_path, command=["sh", "-c", "echo ready; exec sleep 300"])
            sid = sleeper["id"]
            await output_until(client, sid, b"ready\r\n")
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
            # (sh may print its prompt after the echo of the typed line, before echo's output)
            data = await output_until(client, sh["id"], b"ab\r\n")
            assert b"abc\r\n" not in data
            await client.post(f"/v1/sessions/{sh['id']}/keys", json={"keys": ["C-d"]})
            assert (await wait_ended(client, sh["id"]))["exit_code"] == 0
