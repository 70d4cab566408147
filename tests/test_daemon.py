"""The daemon: readiness, one per state directory, orderly shutdown, restarts that lose nothing."""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import aclosing, closing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_bridge.config import resolve_settings
from trio_bridge.daemon import serve_daemon
from trio_bridge.sessions import SessionState
from trio_bridge.supervise import CrashLoopError, RestartPolicy

from .conftest import Sandbox
from .sessions.test_manager import read_until


def start_daemon(sandbox: Sandbox, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "daemon", *args],
        env=sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if b"ready" in line or not line:
            break
    assert b"ready" in line, line
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def record_state(sandbox: Sandbox, session_id: str) -> str:
    with closing(sqlite3.connect(sandbox.state_dir / "sessions.db")) as db:
        return str(db.execute("SELECT state FROM sessions WHERE id = ?", (session_id,)).fetchone()[0])


async def test_in_process_daemon_keeps_sessions_across_restarts(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = resolve_settings(sandbox.env).settings
    script = "import time\nfor i in range(30):\n    print(f'tick {i:02d}', flush=True)\n    time.sleep(0.05)"
    async with trio.open_nursery() as nursery:
        manager = (await nursery.start(serve_daemon, settings)).manager
        record = await manager.create([sys.executable, "-c", script], cwd=tmp_path)
        first, offset = await read_until(manager.feed(record.id), 0, b"tick 03")
        nursery.cancel_scope.cancel()  # the daemon stops; the session does not
    assert record_state(sandbox, record.id) == "running"
    async with trio.open_nursery() as nursery:
        manager = (await nursery.start(serve_daemon, settings)).manager
        rest, _ = await read_until(manager.feed(record.id), offset, b"tick 29\r\n")
        nursery.cancel_scope.cancel()
    lines = (first + rest).decode().split("\r\n")[:-1]
    assert lines == [f"tick {i:02d}" for i in range(30)], (first, rest)


def test_second_daemon_is_refused_and_sigterm_stops_the_first(sandbox: Sandbox) -> None:
    first = start_daemon(sandbox, "--log-format", "json")
    try:
        lock = sandbox.state_dir / "daemon.lock"
        before = lock.read_bytes()
        second = sandbox.cli("daemon", timeout=15)
        assert second.returncode == 1
        assert f"process {first.pid} already holds" in second.stderr.decode()
        assert lock.read_bytes() == before and first.poll() is None
        started = time.monotonic()
    finally:
        code = stop(first)
    assert code == 0
    assert time.monotonic() - started < 10


def test_sigkill_and_restart_readopt_sessions(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = resolve_settings(sandbox.env).settings

    async def create() -> str:
        async with trio.open_nursery() as nursery:
            manager = (await nursery.start(serve_daemon, settings)).manager
            record = await manager.create(["sleep", "300"], cwd=tmp_path)
            nursery.cancel_scope.cancel()
        return record.id

    session_id = trio.run(create)
    daemon = start_daemon(sandbox)
    assert stop(daemon, signal.SIGKILL) == -signal.SIGKILL
    daemon = start_daemon(sandbox)  # the lock died with the killed daemon
    try:
        assert record_state(sandbox, session_id) == "running"
        assert sandbox.tmux("has-session", "-t", f"=tb-{session_id}", check=False).returncode == 0
    finally:
        stop(daemon)
    sandbox.tmux("kill-session", "-t", f"=tb-{session_id}")


async def test_retention_removes_old_ended_sessions(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = dataclasses.replace(resolve_settings(sandbox.env).settings, retention_count=1)
    async with trio.open_nursery() as nursery:
        manager = (await nursery.start(serve_daemon, settings)).manager
        ids = []
        for n in range(3):
            record = await manager.create(["sh", "-c", f"exit {n}"], cwd=tmp_path)
            ids.append(record.id)
            with trio.fail_after(15):
                while (await manager.store.get(record.id)).state is SessionState.RUNNING:  # type: ignore[union-attr]
                    await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        manager = (await nursery.start(serve_daemon, settings)).manager
        kept = [r.id for r in await manager.store.all()]
        nursery.cancel_scope.cancel()
    assert len(kept) == 1
    assert sorted(p.name for p in (sandbox.state_dir / "sessions").iterdir()) == kept


async def test_a_crashing_component_is_restarted_then_a_crash_loop_stops_the_daemon(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    # tmux that cannot run: the session manager crashes at every start
    settings = dataclasses.replace(resolve_settings(sandbox.env).settings, tmux_binary="/nonexistent/tmux")
    policy = RestartPolicy(initial_backoff=0.01, max_restarts=3, window=60)
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_daemon, settings, policy=policy))
    loops = info.value.subgroup(CrashLoopError)
    assert loops is not None
    error = loops.exceptions[0]
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert "service 'sessions' crashed 3 times" in str(error)
    restarts = [r for r in caplog.records if "restarting in" in r.getMessage()]
    assert len(restarts) == 2 and all(r.exc_info for r in restarts)


async def test_orderly_shutdown_with_active_readers(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = resolve_settings(sandbox.env).settings
    reading = 0

    async def reader(manager: Any, session_id: str) -> None:
        nonlocal reading
        async with aclosing(manager.feed(session_id).follow(0)) as chunks:
            reading += 1
            async for _ in chunks:
                pass

    async with trio.open_nursery() as nursery:
        manager = (await nursery.start(serve_daemon, settings)).manager
        records = [await manager.create(["sh", "-c", "echo hi; sleep 300"], cwd=tmp_path) for _ in range(5)]
        for record in records:
            nursery.start_soon(reader, manager, record.id)
        with trio.fail_after(10):
            while reading < 5:
                await trio.sleep(0.01)
        stopped_at = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - stopped_at < 2
    # the daemon is gone, its sessions are not
    live = sandbox.tmux("list-sessions", "-F", "#{session_name}").stdout.split()
    assert sorted(live) == sorted([r.tmux_name for r in records] + ["tb-hub"])
    for record in records:
        assert record_state(sandbox, record.id) == "running"


async def test_a_daemon_without_sessions_leaves_no_tmux_behind(sandbox: Sandbox) -> None:
    settings = resolve_settings(sandbox.env).settings
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_daemon, settings)
        assert sandbox.tmux("has-session", "-t", "=tb-hub", check=False).returncode == 0
        nursery.cancel_scope.cancel()
    assert sandbox.tmux("list-sessions", check=False).returncode != 0  # no server left
