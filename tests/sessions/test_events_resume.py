"""Session events carry ids; a subscriber resumes after the last one it got."""

from __future__ import annotations

from pathlib import Path

import trio

from trio_bridge.sessions import EventKind

from ..conftest import Sandbox
from .test_manager import running_manager


async def test_subscribe_after_replays_what_followed(sandbox: Sandbox, tmp_path: Path) -> None:
    server = sandbox.server()
    async with running_manager(server, sandbox.state_dir) as manager:
        live = manager.subscribe()
        record = await manager.create(["sh", "-c", "exit 3"], cwd=tmp_path)
        got = []
        with trio.fail_after(10):
            async for event in live:
                got.append(event)
                if event.kind is EventKind.EXITED:
                    break
        assert [e.kind for e in got] == [EventKind.CREATED, EventKind.RUNNING, EventKind.EXITED]
        assert all(e.record.id == record.id for e in got)
        assert len({e.id for e in got}) == 3 and all(e.id for e in got)

        resumed, complete = manager.subscribe_after(got[0].id)
        assert complete
        assert [resumed.receive_nowait().id for _ in range(2)] == [got[1].id, got[2].id]

        unknown, complete = manager.subscribe_after("from-another-run-7")
        assert not complete  # every event kept is replayed, and the caller is told
        assert [unknown.receive_nowait().id for _ in range(3)] == [e.id for e in got]
