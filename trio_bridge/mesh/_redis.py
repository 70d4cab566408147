"""All of trio-bridge's Redis access: redis-py's asyncio client, driven from Trio through trio-asyncio.

The only module that imports ``redis``, ``asyncio`` or ``trio_asyncio``; it is imported only when
the mesh is enabled (single-computer use never loads it, which also keeps it working where
trio-asyncio does not import, e.g. Python 3.14). Callers see plain Trio functions.

Traps it handles (measured, see ``../shared/reference/trio-stack.md`` section 2):
- every call must cross the bridge (``aio_as_trio``): a bare await fails;
- redis-py 8's defaults (``socket_timeout=5``, 10 retries) break blocking reads longer than
  5 s: commands here get a short socket timeout and few retries; a blocking read gets its own
  connection without a read timeout (:meth:`Redis.blocking`);
- no async generator crosses the bridge: :func:`scan_keys` walks the cursor with plain calls.

``KEYS`` is never used: it blocks Redis for the whole keyspace. Keys are walked with
:func:`scan_keys` only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_asyncio  # type: ignore[import-untyped]
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._backoff import Backoff
from .errors import RedisRefusedError, RedisUnavailableError

__all__ = ["Redis", "RedisUnavailableError", "open_redis", "scan_keys"]

log = logging.getLogger(__name__)

#: seconds one ordinary command may take (connect, send, reply)
COMMAND_TIMEOUT = 5.0


def _safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    # redis-py also takes ?password=... (and other credentials) in the query
    return scheme + sep + rest.split("?", 1)[0]


class Redis:
    """One Redis client (a pool of connections owned by redis-py), for Trio code.

    Methods return decoded replies (``str``). Connection problems raise
    :class:`RedisUnavailableError`; other errors Redis answers with (a wrong type, a lost
    consumer group) raise :class:`RedisRefusedError` (a subclass for the codes the mesh acts on,
    see :mod:`.errors`): redis-py's exceptions never leave this module.
    """

    def __init__(self, client: AsyncRedis, url: str, blocking: AsyncRedis) -> None:
        self._client = client
        self._blocking = blocking
        self.url = _safe_url(url)

    async def call(self, *args: Any) -> Any:
        """One command, e.g. ``await redis.call("SET", key, value, "PX", 1000)``."""
        return await self._call(self._client, args)

    async def call_until_done(self, *args: Any) -> Any:
        """One command, tried again (with a backoff, until the caller's scope ends) while Redis
        is unavailable: for writes that must not be lost to a Redis restart.

        Raises:
            RedisRefusedError: Redis refused it (that is not retried).
        """
        backoff = Backoff(0.1, 2.0)
        while True:
            try:
                return await self.call(*args)
            except RedisUnavailableError:
                await backoff.sleep()

    async def blocking_call(self, *args: Any) -> Any:
        """A blocking command (``XREADGROUP ... BLOCK``, ``BLPOP``), on connections without a
        read timeout. Cancelling it drops its connection (the owed reply cannot be matched)."""
        return await self._call(self._blocking, args)

    async def _call(self, client: AsyncRedis, args: tuple[Any, ...]) -> Any:
        try:
            return await trio_asyncio.aio_as_trio(client.execute_command)(*args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnavailableError(f"Redis at {self.url}: {exc}") from exc
        except RedisError as exc:
            raise _refused(str(args[0]), exc) from exc

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Several commands in one round trip (no transaction); their replies, in order."""
        if not commands:
            return []

        async def run() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return list(await pipe.execute())

        try:
            replies: list[Any] = await trio_asyncio.aio_as_trio(run)()
            return replies
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnavailableError(f"Redis at {self.url}: {exc}") from exc
        except RedisError as exc:
            raise _refused("a pipeline", exc) from exc


def _refused(command: str, exc: RedisError) -> RedisRefusedError:
    # redis-py puts "Command # 2 (XLEN k) of pipeline caused error: " before a pipeline's reply
    message = str(exc)
    return RedisRefusedError.of(command, message, message.rpartition("caused error: ")[2])


async def scan_keys(redis: Redis, pattern: str, *, count: int = 1000) -> AsyncGenerator[str, None]:
    """Every key matching ``pattern``, once, by walking the ``SCAN`` cursor until it returns to 0.

    SCAN may return a key more than once (when the table is resized during the walk) and may
    return empty batches (most of them, when few keys match): duplicates are dropped, empty
    batches walked through. Each SCAN call is O(count): Redis is never blocked the way
    ``KEYS`` blocks it.
    """
    seen: set[str] = set()
    cursor = "0"
    while True:
        cursor, batch = await redis.call("SCAN", cursor, "MATCH", pattern, "COUNT", count)
        for key in batch:
            if key not in seen:
                seen.add(key)
                yield key
        if str(cursor) == "0":
            return


#: seconds the clients' close may take (shielded: the daemon's stop waits for it)
_CLOSE_WITHIN = 5.0


async def _close_all(clients: Sequence[AsyncRedis]) -> None:
    """Close the clients at once (one slow close must not leave the other to the garbage
    collector, a ResourceWarning), then let asyncio run the socket closes that commands
    cancelled just before (a blocking read at shutdown) left to ``call_soon``."""
    await asyncio.gather(*(client.aclose() for client in clients))
    for _ in range(2):
        await asyncio.sleep(0)


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[Redis]:
    """A Redis client for ``url`` (``redis://``, ``rediss://`` for TLS; a password in the URL).

    Owns a trio-asyncio loop and two redis-py connection pools in it: one for ordinary
    commands (short timeouts), one for blocking commands (:meth:`Redis.blocking_call`); all are
    closed on exit (shielded, bounded). Checks the connection first.

    Raises:
        RedisUnavailableError: Redis cannot be reached or refuses the credentials.
    """
    async with trio_asyncio.open_loop():
        clients = [
            AsyncRedis.from_url(
                url,
                decode_responses=True,
                # Blocking reads get no read timeout: a long block is not a dead connection
                # (callers bound their waits with cancel scopes instead).
                socket_timeout=None if blocking else COMMAND_TIMEOUT,
                socket_connect_timeout=COMMAND_TIMEOUT,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 2),
                health_check_interval=30,
            )
            for blocking in (False, True)
        ]
        redis = Redis(clients[0], url, clients[1])
        try:
            await redis.call("PING")
            yield redis
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_WITHIN):
                await trio_asyncio.aio_as_trio(_close_all)(clients)
