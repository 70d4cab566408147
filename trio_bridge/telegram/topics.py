"""A forum topic per session: created once, recreated once if the user deletes it.

createForumTopic is not idempotent: two calls make two topics. So a session's topic is made
under that session's lock and recorded at once (in the store, which survives restarts); a
topic that Telegram says is gone ("message thread not found") is made again once, and a
second deletion is taken as the user's wish: that session posts nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from ..sessions.store import SessionRecord
from ._text import topic_name
from .api import BotApiError
from .lanes import Lanes, Priority
from .store import TelegramStore, Topic

__all__ = ["TopicGoneError", "Topics"]

log = logging.getLogger(__name__)


class TopicGoneError(Exception):
    """The session's topic was deleted twice: nothing more is posted for it."""


class Topics:
    """Topics of one forum chat; see the module docstring."""

    def __init__(
        self,
        store: TelegramStore,
        lanes: Lanes,
        chat_id: int,
        computer: str,
        owner: Callable[[str], str | None] | None = None,
    ) -> None:
        self.store = store
        self.lanes = lanes
        self.chat_id = chat_id
        self.computer = computer
        #: the computer of another computer's session (with a mesh), else None: this one's
        self.owner = owner or (lambda _: None)
        self._locks: dict[str, trio.Lock] = {}
        self._names: dict[str, str] = {}  # the name each topic was last given

    def _lock(self, session_id: str) -> trio.Lock:
        return self._locks.setdefault(session_id, trio.Lock())

    async def thread(self, record: SessionRecord) -> int:
        """The session's topic (made now if it has none).

        Raises:
            TopicGoneError; BotApiError, NetworkError: it could not be made.
        """
        async with self._lock(record.id):
            topic = self.store.topic(record.id)
            if topic is None:
                topic = await self._create(record, recreated=False)
            if topic.thread_id is None:
                raise TopicGoneError(record.id)
            return topic.thread_id

    async def _create(self, record: SessionRecord, *, recreated: bool) -> Topic:
        name = topic_name(record, self.owner(record.id) or self.computer)
        result = await self.lanes.call(
            self.chat_id, "createForumTopic", {"chat_id": self.chat_id, "name": name}, Priority.URGENT
        )
        thread_id = int(result["message_thread_id"])
        topic = Topic(record.id, self.chat_id, thread_id, None, recreated, name=name)
        await self.store.put_topic(topic)
        self._names[record.id] = name
        log.info("session %s: topic %d %s", record.id, thread_id, "made again" if recreated else "made")
        return topic

    async def _gone(self, record: SessionRecord, thread_id: int) -> int:
        """The topic ``thread_id`` was deleted: make it again, once. Returns the new one."""
        async with self._lock(record.id):
            topic = self.store.topic(record.id)
            if topic is not None and topic.thread_id not in (thread_id, None):
                return topic.thread_id  # made again meanwhile
            if topic is None or topic.recreated or topic.thread_id is None:
                if topic is not None and topic.thread_id is not None:
                    log.info("session %s: its topic was deleted again; posting no more for it", record.id)
                    await self.store.put_topic(
                        attrs.evolve(topic, thread_id=None, status_message_id=None, status_text=None)
                    )
                raise TopicGoneError(record.id)
            return (await self._create(record, recreated=True)).thread_id  # type: ignore[return-value]

    async def send(
        self, record: SessionRecord, method: str, params: Mapping[str, Any], priority: int, **kw: Any
    ) -> Any:
        """Call ``method`` in the session's topic (``message_thread_id`` added); a deleted
        topic is made again (once) and the call repeated there.

        Raises:
            TopicGoneError; BotApiError, NetworkError.
        """
        thread_id = await self.thread(record)
        for _ in range(2):
            try:
                return await self.lanes.call(
                    self.chat_id, method,
                    {**params, "chat_id": self.chat_id, "message_thread_id": thread_id}, priority, **kw,
                )  # fmt: skip
            except BotApiError as exc:
                if not exc.thread_gone:
                    raise
                thread_id = await self._gone(record, thread_id)
        raise TopicGoneError(record.id)

    async def rename(self, record: SessionRecord) -> None:
        """Give the topic the session's current name (its state's emoji), if that changed."""
        topic = self.store.topic(record.id)
        name = topic_name(record, self.owner(record.id) or self.computer)
        if topic is None or topic.thread_id is None or self._names.get(record.id, topic.name) == name:
            return
        try:
            await self.lanes.call(
                self.chat_id, "editForumTopic",
                {"chat_id": self.chat_id, "message_thread_id": topic.thread_id, "name": name}, Priority.LOW,
            )  # fmt: skip
        except BotApiError as exc:
            if "not_modified" not in exc.description.lower() and not exc.thread_gone:
                raise
        self._names[record.id] = name
        if (topic := self.store.topic(record.id)) is not None and topic.name != name:
            await self.store.put_topic(attrs.evolve(topic, name=name))  # (a restart renames not again)
