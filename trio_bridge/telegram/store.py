"""What the Telegram front end keeps across restarts, in ``state_dir/telegram.db`` (SQLite).

* the ``getUpdates`` offset: stored after a batch of updates is handled, so no update is
  handled twice after a restart;
* each session's topic and status message, and what they say (a topic is created once:
  createForumTopic is not idempotent, and a restart must not make a second one; a restart sends
  no status or topic name that is already shown: with 20 sessions in a group, 20 edits are a minute of its
  budget);
* with a mesh, per session of another computer: the last turn whose final answer went into the
  outbox (queued in the same transaction as the answer, so an event seen twice, a replay or a
  restart queues no answer twice; see :meth:`TelegramStore.enqueue_answer`);
* the outbox: final answers and ends of sessions waiting to be delivered. An entry is
  removed once Telegram accepted it (a long one is cut to what is left after each of its
  messages), so it survives a restart and goes once (a crash between Telegram's answer and the
  write would send that message again: at least once, in that instant).

One connection, used from worker threads, serialised by a lock; topics are also kept in
memory (this store is the database's only writer).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import attrs
import trio

__all__ = ["OutboxEntry", "TelegramStore", "Topic", "open_telegram_store"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS topics (
    session_id        TEXT PRIMARY KEY,
    chat_id           INTEGER NOT NULL,
    thread_id         INTEGER,              -- NULL: gone for good (deleted twice)
    status_message_id INTEGER,
    recreated         INTEGER NOT NULL DEFAULT 0,
    status_text       TEXT,                 -- what the status message says (not re-sent after a restart)
    name              TEXT                  -- the topic's name as last given (the same)
);
CREATE UNIQUE INDEX IF NOT EXISTS topics_thread ON topics(chat_id, thread_id);
CREATE TABLE IF NOT EXISTS remote_answers (
    session_id TEXT PRIMARY KEY,            -- a session of another computer
    turn       INTEGER NOT NULL             -- its agent's last answer queued (or passed over)
);
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id    INTEGER NOT NULL,
    session_id TEXT,                        -- NULL: not in a session's topic
    text       TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


@attrs.frozen
class Topic:
    session_id: str
    chat_id: int
    #: None once the topic was deleted a second time (not made again)
    thread_id: int | None
    status_message_id: int | None = None
    recreated: bool = False
    #: the text of the status message as last sent (None: unknown)
    status_text: str | None = None
    #: the topic's name as last given (None: unknown)
    name: str | None = None


@attrs.frozen
class OutboxEntry:
    id: int
    chat_id: int
    session_id: str | None
    text: str


class TelegramStore:
    """See the module docstring; get one from :func:`open_telegram_store`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = trio.Lock()
        self._topics: dict[str, Topic] = {}
        self._answered: dict[str, int] = {}

    async def _run(self, fn: Callable[[], T]) -> T:
        async with self._lock:
            return await trio.to_thread.run_sync(fn)

    async def _load(self) -> None:
        rows = await self._run(lambda: self._db.execute("SELECT * FROM topics").fetchall())
        for row in rows:
            self._topics[row["session_id"]] = Topic(
                row["session_id"], row["chat_id"], row["thread_id"], row["status_message_id"],
                bool(row["recreated"]), row["status_text"], row["name"],
            )  # fmt: skip

        rows = await self._run(lambda: self._db.execute("SELECT * FROM remote_answers").fetchall())
        self._answered = {row["session_id"]: int(row["turn"]) for row in rows}

    async def offset(self) -> int:
        row = await self._run(lambda: self._db.execute("SELECT value FROM kv WHERE key='offset'").fetchone())
        return int(row["value"]) if row else 0

    async def set_offset(self, offset: int) -> None:
        def write() -> None:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO kv VALUES ('offset', ?)", (str(offset),))

        await self._run(write)

    def topic(self, session_id: str) -> Topic | None:
        return self._topics.get(session_id)

    def session_of(self, chat_id: int, thread_id: int) -> str | None:
        """The session whose topic this is."""
        for topic in self._topics.values():
            if topic.chat_id == chat_id and topic.thread_id == thread_id:
                return topic.session_id
        return None

    async def put_topic(self, topic: Topic) -> None:
        def write() -> None:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO topics (session_id, chat_id, thread_id, status_message_id,"
                    " recreated, status_text, name) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (topic.session_id, topic.chat_id, topic.thread_id, topic.status_message_id,
                     int(topic.recreated), topic.status_text, topic.name),
                )  # fmt: skip

        await self._run(write)
        self._topics[topic.session_id] = topic

    async def forget_topics(self, keep: set[str]) -> None:
        """Drop the topics (and answer marks) of sessions no longer known (retention removed them)."""
        gone = [s for s in self._topics.keys() | self._answered.keys() if s not in keep]
        if not gone:
            return

        def write() -> None:
            with self._db:
                self._db.executemany("DELETE FROM topics WHERE session_id = ?", [(s,) for s in gone])
                self._db.executemany("DELETE FROM remote_answers WHERE session_id = ?", [(s,) for s in gone])

        await self._run(write)
        for session_id in gone:
            self._topics.pop(session_id, None)
            self._answered.pop(session_id, None)

    def answered(self, session_id: str) -> int | None:
        """The last turn of another computer's agent whose answer was queued or passed over
        (None: none noted yet)."""
        return self._answered.get(session_id)

    async def enqueue_answer(self, chat_id: int, session_id: str, turn: int, text: str | None) -> bool:
        """Queue the final answer of ``turn`` (None: pass the turn over, queueing nothing) and
        note the turn, in one transaction; False, and nothing done, when that turn or a later
        one was noted already."""

        def write() -> bool:
            with self._db:
                row = self._db.execute(
                    "SELECT turn FROM remote_answers WHERE session_id = ?", (session_id,)
                ).fetchone()
                if row is not None and int(row["turn"]) >= turn:
                    return False
                if text is not None:
                    self._db.execute(
                        "INSERT INTO outbox (chat_id, session_id, text, created_at) VALUES (?, ?, ?, ?)",
                        (chat_id, session_id, text, time.time()),
                    )
                self._db.execute("INSERT OR REPLACE INTO remote_answers VALUES (?, ?)", (session_id, turn))
                return True

        done = await self._run(write)
        if done:
            self._answered[session_id] = turn
        return done

    async def enqueue(self, chat_id: int, session_id: str | None, text: str) -> int:
        def write() -> int:
            with self._db:
                cursor = self._db.execute(
                    "INSERT INTO outbox (chat_id, session_id, text, created_at) VALUES (?, ?, ?, ?)",
                    (chat_id, session_id, text, time.time()),
                )
                return int(cursor.lastrowid or 0)

        return await self._run(write)

    async def pending(self, chat_id: int) -> list[OutboxEntry]:
        """The chat's undelivered entries, oldest first."""
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT id, chat_id, session_id, text FROM outbox WHERE chat_id = ? ORDER BY id", (chat_id,)
            ).fetchall()
        )
        return [OutboxEntry(r["id"], r["chat_id"], r["session_id"], r["text"]) for r in rows]

    async def chats_pending(self) -> list[int]:
        rows = await self._run(lambda: self._db.execute("SELECT DISTINCT chat_id FROM outbox").fetchall())
        return [int(r["chat_id"]) for r in rows]

    async def rest(self, entry_id: int, text: str) -> None:
        """Part of the entry went: only ``text`` is left to deliver."""

        def write() -> None:
            with self._db:
                self._db.execute("UPDATE outbox SET text = ? WHERE id = ?", (text, entry_id))

        await self._run(write)

    async def delivered(self, entry_id: int) -> None:
        def write() -> None:
            with self._db:
                self._db.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))

        await self._run(write)


@asynccontextmanager
async def open_telegram_store(path: Path) -> AsyncIterator[TelegramStore]:
    """Open (creating) the database at ``path``; closed on exit."""

    def connect() -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        # (a database from before these columns: added, their values unknown)
        columns = {row[1] for row in db.execute("PRAGMA table_info(topics)")}
        for column in ("status_text", "name"):
            if column not in columns:
                db.execute(f"ALTER TABLE topics ADD COLUMN {column} TEXT")
        return db

    db = await trio.to_thread.run_sync(connect)
    try:
        store = TelegramStore(db)
        await store._load()
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(db.close)
