"""The SQLite session store, on a real database file."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import attrs
import pytest
import trio

from trio_bridge.sessions import SessionRecord, SessionState, open_session_store


def record(
    n: int, state: SessionState = SessionState.RUNNING, ended_at: float | None = None
) -> SessionRecord:
    return SessionRecord(
        id=f"s{n:03d}",
        title=f"session {n}",
        command=("sh", "-c", f"echo {n}; it's"),
        cwd="/tmp",
        env_keys=("A", "B"),
        created_at=1000.0 + n,
        state=state,
        origin="test",
        tmux_name=f"tb-s{n:03d}",
        ended_at=ended_at,
    )


async def test_records_round_trip_and_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "state" / "sessions.db"
    async with open_session_store(db) as store:
        await store.add(record(1))
        await store.add(record(2))
        done = attrs.evolve(record(1), state=SessionState.EXITED, exit_code=3, ended_at=2000.0)
        await store.update(done)
    async with open_session_store(db) as store:
        assert await store.get("s001") == done
        assert await store.get("nope") is None
        assert [r.id for r in await store.all()] == ["s001", "s002"]
        assert [r.id for r in await store.all([SessionState.RUNNING])] == ["s002"]
    with closing(sqlite3.connect(db)) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_duplicates_and_missing_updates_are_errors(tmp_path: Path) -> None:
    async with open_session_store(tmp_path / "s.db") as store:
        await store.add(record(1))
        with pytest.raises(sqlite3.IntegrityError):
            await store.add(record(1))
        with pytest.raises(sqlite3.IntegrityError):  # same tmux name, other id
            await store.add(attrs.evolve(record(1), id="other"))
        with pytest.raises(KeyError):
            await store.update(record(9))


async def test_prune_keeps_running_and_the_newest_ended(tmp_path: Path) -> None:
    async with open_session_store(tmp_path / "s.db") as store:
        await store.add(record(1))  # running: never pruned
        for n, ended in [(2, 100.0), (3, 200.0), (4, 300.0), (5, 400.0)]:
            await store.add(record(n, SessionState.EXITED, ended_at=ended))
        await store.add(record(6, SessionState.LOST, ended_at=50.0))
        # keep the 3 newest ended, and nothing that ended before 150
        deleted = await store.prune(keep=3, older_than=150.0)
        assert sorted(deleted) == ["s002", "s006"]
        assert [r.id for r in await store.all()] == ["s001", "s003", "s004", "s005"]
        assert sorted(await store.prune(keep=1, older_than=0)) == ["s003", "s004"]


async def test_concurrent_writers_are_serialised(tmp_path: Path) -> None:
    async with open_session_store(tmp_path / "s.db") as store:
        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(store.add, record(n))
        assert len(await store.all()) == 50


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with closing(sqlite3.connect(db)) as old:
        old.execute("PRAGMA user_version=99")
    with pytest.raises(RuntimeError, match="newer than this trio-bridge"):
        async with open_session_store(db):
            pass
