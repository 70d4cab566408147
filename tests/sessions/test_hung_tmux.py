"""A hung tmux server (SIGSTOP): session requests fail in bounded time with 504, the rest of
the API stays fast, and everything recovers after SIGCONT with no session lost."""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import trio

from trio_bridge.config import Timeouts

from .._api import SseEvent, daemon_and_client, sse_events
from ..conftest import Sandbox

TMUX_TIMEOUT = 1.0


class Printed:
    """What a process printed so far (read without blocking)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self.data = b""

    def read(self) -> bytes:
        while select.select([self._fd], [], [], 0)[0] and (chunk := os.read(self._fd, 4096)):
            self.data += chunk
        return self.data


def tmux_server_pid(sandbox: Sandbox) -> int:
    return int(sandbox.tmux("display-message", "-p", "-t", "=tb-hub", "#{pid}").stdout)


async def test_hung_tmux_answers_504_in_time_and_recovers(sandbox: Sandbox, tmp_path: Path) -> None:
    timeouts = dataclasses.replace(Timeouts(), tmux=TMUX_TIMEOUT)
    script = "import sys\nfor line in sys.stdin:\n    print('got', line.strip(), flush=True)"
    async with daemon_and_client(sandbox, timeouts=timeouts) as (_daemon, client):
        created = await client.post(
            "/v1/sessions", json={"command": [sys.executable, "-u", "-c", script], "cwd": str(tmp_path)}
        )
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        followed: list[str] = []
        # `trio-bridge events` follows the lifecycle across the hub's replacement
        events = subprocess.Popen(
            [sys.executable, "-m", "trio_bridge", "events"],
            env=sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        printed = Printed(events)
        try:
            with trio.fail_after(15):
                while "trio_bridge_api_streams 1.0" not in (await client.get("/metrics")).text:
                    await trio.sleep(0.05)
            async with trio.open_nursery() as nursery:
                # a reader following the output from before the hang to after it
                nursery.start_soon(follow_output, client, session_id, followed)
                await hang_and_recover(sandbox, client, session_id, tmp_path)
            await client.delete(f"/v1/sessions/{session_id}")
            with trio.fail_after(10):
                while b"killed" not in printed.read():
                    await trio.sleep(0.05)
        finally:
            events.send_signal(signal.SIGINT)
            out, err = await trio.to_thread.run_sync(lambda: events.communicate(timeout=10))
        lines = [line.split()[:2] for line in (printed.data + out).decode().splitlines()]
        # the adoption once, then the end: no event twice, and no "daemon went away" (it did not)
        assert lines == [["adopted", session_id], ["killed", session_id]], lines
        assert b"reconnecting" not in err, err
        # the reader went on across the hub's replacement: every byte once, nothing missing
        logged = (await client.get(f"/v1/sessions/{session_id}/output")).content.decode()
        assert "".join(followed) == logged, (followed, logged)
        assert "got before" in logged and "got after" in logged


async def follow_output(client: Any, session_id: str, followed: list[str]) -> None:
    with trio.fail_after(30):
        async with (
            client.stream("GET", f"/v1/sessions/{session_id}/stream", timeout=None) as response,
            aclosing(cast(AsyncGenerator[SseEvent, None], sse_events(response))) as events,
        ):
            async for event in events:
                if event.event == "output":
                    followed.append(json.loads(event.data)["data"])
                    if "got after\r\n" in "".join(followed):  # the whole line: its end may come apart
                        return


async def hang_and_recover(sandbox: Sandbox, client: Any, session_id: str, tmp_path: Path) -> None:
    typed = await client.post(f"/v1/sessions/{session_id}/input", json={"text": "before", "enter": True})
    assert typed.status_code == 204, typed.text
    with trio.fail_after(10):
        while "got before" not in (await client.get(f"/v1/sessions/{session_id}/screen")).json()["text"]:
            await trio.sleep(0.05)
    pid = tmux_server_pid(sandbox)
    os.kill(pid, signal.SIGSTOP)
    try:
        # through the hub's control client: the first one finds tmux hung ...
        with trio.fail_after(TMUX_TIMEOUT + 1):
            screen = await client.get(f"/v1/sessions/{session_id}/screen")
        assert screen.status_code == 504, screen.text
        assert screen.json()["error"]["code"] == "tmux_timeout"
        assert "capture-pane" in screen.json()["error"]["message"]
        # ... the next while the hub is replaced; a subprocess (tmux send-keys) alike
        with trio.fail_after(TMUX_TIMEOUT + 1):
            screen = await client.get(f"/v1/sessions/{session_id}/screen")
        assert screen.status_code == 504, screen.text
        assert screen.json()["error"]["code"] == "tmux_timeout"
        with trio.fail_after(TMUX_TIMEOUT + 1):
            pressed = await client.post(f"/v1/sessions/{session_id}/keys", json={"keys": ["Enter"]})
        assert pressed.status_code == 504, pressed.text
        assert pressed.json()["error"]["code"] == "tmux_timeout"
        # what does not need tmux answers as ever
        with trio.fail_after(0.5):
            health = await client.get("/v1/health")
            listing = await client.get("/v1/sessions")
            one = await client.get(f"/v1/sessions/{session_id}")
        assert health.status_code == 200
        assert [s["state"] for s in listing.json()["sessions"]] == ["running"]
        assert one.json()["state"] == "running"
        # a new session cannot start either: 504, and nothing left half-made
        with trio.fail_after(TMUX_TIMEOUT + 1):
            refused = await client.post("/v1/sessions", json={"command": ["true"], "cwd": str(tmp_path)})
        assert refused.status_code == 504, refused.text
        assert refused.json()["error"]["code"] == "tmux_timeout"
        metrics = (await client.get("/metrics")).text
        name = "trio_bridge_tmux_command_timeouts_total"
        counted = [line for line in metrics.splitlines() if line.startswith(name)]
        assert counted and float(counted[0].split()[-1]) >= 1, counted
    finally:
        os.kill(pid, signal.SIGCONT)
    # recovered: the hub was replaced and the session re-adopted, not lost
    with trio.fail_after(15):
        while (screen := await client.get(f"/v1/sessions/{session_id}/screen")).status_code != 200:
            await trio.sleep(0.1)
    sessions = (await client.get("/v1/sessions", params={"state": "running,lost"})).json()["sessions"]
    assert [(s["id"], s["state"]) for s in sessions] == [(session_id, "running")]
    restarts = (await client.get("/metrics")).text
    assert 'trio_bridge_supervisor_restarts_total{service="sessions"} 1.0' in restarts
    typed = await client.post(f"/v1/sessions/{session_id}/input", json={"text": "after", "enter": True})
    assert typed.status_code == 204, typed.text
    with trio.fail_after(10):
        while "got after" not in (await client.get(f"/v1/sessions/{session_id}/screen")).json()["text"]:
            await trio.sleep(0.05)
    # the output stream follows the re-adopted session (the same feed, no gap)
    output = await client.get(f"/v1/sessions/{session_id}/output")
    assert b"got after" in output.content
