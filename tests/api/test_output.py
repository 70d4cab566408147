"""A session's output at rest: the screen, byte ranges, waiting for the end, retention.

Through real HTTP: httpx on the daemon's unix socket (and on TCP where it matters),
trio-websocket for the WebSocket, the daemon really running in the test's trio loop, real tmux,
nothing mocked. Each test runs its own daemon (``daemon_and_client``, which kills every session
it started before the daemon stops) and is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import trio

from trio_bridge.mesh import relay

from .._api import (
    ALL,
    assert_error,
    check_output_events,
    create,
    daemon_and_client,
    output,
    output_until,
    read_stream,
    wait_ended,
)
from ..conftest import Sandbox


async def test_screen_of_a_killed_session(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with daemon_and_client(sandbox) as (_, client):
            session = await create(client, tmp_path, shell="echo visible-text; exec sleep 300")
            sid = session["id"]
            await output_until(client, sid, b"visible-text\r\n")
            assert "visible-text" in (await client.get(f"/v1/sessions/{sid}/screen")).json()["text"]
            assert (await client.delete(f"/v1/sessions/{sid}")).json()["state"] == "killed"
            assert (await client.get(f"/v1/sessions/{sid}")).status_code == 200
            screen = await client.get(f"/v1/sessions/{sid}/screen")
            assert screen.status_code == 200, screen.text
            assert screen.json()["live"] is False and "visible-text" in screen.json()["text"]


async def test_screen_output_ranges_and_wait(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (_, client):
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
        async with daemon_and_client(sandbox) as (_, client):
            session = await create(client, tmp_path, command=["echo", "four"])
            await wait_ended(client, session["id"])
            assert await output(client, session["id"]) == b"four\r\n"
            beyond = await client.get(f"/v1/sessions/{session['id']}/output", params={"offset": 1000})
            assert beyond.content == b"" and beyond.headers["X-Output-Complete"] == "true"
            assert beyond.headers["X-Output-End"] == "6"


async def test_large_output_pages_and_streams_exactly(sandbox: Sandbox, tmp_path: Path) -> None:
    expected = "".join(f"{n}\r\n" for n in range(1, 40001)).encode()
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (_, client):
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
        async with daemon_and_client(sandbox, output_max_bytes=1 << 20) as (_, client):
            script = f"head -c {size} /dev/zero | tr '\\0' x; echo"
            session = await create(client, tmp_path, shell=script)
            sid = session["id"]
            assert (await wait_ended(client, sid))["exit_code"] == 0
            first_kept = 2 << 20  # whole 1 MiB segments are dropped, the newest one is kept
            dropped = await client.get(f"/v1/sessions/{sid}/output")
            error = assert_error(dropped, 410, "offset_dropped", fields=frozenset({"first_offset"}))
            assert str(first_kept) in error["message"]
            assert error["first_offset"] == first_kept
            # what a reader on another computer of the mesh reads from this body
            assert relay._first_kept(dropped.content, 0) == first_kept
            kept = await client.get(f"/v1/sessions/{sid}/output", params={"offset": first_kept, **ALL})
            assert kept.content == b"x" * (size - first_kept) + b"\r\n"
            assert kept.headers["X-Output-End"] == str(size + 2)

            events = await read_stream(client, sid)
            assert events[0].event == "resync" and events[0].id == str(first_kept)
            assert events[0].json() == {"requested": 0, "offset": first_kept}
            assert check_output_events(events, first_kept) == kept.content
            assert events[-1].event == "end"
