"""``/v1/health``, ``/v1/version``, ``/metrics``, the OpenAPI document, and the service
stopping: streams end cleanly, sessions survive.

Through real HTTP: httpx on the daemon's unix socket (and on TCP where it matters),
trio-websocket for the WebSocket, the daemon really running in the test's trio loop, real tmux,
nothing mocked. Each test runs its own daemon (``daemon_and_client``, which kills every session
it started before the daemon stops) and is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import gc
import json
import re
from contextlib import aclosing
from pathlib import Path

import httpx
import trio
import trio_websocket

from trio_bridge._version import __version__
from trio_bridge.api import ApiContext, create_app
from trio_bridge.config import resolve_settings

from .._api import (
    API_RESTARTS,
    assert_error,
    create,
    daemon_and_client,
    metric,
    open_ws,
    output_until,
    running_daemon,
    session_ids,
    sse_events,
    tmux_sessions,
    wait_ended,
    websocket_client_leak,
    ws_url,
)
from ..conftest import Sandbox


async def test_health_version_and_listing_with_state_filters(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (_, client):
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


async def test_metrics_match_reality(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with daemon_and_client(sandbox) as (_, client):
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
        async with daemon_and_client(sandbox) as (daemon, client):
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
