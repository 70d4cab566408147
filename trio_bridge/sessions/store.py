"""The session store: one SQLite database in the state directory.

SQLite in WAL mode, one connection, every call made in a worker thread (never on the event
loop) and serialised by a lock, so the daemon's tasks can share the store safely. Records
survive daemon restarts; that is what lets a restarted daemon re-adopt its sessions.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

__all__ = ["NameTakenError", "SessionRecord", "SessionState", "SessionStore", "open_session_store"]

T = TypeVar("T")

SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    command     TEXT NOT NULL,          -- JSON list of argv
    cwd         TEXT NOT NULL,
    env_keys    TEXT NOT NULL,          -- JSON list of names (values are never stored)
    created_at  REAL NOT NULL,
    ended_at    REAL,
    state       TEXT NOT NULL,
    exit_code   INTEGER,
    exit_signal INTEGER,
    origin      TEXT NOT NULL,
    tmux_name   TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS sessions_state ON sessions(state);
CREATE INDEX IF NOT EXISTS sessions_ended ON sessions(ended_at);
-- schema 2 -> 3 (created by this script if missing): the mesh requests this daemon handled,
-- kept until they are stale (see SessionStore.remember)
CREATE TABLE IF NOT EXISTS mesh_seen (
    id          TEXT PRIMARY KEY,
    expires_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS mesh_seen_expires ON mesh_seen(expires_at);
"""
#: schema 3 -> 4: a session's optional name (``new --name build``), unique among the records
_NAME_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS sessions_name ON sessions(name)"
#: ids kept in ``mesh_seen`` at most (the oldest go first)
MESH_SEEN_MAX = 100_000
#: schema 1 -> 2: agent sessions (the profile, the agent's state, its own conversation id and
#: transcript, kept so that a conversation can be resumed after the session or daemon ended)
_AGENT_COLUMNS = ("agent", "agent_state", "native_id", "transcript_path")


class SessionState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"
    KILLED = "killed"
    #: its tmux session vanished while the daemon was away
    LOST = "lost"

    @property
    def ended(self) -> bool:
        return self in (SessionState.EXITED, SessionState.KILLED, SessionState.LOST)


@attrs.frozen
class SessionRecord:
    id: str
    title: str
    command: tuple[str, ...]
    cwd: str
    env_keys: tuple[str, ...]
    created_at: float
    state: SessionState
    origin: str
    tmux_name: str
    ended_at: float | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    #: the agent profile the session runs (None: not an agent session)
    agent: str | None = None
    #: the agent's state (see :class:`trio_bridge.agents.AgentState`)
    agent_state: str | None = None
    #: the agent's own conversation id and transcript file, once its hooks reported them
    native_id: str | None = None
    transcript_path: str | None = None
    #: a name the session is addressed by as by its id (unique among the records)
    name: str | None = None
    #: agent sessions: the final answers its agent gave so far (the turn of the last one; its
    #: text is kept in the session's directory, see :mod:`._answers`)
    agent_answers: int = 0


_FIELDS = (
    "id", "title", "command", "cwd", "env_keys", "created_at", "ended_at", "state",
    "exit_code", "exit_signal", "origin", "tmux_name", *_AGENT_COLUMNS, "name", "agent_answers",
)  # fmt: skip
_COLUMNS = ", ".join(_FIELDS)


def _row(record: SessionRecord) -> tuple[Any, ...]:
    return (
        record.id, record.title, json.dumps(list(record.command)), record.cwd,
        json.dumps(list(record.env_keys)), record.created_at, record.ended_at, record.state.value,
        record.exit_code, record.exit_signal, record.origin, record.tmux_name, record.agent,
        record.agent_state, record.native_id, record.transcript_path, record.name, record.agent_answers,
    )  # fmt: skip


def _record(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        id=row["id"], title=row["title"], command=tuple(json.loads(row["command"])), cwd=row["cwd"],
        env_keys=tuple(json.loads(row["env_keys"])), created_at=row["created_at"],
        state=SessionState(row["state"]), origin=row["origin"], tmux_name=row["tmux_name"],
        ended_at=row["ended_at"], exit_code=row["exit_code"], exit_signal=row["exit_signal"],
        agent=row["agent"], agent_state=row["agent_state"], native_id=row["native_id"],
        transcript_path=row["transcript_path"], name=row["name"],
        agent_answers=int(row["agent_answers"] or 0),
    )  # fmt: skip


