"""The session manager with a real tmux server and a real SQLite store, started in-process."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import pytest
import trio

from trio_bridge.agents import AgentProfile
from trio_bridge.output import Chunk, OutputFeed, Resync
from trio_bridge.sessions import (
    EventKind,
    SessionManager,
    SessionState,
    SessionTuning,
    UnknownSessionError,
    open_session_store,
)
from trio_bridge.sessions.manager import AgentStart
from trio_bridge.tmux import TmuxServer

from ..conftest import Sandbox


@asynccontextmanager
async def running_manager(
    server: TmuxServer, state: Path, tuning: SessionTuning | None = None
) -> AsyncIterator[SessionManager]:
    async with open_session_store(state / "sessions.db") as store, trio.open_nursery() as nursery:
        manager = SessionManager(server, store, state, tuning=tuning or SessionTuning())
        await nursery.start(manager.run)
        yield manager
        nursery.cancel_scope.cancel()


async def read_until(feed: OutputFeed, start: int, needle: bytes) -> tuple[bytes, int]:
    """Read from ``start`` until ``needle`` arrives; return the bytes and the next offset."""
    data = b""
    offset = start
    with trio.fail_after(15):
        async with aclosing(feed.follow(start)) as chunks:
            async for item in chunks:
                assert isinstance(item, Chunk) and item.offset == offset  # no gap, no duplicate
                data += item.data
                offset += len(item.data)
                if needle in data:
                    break
    return data, offset


async def wait_for_state(manager: SessionManager, session_id: str, state: SessionState) -> None:
    with trio.fail_after(15):
        while (record := await manager.store.get(session_id)) is None or record.state is not state:
            await trio.sleep(0.02)


async def test_create_stream_and_exit(sandbox: Sandbox, tmp_path: Path) -> None:
    server = sandbox.server()
    async with running_manager(server, sandbox.state_dir) as manager:
        events = manager.subscribe()
        record = await manager.create(["sh", "-c", "echo one; sleep 0.3; echo two; exit 4"], cwd=tmp_path)
        assert record.state is SessionState.RUNNING
        data, _ = await read_until(manager.feed(record.id), 0, b"two\r\n")
        assert data == b"one\r\ntwo\r\n"
        await wait_for_state(manager, record.id, SessionState.EXITED)
        ended = await manager.store.get(record.id)
        assert ended is not None and (ended.exit_code, ended.exit_signal) == (4, None)
        kinds = [events.receive_nowait().kind for _ in range(3)]
        assert kinds == [EventKind.CREATED, EventKind.RUNNING, EventKind.EXITED]
        # ended sessions keep their output and their last screen
        assert manager.feed(record.id).log.read(0) == b"one\r\ntwo\r\n"
        assert "two" in (sandbox.state_dir / "sessions" / record.id / "screen.txt").read_text()
        assert await server.list_sessions() == []


async def test_kill_is_recorded(sandbox: Sandbox, tmp_path: Path) -> None:
    async with running_manager(sandbox.server(), sandbox.state_dir) as manager:
        record = await manager.create(["sleep", "300"], cwd=tmp_path)
        await manager.kill(record.id)
        await wait_for_state(manager, record.id, SessionState.KILLED)


async def test_restart_readopts_and_readers_resume_without_gap(sandbox: Sandbox, tmp_path: Path) -> None:
    server = sandbox.server()
    script = "import time\nfor i in range(40):\n    print(f'line {i:03d}', flush=True)\n    time.sleep(0.05)"
    async with running_manager(server, sandbox.state_dir) as manager:
        record = await manager.create([sys.executable, "-c", script], cwd=tmp_path)
        first, offset = await read_until(manager.feed(record.id), 0, b"line 005")
    # the manager (our "daemon") is gone; the session lives on in tmux and keeps writing its log
    await trio.sleep(0.5)
    assert [s.session_id for s in await server.list_sessions()] == [record.id]
    async with running_manager(server, sandbox.state_dir) as manager:
        assert (await manager.store.get(record.id)).state is SessionState.RUNNING  # type: ignore[union-attr]
        rest, _ = await read_until(manager.feed(record.id), offset, b"line 039\r\n")
        await wait_for_state(manager, record.id, SessionState.EXITED)
    lines = (first + rest).decode().split("\r\n")
    assert lines[:-1] == [f"line {i:03d}" for i in range(40)]


async def test_sessions_that_ended_or_vanished_while_down(sandbox: Sandbox, tmp_path: Path) -> None:
    server = sandbox.server()
    async with running_manager(server, sandbox.state_dir) as manager:
        ends = await manager.create(["sh", "-c", "sleep 0.5; exit 7"], cwd=tmp_path)
        vanishes = await manager.create(["sleep", "300"], cwd=tmp_path)
    sandbox.tmux("kill-session", "-t", f"={vanishes.tmux_name}")
    sandbox.tmux("new-session", "-d", "-s", "not-ours", "sleep 300")
    await trio.sleep(1)
    async with running_manager(server, sandbox.state_dir) as manager:
        await wait_for_state(manager, ends.id, SessionState.EXITED)
        assert (await manager.store.get(ends.id)).exit_code == 7  # type: ignore[union-attr]
        assert (await manager.store.get(vanishes.id)).state is SessionState.LOST  # type: ignore[union-attr]
    # never adopted, never touched
    assert sandbox.tmux("has-session", "-t", "=not-ours", check=False).returncode == 0


async def test_a_lost_agent_sessions_new_files_go_to_the_users_home(sandbox: Sandbox, tmp_path: Path) -> None:
    """A Gemini-style session home: what the agent created there reaches the user's ~/.gemini
    even when its session was lost while the daemon was down (its directory goes later)."""
    server = sandbox.server()
    home = tmp_path / "home"
    script = 'echo remembered > "$GEMINI_CLI_HOME/.gemini/GEMINI.md"; exec sleep 300'
    profile = AgentProfile("writer", "sh", args=("-c", script, "sh"), hooks="gemini")
    async with running_manager(server, sandbox.state_dir) as manager:
        record = await manager.create([], cwd=tmp_path, env={"HOME": str(home)}, agent=AgentStart(profile))
        written = sandbox.state_dir / "sessions" / record.id / "agent/gemini-home/.gemini/GEMINI.md"
        with trio.fail_after(10):
            while not written.exists():
                await trio.sleep(0.02)
    sandbox.tmux("kill-session", "-t", f"={record.tmux_name}")
    async with running_manager(server, sandbox.state_dir) as manager:
        assert (await manager.store.get(record.id)).state is SessionState.LOST  # type: ignore[union-attr]
    assert (home / ".gemini" / "GEMINI.md").read_text() == "remembered\n"


async def test_screen_live_and_after_the_end(sandbox: Sandbox, tmp_path: Path) -> None:
    async with running_manager(sandbox.server(), sandbox.state_dir) as manager:
        record = await manager.create(["sh", "-c", "echo shown; read x"], cwd=tmp_path, width=40, height=5)
        await read_until(manager.feed(record.id), 0, b"shown")
        assert (await manager.screen(record.id)).splitlines()[0] == "shown"
        await manager.server.send_text(record.tmux_name, "bye", enter=True)
        await wait_for_state(manager, record.id, SessionState.EXITED)
        assert "bye" in await manager.screen(record.id)


async def test_a_slow_reader_resyncs_while_a_fast_one_keeps_up(sandbox: Sandbox, tmp_path: Path) -> None:
    line = "x" * 1000
    script = (
        f"import time\nfor i in range(60):\n    print(f'{{i:04d}} {line}', flush=True)\n    time.sleep(0.01)"
    )
    async with running_manager(
        sandbox.server(), sandbox.state_dir, SessionTuning(segment_size=4096, log_max_bytes=16384)
    ) as manager:
        record = await manager.create([sys.executable, "-c", script], cwd=tmp_path)
        # to the end of the last line (stopping at its start would leave the rest unread)
        fast, end = await read_until(manager.feed(record.id), 0, f"0059 {line}\r\n".encode())
        await wait_for_state(manager, record.id, SessionState.EXITED)
        assert len(fast) == end and fast.startswith(b"0000 ")  # every byte, in order, no resync
        # a reader that comes late from offset 0: told where the log now starts, then the rest
        items = []
        async with aclosing(manager.feed(record.id).follow(0)) as chunks:
            async for item in chunks:
                items.append(item)
    assert isinstance(items[0], Resync) and items[0].requested == 0
    first_kept = items[0].offset
    assert first_kept > 0 and first_kept % 4096 == 0
    tail = b"".join(i.data for i in items[1:] if isinstance(i, Chunk))
    assert tail == fast[first_kept:]


async def test_what_is_held_per_session_outlives_the_watcher_until_forgotten(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    server = sandbox.server()
    async with running_manager(server, sandbox.state_dir) as manager:
        with trio.fail_after(20):
            record = await manager.create(["sh", "-c", "echo held; read x"], cwd=tmp_path)
            live = manager.live_sessions()[record.id]
            assert live.watched and live.pane_id is not None
            waited: list[SessionState] = []

            async def wait_for_end() -> None:
                waited.append((await manager.wait(record.id)).state)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_end)
                await read_until(manager.feed(record.id), 0, b"held")
                await manager.kill(record.id)
            assert waited == [SessionState.KILLED]
            # the watcher is done; the record stays: the same feed, closed, still readable
            assert manager.live_sessions()[record.id] is live
            assert not live.watched and live.pane_id is None and not live.killing
            assert manager.feed(record.id) is live.feed and live.feed.closed
            data, _ = await read_until(manager.feed(record.id), 0, b"held")
            assert data.startswith(b"held")
            await manager.forget(record.id)
            assert record.id not in manager.live_sessions()
            with pytest.raises(UnknownSessionError):
                manager.feed(record.id)
