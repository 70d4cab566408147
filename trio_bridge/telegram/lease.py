"""With a Redis mesh: one computer at a time runs a given bot (a lease in Redis).

Two processes polling one token each lose updates to the other (Telegram answers the loser
409). So among the mesh's computers the bot runs where the lease is held: ``SET key me NX PX
ttl``, renewed every ``ttl / 3`` by a compare-and-expire script, released (compare-and-delete) on
the way out. The others wait and try again every ``ttl / 3``: when the holder stops or dies,
one of them takes over within the lease's ttl. Losing the lease (Redis unreachable, or another
holder) stops the bot here at once.

The key names a hash of the token, never the token. Uses only the mesh's public
``redis.call`` (this module is imported only with a mesh: it loads Redis).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio

from ..mesh import RedisUnavailableError, keys

__all__ = ["LeaseLostError", "PollerLease"]

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Redis(Protocol):
    async def call(self, *args: Any) -> Any: ...


class LeaseLostError(Exception):
    """The lease went to another holder, or could not be renewed in time."""


class PollerLease:
    """See the module docstring."""

    def __init__(self, redis: _Redis, token: str, holder: str, ttl: float) -> None:
        self.redis = redis
        self.key = keys.telegram_lease(token)
        self.holder = holder
        self.ttl = ttl

    async def acquire(self) -> None:
        """Wait until the lease is ours (Redis failures: retried, logged once)."""
        waiting_for: str | None = None
        while True:
            try:
                if await self.redis.call("SET", self.key, self.holder, "NX", "PX", int(self.ttl * 1000)):
                    log.info("this computer runs the Telegram bot now (lease %s)", self.key)
                    return
                other = await self.redis.call("GET", self.key)
            except RedisUnavailableError as exc:
                other = f"(Redis unreachable: {exc})"
            if other is not None and other != waiting_for:
                log.info("the Telegram bot runs elsewhere (%s); waiting for its lease", other)
                waiting_for = other
            await trio.sleep(self.ttl / 3)

    async def keep(self) -> None:
        """Renew the lease every ``ttl / 3`` until cancelled.

        Raises:
            LeaseLostError: it is someone else's, or was not renewed within its ttl.
        """
        renewed_at = trio.current_time()
        while True:
            await trio.sleep(self.ttl / 3)
            try:
                with trio.move_on_after(self.ttl / 3):
                    if await self.redis.call("EVAL", _RENEW, 1, self.key, self.holder, int(self.ttl * 1000)):
                        renewed_at = trio.current_time()
                        continue
                    raise LeaseLostError(f"the Telegram bot's lease {self.key} went to another holder")
            except RedisUnavailableError as exc:
                log.warning("could not renew the Telegram bot's lease: %s", exc)
            if trio.current_time() - renewed_at >= self.ttl * 2 / 3:
                raise LeaseLostError(f"the Telegram bot's lease {self.key} could not be renewed in time")

    async def release(self) -> None:
        """Give the lease up if it is still ours (shielded, bounded: runs on the way out)."""
        with trio.CancelScope(shield=True), trio.move_on_after(2.0):
            try:
                await self.redis.call("EVAL", _RELEASE, 1, self.key, self.holder)
            except RedisUnavailableError as exc:
                log.info("could not release the Telegram bot's lease (it expires by itself): %s", exc)
