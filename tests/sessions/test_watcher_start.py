"""Watchers start through ``nursery.start``: a failure before the session runs reaches the caller
of ``create()``, leaves nothing running, and the manager serves on."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trio_bridge.output import LogWatch
from trio_bridge.sessions import SessionManager, SessionState

from ..conftest import Sandbox
from .test_manager import read_until, running_manager


class InjectedError(Exception):
    pass


async def test_watcher_failing_before_start_fails_create(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sandbox.server()
    async with running_manager(server, sandbox.state_dir) as manager:
        assert isinstance(manager, SessionManager)
        # (what a watcher does before it reports started: watch the session's log)
        watch = LogWatch.watch

        def failing_watch(self: LogWatch, directory: Path) -> object:
            raise InjectedError(f"watching {directory} failed")

        monkeypatch.setattr(LogWatch, "watch", failing_watch)
        with trio.fail_after(10), pytest.raises(InjectedError):
            await manager.create(["sh", "-c", "echo never; sleep 30"], cwd=tmp_path)
        (record,) = await manager.store.all()
        # not running, and no tmux session left behind
        assert record.state is SessionState.EXITED and record.exit_code is None
        assert not await server.has_session(record.tmux_name)

        # the manager is still serving: the next session runs as usual
        monkeypatch.setattr(LogWatch, "watch", watch)
        with trio.fail_after(10):
            second = await manager.create(["sh", "-c", "echo fine"], cwd=tmp_path)
            data, _ = await read_until(manager.feed(second.id), 0, b"fine\r\n")
        assert data == b"fine\r\n"
