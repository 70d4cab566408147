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


async def test_a_schema_1_database_gains_the_agent_columns(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    with closing(sqlite3.connect(path)) as db, db:
        # the schema as version 1 made it, with one row
        db.executescript(
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, title TEXT NOT NULL, command TEXT NOT NULL,"
            " cwd TEXT NOT NULL, env_keys TEXT NOT NULL, created_at REAL NOT NULL, ended_at REAL,"
            " state TEXT NOT NULL, exit_code INTEGER, exit_signal INTEGER, origin TEXT NOT NULL,"
            " tmux_name TEXT NOT NULL UNIQUE);"
            "INSERT INTO sessions VALUES ('old1', 't', '[\"true\"]', '/', '[]', 1.0, 2.0, 'exited', 0,"
            " NULL, 'api', 'tb-old1');"
            "PRAGMA user_version=1;"
        )
    with trio.fail_after(10):
        async with open_session_store(path) as store:
            old = await store.get("old1")
            assert old is not None and old.exit_code == 0 and old.agent is None and old.native_id is None
            agent = attrs.evolve(
                record(1), agent="claude", agent_state="idle", native_id="n-1", transcript_path="/t"
            )
            await store.add(agent)
        async with open_session_store(path) as store:
            assert await store.get(agent.id) == agent
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4  # (3: the mesh replay memory; 4: names)