class NameTakenError(sqlite3.IntegrityError):
    """Another session has this name (names are unique among the records, ended ones too)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"the name {name!r} is taken by another session (trio-bridge rm frees it)")


class SessionStore:
    """Async access to the session table; get one from :func:`open_session_store`.

    Reads are served from memory: the store is the database's only writer (one daemon per
    state directory, by its lock), so a write-through copy of the rows is always current, and
    listing sessions costs no thread hop nor query (the API's hottest path: with this and
    msgspec encoding, ``GET /v1/sessions`` with 50 sessions went from 36% to 87% of a bare
    quart-trio route's requests/s, see benchmarks/api.py).
    """

    def __init__(self, connection: sqlite3.Connection, records: Sequence[SessionRecord] = ()) -> None:
        self._db = connection
        self._lock = trio.Lock()
        self._records = {record.id: record for record in records}
        #: changes with every write: readers may cache what they derived from the records
        self.version = 0

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            # Not abandoned on cancel: a half-finished write must complete (WAL keeps it atomic).
            return await trio.to_thread.run_sync(fn, self._db)

    async def add(self, record: SessionRecord) -> None:
        """Insert a new record. Raises sqlite3.IntegrityError if the id, tmux name or name
        exists (:class:`NameTakenError`, one, for the name)."""
        if record.name is not None and any(r.name == record.name for r in self._records.values()):
            raise NameTakenError(record.name)

        def insert(db: sqlite3.Connection) -> None:
            with db:
                marks = ", ".join("?" * len(_FIELDS))
                db.execute(f"INSERT INTO sessions ({_COLUMNS}) VALUES ({marks})", _row(record))

        await self._call(insert)
        self._records[record.id] = record
        self.version += 1

    async def get(self, session_id: str) -> SessionRecord | None:
        await trio.lowlevel.checkpoint()
        return self._records.get(session_id)

    async def all(self, states: Sequence[SessionState] | None = None) -> list[SessionRecord]:
        """Records, oldest first, optionally only those in ``states``."""
        await trio.lowlevel.checkpoint()
        records = sorted(self._records.values(), key=lambda r: (r.created_at, r.id))
        if states is None:
            return records
        return [r for r in records if r.state in states]

    async def update(self, record: SessionRecord) -> None:
        """Replace the record with the same id. Raises KeyError if there is none.

        When the database cannot be written (``sqlite3.OperationalError``: e.g. a full disk) the
        record is replaced in memory all the same (what this daemon tells is what happened), and
        the error raised: the database says the old state until a later write succeeds.
        """

        def replace(db: sqlite3.Connection) -> None:
            with db:
                cursor = db.execute(
                    f"UPDATE sessions SET {', '.join(f'{name}=?' for name in _FIELDS[1:])} WHERE id=?",
                    (*_row(record)[1:], record.id),
                )
            if cursor.rowcount != 1:
                raise KeyError(record.id)

        try:
            await self._call(replace)
        except sqlite3.OperationalError:
            if record.id in self._records:
                self._records[record.id] = record
                self.version += 1
            raise
        self._records[record.id] = record
        self.version += 1

    async def remember(self, key: str, *, expires_at: float, now: float) -> bool:
        """Note that the mesh request ``key`` was handled; False if it was noted before (and
        has not expired). Forgets ids that expired before ``now``, and the oldest beyond
        :data:`MESH_SEEN_MAX`. Not cached in memory: the inbox's replay memory must survive a
        restart, and each id is asked about once.
        """

        def insert(db: sqlite3.Connection) -> bool:
            with db:
                db.execute("DELETE FROM mesh_seen WHERE expires_at < ?", (now,))
                cursor = db.execute(
                    "INSERT OR IGNORE INTO mesh_seen (id, expires_at) VALUES (?, ?)", (key, expires_at)
                )
                if cursor.rowcount and cursor.lastrowid is not None and cursor.lastrowid > MESH_SEEN_MAX:
                    db.execute("DELETE FROM mesh_seen WHERE rowid <= ?", (cursor.lastrowid - MESH_SEEN_MAX,))
            return cursor.rowcount == 1

        return await self._call(insert)

    async def delete(self, session_id: str) -> None:
        """Forget one record (a session that never started); a missing one is no error."""

        def delete(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

        try:
            await self._call(delete)
        finally:  # (as in update: memory says what happened even if the disk cannot)
            self._records.pop(session_id, None)
            self.version += 1

    async def prune(self, *, keep: int, older_than: float) -> list[str]:
        """Delete ended sessions beyond the newest ``keep`` or ended before ``older_than``.

        Returns the deleted ids (so their files can be removed too). Running sessions are
        never pruned.
        """
        ended = [s.value for s in SessionState if s.ended]

        def delete(db: sqlite3.Connection) -> list[str]:
            marks = ", ".join("?" * len(ended))
            rows = db.execute(
                f"SELECT id, ended_at FROM sessions WHERE state IN ({marks}) ORDER BY ended_at DESC, id",
                ended,
            ).fetchall()
            doomed = [
                row["id"]
                for index, row in enumerate(rows)
                if index >= keep or (row["ended_at"] is not None and row["ended_at"] < older_than)
            ]
            with db:
                db.executemany("DELETE FROM sessions WHERE id = ?", [(i,) for i in doomed])
            return doomed

        doomed = await self._call(delete)
        for session_id in doomed:
            self._records.pop(session_id, None)
        self.version += 1
        return doomed


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against a process crash
    db.execute("PRAGMA busy_timeout=5000")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        db.close()
        raise RuntimeError(
            f"{path}: database schema {version} is newer than this trio-bridge ({SCHEMA_VERSION})"
        )
    with db:
        db.executescript(_SCHEMA)
        columns = {row["name"] for row in db.execute("PRAGMA table_info(sessions)")}
        for column in (*_AGENT_COLUMNS, "name"):
            if column not in columns:
                db.execute(f"ALTER TABLE sessions ADD COLUMN {column} TEXT")
        if "agent_answers" not in columns:
            # (added within schema 4: older versions read and write the other columns alike)
            db.execute("ALTER TABLE sessions ADD COLUMN agent_answers INTEGER NOT NULL DEFAULT 0")
        db.execute(_NAME_INDEX)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return db


@asynccontextmanager
async def open_session_store(path: Path) -> AsyncIterator[SessionStore]:
    """Open (creating if needed) the session database at ``path`` for the block's duration.

    Owns one SQLite connection, used from worker threads; closed (shielded) on exit.
    """
    db = await trio.to_thread.run_sync(_connect, path)
    try:
        rows = await trio.to_thread.run_sync(
            lambda: db.execute(f"SELECT {_COLUMNS} FROM sessions").fetchall()
        )
        yield SessionStore(db, [_record(row) for row in rows])
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(db.close)
