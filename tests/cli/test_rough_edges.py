"""The CLI's rough edges of issue 14, each against a real daemon: tail on a trimmed log,
`send -` with any bytes, unknown ids, killed sessions, `new` with a missing command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from .._api import daemon_and_client
from ..conftest import Sandbox


async def cli(sandbox: Sandbox, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return await trio.to_thread.run_sync(lambda: sandbox.cli(*args, input=input))


async def ended(client: Any, session_id: str) -> dict[str, Any]:
    with trio.fail_after(20):
        while True:
            result = (await client.get(f"/v1/sessions/{session_id}/wait", params={"timeout": 10})).json()
            if result["ended"]:
                return dict(result["session"])


async def test_tail_on_a_trimmed_log_gives_the_last_lines_kept(sandbox: Sandbox, tmp_path: Path) -> None:
    async with daemon_and_client(sandbox, output_max_bytes=1 << 20) as (_daemon, client):
        created = await client.post(
            "/v1/sessions", json={"command": ["seq", "1", "400000"], "cwd": str(tmp_path)}
        )
        session_id = created.json()["id"]
        await ended(client, session_id)
        first = await client.get(f"/v1/sessions/{session_id}/output", params={"offset": 0})
        assert first.status_code == 410  # the log was trimmed
        tail = await cli(sandbox, "tail", "-n", "3", session_id)
        assert tail.returncode == 0, tail.stderr
        assert tail.stdout == b"399998\n399999\n400000\n"
        assert b"was dropped" in tail.stderr and len(tail.stderr.splitlines()) == 1, tail.stderr
        follow = await cli(sandbox, "tail", "-f", "-n", "2", session_id)
        assert follow.returncode == 0, follow.stderr
        assert follow.stdout == b"399999\n400000\n"


async def test_send_stdin_passes_any_bytes(sandbox: Sandbox, tmp_path: Path) -> None:
    # the terminal in raw mode: the program reads exactly the bytes typed
    script = (
        "import os, sys, tty\ntty.setraw(0)\nprint('ready', flush=True)\ndata = b''\n"
        "while len(data) < 3:\n    data += os.read(0, 3 - len(data))\nprint('got', data.hex(), flush=True)"
    )
    async with daemon_and_client(sandbox) as (_daemon, client):
        created = await client.post(
            "/v1/sessions", json={"command": [sys.executable, "-c", script], "cwd": str(tmp_path)}
        )
        session_id = created.json()["id"]
        with trio.fail_after(10):
            while b"ready" not in (await client.get(f"/v1/sessions/{session_id}/output")).content:
                await trio.sleep(0.05)
        sent = await cli(sandbox, "send", "--no-enter", session_id, "-", input=b"\xff\xfe\n")
        assert sent.returncode == 0, sent.stderr
        await ended(client, session_id)
        output = (await client.get(f"/v1/sessions/{session_id}/output")).content
        assert b"got fffe0a" in output, output


async def test_unknown_ids_get_one_line_and_exit_1(sandbox: Sandbox) -> None:
    async with daemon_and_client(sandbox):
        for args in (
            ["attach", "nosuch"], ["prompt", "", "hi"], ["prompt", "nosuch", "hi"], ["screen", "nosuch"],
            ["screen", ""], ["tail", "nosuch"], ["tail", "-f", "nosuch"], ["wait", "nosuch"],
            ["kill", "nosuch"], ["send", "nosuch", "x"], ["send", "../x", "x"], ["keys", "nosuch", "Enter"],
        ):  # fmt: skip
            done = await cli(sandbox, *args)
            assert done.returncode == 1, (args, done.stderr)
            lines = done.stderr.decode().splitlines()
            assert len(lines) == 1 and "no session" in lines[0], (args, lines)


async def test_wait_on_a_killed_session_tells_the_signal(sandbox: Sandbox, tmp_path: Path) -> None:
    async with daemon_and_client(sandbox) as (_daemon, client):
        created = await client.post("/v1/sessions", json={"command": ["sleep", "100"], "cwd": str(tmp_path)})
        session_id = created.json()["id"]
        killed = await cli(sandbox, "kill", session_id)
        assert killed.returncode == 0, killed.stderr
        waited = await cli(sandbox, "wait", session_id)
        assert waited.returncode == 128 + 1, waited.stderr  # SIGHUP: its window was closed
        (session,) = json.loads((await cli(sandbox, "ls", "--json")).stdout)
        assert (session["state"], session["exit_code"], session["exit_signal"]) == ("killed", None, 1)
        listed = (await cli(sandbox, "ls")).stdout.decode()
        assert "SIGHUP" in listed, listed


async def test_new_refuses_a_command_that_cannot_be_found(sandbox: Sandbox, tmp_path: Path) -> None:
    async with daemon_and_client(sandbox) as (_daemon, client):
        new = await cli(sandbox, "new", "--", "nosuchcmd-tb14")
        run = await cli(sandbox, "run", "--", "nosuchcmd-tb14")
        assert new.returncode == run.returncode == 127
        assert new.stderr == run.stderr == b"trio-bridge: command not found: nosuchcmd-tb14\n"
        assert new.stdout == b""
        assert (await client.get("/v1/sessions")).json()["sessions"] == []


def test_followers_without_a_daemon_say_so_at_once(sandbox: Sandbox) -> None:
    # reconnecting is for a daemon that went away, not for one that was never there
    for args in (["wait", "abc"], ["events"], ["tail", "-f", "--from", "0", "abc"]):
        done = sandbox.cli(*args, timeout=10)
        assert done.returncode == 3, (args, done.stderr)
        assert b"not running" in done.stderr and b"reconnecting" not in done.stderr, (args, done.stderr)
