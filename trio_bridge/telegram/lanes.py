"""Outgoing calls, one lane per chat: each chat's own pace and its own 429 pauses.

Telegram limits a bot per chat (about 20 messages a minute in a group, one a second in a
private chat) and overall (about 30 a second). A 429 names the seconds to wait
(``retry_after``); flood control turns into bans of hours for bots that ignore it. So each
chat has a lane: calls to that chat go one at a time, urgent ones (final answers, replies)
before the others (status edits), within the chat's budget (a token bucket: ``burst`` calls at
once, one more each ``interval``; a group's 3 + 1 per 3.5 s stays within 20 a minute), of which
status edits leave one call for what is urgent, so a reply goes at once even while screens
change. A 429 pauses that lane alone, for exactly ``retry_after``: other chats, the poller and
callback answers go on (one global limiter or an inline sleep would stall every chat: the
complaints of ccgram#171 and hermes-agent#86337). Failed calls (network) are retried, bounded.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from .api import BotApi, BotApiError, NetworkError, RetryAfterError

__all__ = ["ChatLane", "Lanes", "Priority"]

log = logging.getLogger(__name__)


class Priority:
    URGENT = 0  # final answers, ends of sessions, replies to users
    NORMAL = 1  # new status messages, keyboards
    LOW = 2  # status edits, topic names


class Lanes:
    """The lanes of every chat, sharing one global pace. A chat's budget: ``burst`` calls, and
    one more each ``group_interval`` (a group: its id is negative) or ``private_interval``."""

    def __init__(
        self,
        api: BotApi,
        *,
        group_interval: float = 3.5,
        private_interval: float = 1.0,
        burst: int = 3,
        global_interval: float = 1 / 25,
        attempts: int = 3,
    ) -> None:
        self.api = api
        self.group_interval = group_interval
        self.private_interval = private_interval
        self.burst = burst
        self.global_interval = global_interval
        self.attempts = attempts
        self._lanes: dict[int, ChatLane] = {}
        self._next_global = 0.0

    def lane(self, chat_id: int) -> ChatLane:
        lane = self._lanes.get(chat_id)
        if lane is None:
            # group and channel ids are negative
            interval = self.group_interval if chat_id < 0 else self.private_interval
            lane = self._lanes[chat_id] = ChatLane(self, chat_id, interval, self.burst)
        return lane

    async def call(
        self, chat_id: int, method: str, params: Mapping[str, Any], priority: int = Priority.NORMAL, **kw: Any
    ) -> Any:
        return await self.lane(chat_id).call(method, params, priority, **kw)

    async def _global_turn(self) -> None:
        now = trio.current_time()
        at = max(now, self._next_global)
        self._next_global = at + self.global_interval
        await trio.sleep_until(at)


class ChatLane:
    """Calls to one chat, one at a time, by priority then arrival."""

    def __init__(self, lanes: Lanes, chat_id: int, interval: float, burst: int) -> None:
        self._lanes = lanes
        self.chat_id = chat_id
        self.interval = interval
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = trio.current_time()
        #: no call to this chat before this (trio clock): a 429's retry_after, a failure's backoff
        self.paused_until = 0.0
        self._busy = False
        self._waiting: list[tuple[int, int, trio.Event]] = []
        self._order = itertools.count()

    async def _turn(self, priority: int) -> None:
        if not self._busy:
            self._busy = True
            return
        entry = (priority, next(self._order), trio.Event())
        heapq.heappush(self._waiting, entry)
        try:
            await entry[2].wait()
        except BaseException:
            if entry[2].is_set():
                self._release()  # handed the turn while cancelled: pass it on
            else:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            raise

    def _release(self) -> None:
        if self._waiting:
            heapq.heappop(self._waiting)[2].set()
        else:
            self._busy = False

    @asynccontextmanager
    async def turn(self, priority: int = Priority.NORMAL) -> AsyncIterator[None]:
        """This chat's turn: within, :meth:`send` calls go out, and no one else's. A status
        renders what it shows inside its turn, so what it sends is the latest, however long
        it waited (edits coalesce)."""
        while True:
            if priority >= Priority.LOW:
                # waits for its budget before its turn: holding the turn meanwhile would keep
                # an answer or a reply waiting behind a status edit
                await self._budget(2.0, take=False)
            await self._turn(priority)
            if priority < Priority.LOW or self._refilled() >= min(2.0, self.burst):
                break
            self._release()  # spent meanwhile by what is urgent: wait again
        try:
            yield
        finally:
            self._release()

    async def call(
        self, method: str, params: Mapping[str, Any], priority: int = Priority.NORMAL, **kw: Any
    ) -> Any:
        """:meth:`send` in a turn of its own."""
        async with self.turn(priority):
            return await self.send(method, params, **kw)

    async def send(self, method: str, params: Mapping[str, Any], **kw: Any) -> Any:
        """Make the call (within a :meth:`turn`) when this chat's pace allows; wait out 429s;
        retry network failures (``attempts`` in all). Raises what :meth:`BotApi.call` raises
        otherwise."""
        failures = 0
        while True:
            await self._budget(1.0)
            await self._lanes._global_turn()
            try:
                return await self._lanes.api.call(method, params, **kw)
            except RetryAfterError as exc:
                log.warning(
                    "chat %s: Telegram says too many requests (%s): pausing this chat %g s",
                    self.chat_id, method, exc.retry_after,
                )  # fmt: skip
                self.paused_until = trio.current_time() + exc.retry_after
                self._tokens = 0.0
            except (NetworkError, BotApiError) as exc:
                if isinstance(exc, BotApiError) and exc.code < 500:
                    raise
                failures += 1
                if failures >= self._lanes.attempts:
                    raise
                log.info("chat %s: %s failed (%s); retrying", self.chat_id, method, exc)
                self.paused_until = trio.current_time() + min(30.0, 2.0**failures)

    def _refilled(self) -> float:
        now = trio.current_time()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) / self.interval)
        self._stamp = now
        return self._tokens

    async def _budget(self, need: float, *, take: bool = True) -> None:
        """Wait for the pause to end and for ``need`` calls in the budget; take one."""
        need = min(float(self.burst), need)
        while True:
            tokens = self._refilled()
            now = trio.current_time()
            if now >= self.paused_until and tokens >= need:
                if take:
                    self._tokens -= 1.0
                return
            await trio.sleep(max(self.paused_until - now, (need - tokens) * self.interval, 0.001))
