"""Live streams: a session's output and the lifecycle events as Server-Sent Events, and a session's WebSocket.

Through real HTTP: httpx on the daemon's unix socket (and on TCP where it matters),
trio-websocket for the WebSocket, the daemon really running in the test's trio loop, real tmux,
nothing mocked. Each test runs its own daemon (``daemon_and_client``, which kills every session
it started before the daemon stops) and is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import gc
import json
from contextlib import aclosing
from pathlib import Path

import pytest
import trio
import trio_websocket

from .._api import (
    API_RESTARTS,
    TOKEN,
    SseEvent,
    assert_error,
    check_output_events,
    create,
    daemon_and_client,
    metric,
    open_ws,
    output,
    read_stream,
    same_origin,
    sse_events,
    websocket_client_leak,
    ws_handshake,
    ws_json,
    ws_until,
    ws_url,
)
from ..conftest import Sandbox


async def test_sse_live_resume_utf8_and_end(sandbox: Sandbox, tmp_path: Path) -> None:
    # '€' is \342\202\254: its first byte is written alone, the rest only after input.
    script = (
        "stty -echo; printf 'a\\342'; read x; printf '\\202\\254b\\n'; read y; printf 'l%s\\n' 1 2 3; exit 3"
    )
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (_, client):
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
        async with daemon_and_client(sandbox) as (_, client):
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
        async with daemon_and_client(sandbox) as (daemon, client):
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


async def test_head_on_a_stream_route_completes(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (daemon, client):
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


@websocket_client_leak
async def test_websocket_round_trip(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with daemon_and_client(sandbox, bind="127.0.0.1:0", max_input_bytes=50) as (daemon, client):
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
        async with daemon_and_client(sandbox, bind="127.0.0.1:0") as (daemon, client):
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
        async with daemon_and_client(sandbox, token=TOKEN, bind="127.0.0.1:0") as (daemon, client):
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
