"""A first end-to-end look at the API (the full suite is tests/test_api.py)."""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path

import trio

from ._api import running_daemon, sse_events
from .conftest import Sandbox


async def test_create_stream_and_wait(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox) as daemon, daemon.client() as client:
            response = await client.post(
                "/v1/sessions",
                json={"command": ["sh", "-c", "printf 'h\\303\\251llo\\n'"], "cwd": str(tmp_path)},
            )
            assert response.status_code == 201, response.text
            session_id = response.json()["id"]
            events = []
            async with (
                client.stream("GET", f"/v1/sessions/{session_id}/stream") as stream,
                aclosing(sse_events(stream)) as parsed,
            ):
                async for event in parsed:
                    events.append(event)
                    if event.event == "end":
                        break
            text = "".join(e.json()["data"] for e in events if e.event == "output")
            assert text == "héllo\r\n"
            assert events[-1].json()["exit_code"] == 0
            assert int(events[-2].id or -1) == len("héllo\r\n".encode())
