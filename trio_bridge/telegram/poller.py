"""Updates long-polled with ``getUpdates``: no inbound port, and exactly one poller per token.

The offset (the next update wanted) is stored after each batch is handled: Telegram drops
what is below the offset the next call names, and a restarted daemon starts from the stored
one, so no update is handled twice. A 409 means another process polls this token (two
pollers each lose updates to the other): one clear log line, then a retry every
``conflict_wait`` seconds until it is gone, never a crash loop. Every call is bounded (the
long poll's own ``timeout`` plus a margin); failures back off, bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._backoff import Backoff
from .api import POLL_MARGIN, BotApi, BotApiError, ConflictError, NetworkError, RetryAfterError
from .store import TelegramStore

__all__ = ["Poller"]

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class Poller:
    """See the module docstring. ``run`` never returns."""

    def __init__(
        self,
        api: BotApi,
        store: TelegramStore,
        handle: Handler,
        *,
        poll_timeout: int = 25,
        conflict_wait: float = 10.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.api = api
        self.store = store
        self.handle = handle
        self.poll_timeout = poll_timeout
        self.conflict_wait = conflict_wait
        self.max_backoff = max_backoff
        #: 409s seen (another poller)
        self.conflicts = 0
        self.updates = 0

    async def run(self) -> None:
        """Poll and hand each update to ``handle``, in order, until cancelled."""
        offset = await self.store.offset()
        backoff = Backoff(1.0, self.max_backoff)
        trouble: str | None = None  # what was last logged as wrong (logged again only if it changes)
        while True:
            try:
                updates = await self.api.call(
                    "getUpdates",
                    {"offset": offset, "timeout": self.poll_timeout,
                     "allowed_updates": ["message", "callback_query"]},
                    read_timeout=self.poll_timeout + POLL_MARGIN,
                )  # fmt: skip
            except ConflictError as exc:
                self.conflicts += 1
                if trouble != "conflict":
                    log.warning(
                        "another process is polling this bot's updates (409: %s); only one may: "
                        "retrying every %g s until it stops", exc.description, self.conflict_wait,
                    )  # fmt: skip
                    trouble = "conflict"
                await trio.sleep(self.conflict_wait)
                continue
            except RetryAfterError as exc:
                await trio.sleep(exc.retry_after)
                continue
            except (NetworkError, BotApiError) as exc:
                if trouble != str(exc):
                    hint = " (is telegram_token right?)" if getattr(exc, "code", 0) in (401, 404) else ""
                    log.warning("getUpdates failed: %s%s; retrying (backing off to %g s)", exc, hint,
                                self.max_backoff)  # fmt: skip
                    trouble = str(exc)
                await backoff.sleep()
                continue
            if trouble is not None:
                log.info("polling Telegram again")
                trouble = None
            backoff.reset()
            if not isinstance(updates, list):
                continue
            handled = offset
            for update in updates:
                if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
                    continue
                if update["update_id"] < offset:
                    continue  # already handled (a server that sent it again)
                self.updates += 1
                await self.handle(update)
                handled = max(handled, update["update_id"] + 1)
            if handled != offset:
                offset = handled
                # shielded (and bounded): cancelled between handling and storing, a restart
                # would handle the batch again
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await self.store.set_offset(offset)
