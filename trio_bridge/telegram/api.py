"""The Bot API client: one method call is one HTTPS request to ``{api_url}/bot{token}/{method}``.

httpx's async client runs under Trio (python-telegram-bot and aiogram do not: they need
asyncio). Every call is bounded by the client's timeouts; a long poll's read timeout is its
``timeout`` plus a margin. Errors come back as :class:`BotApiError` (Telegram's own
``error_code`` and ``description``), with :class:`RetryAfterError` for a 429 (its
``retry_after``) and :class:`ConflictError` for a 409 (another poller on this token). The token
never appears in an exception nor a log line: httpx's own request log (which names the URL)
is silenced.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["BotApi", "BotApiError", "ConflictError", "NetworkError", "RetryAfterError"]

# httpx logs every request's URL at INFO, and the token is in the URL's path.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

#: seconds for one ordinary call (connect, send, read)
CALL_TIMEOUT = 20.0
#: added to a long poll's ``timeout`` for the read
POLL_MARGIN = 10.0


class BotApiError(Exception):
    """Telegram answered ``ok: false``."""

    def __init__(self, method: str, code: int, description: str) -> None:
        self.method = method
        self.code = code
        self.description = description
        super().__init__(f"{method}: {code} {description}")

    @property
    def not_modified(self) -> bool:
        """An edit that changed nothing (the message already says this: a success)."""
        return self.code == 400 and "message is not modified" in self.description

    @property
    def thread_gone(self) -> bool:
        """The forum topic was deleted (or never existed)."""
        text = self.description.lower()
        return self.code == 400 and ("thread not found" in text or "topic_deleted" in text)

    @property
    def message_gone(self) -> bool:
        """The message to edit was deleted."""
        return self.code == 400 and "message to edit not found" in self.description.lower()


class RetryAfterError(BotApiError):
    """429 Too Many Requests: nothing more to this chat for ``retry_after`` seconds."""

    def __init__(self, method: str, description: str, retry_after: float) -> None:
        super().__init__(method, 429, description)
        self.retry_after = retry_after


class ConflictError(BotApiError):
    """409: another process polls this bot (or a webhook is set)."""


class NetworkError(Exception):
    """The Bot API could not be reached, or answered something that is not its JSON."""


class BotApi:
    """Calls Bot API methods. Use as ``async with BotApi(url, token) as api``."""

    def __init__(
        self, api_url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._base = f"{api_url}/bot{token}/"
        self._token = token
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(CALL_TIMEOUT), transport=transport, follow_redirects=False
        )
        #: calls made, and 429s received (for tests and metrics)
        self.calls = 0
        self.retry_afters = 0

    async def __aenter__(self) -> BotApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>")

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        read_timeout: float | None = None,
    ) -> Any:
        """Call ``method``; return its ``result``.

        Raises:
            RetryAfterError, ConflictError, BotApiError: Telegram refused.
            NetworkError: no answer (connection, timeout) or not a Bot API answer.
        """
        timeout = httpx.Timeout(CALL_TIMEOUT, read=read_timeout or CALL_TIMEOUT)
        self.calls += 1
        try:
            if files:
                # multipart: every other field as a string (objects as JSON)
                data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (params or {}).items()}
                response = await self._client.post(
                    self._base + method, data=data, files=files, timeout=timeout
                )
            else:
                response = await self._client.post(
                    self._base + method, json=dict(params or {}), timeout=timeout
                )
            body = response.json()
        except httpx.HTTPError as exc:
            raise NetworkError(f"{method}: {exc.__class__.__name__}: {self._redact(str(exc))}") from None
        except ValueError:
            raise NetworkError(f"{method}: HTTP {response.status_code} without a JSON body") from None
        if not isinstance(body, dict):
            raise NetworkError(f"{method}: HTTP {response.status_code}: not a Bot API answer")
        if body.get("ok") is True:
            return body.get("result")
        code = body["error_code"] if isinstance(body.get("error_code"), int) else response.status_code
        description = self._redact(str(body.get("description") or ""))
        parameters = body["parameters"] if isinstance(body.get("parameters"), dict) else {}
        if code == 429:
            self.retry_afters += 1
            retry_after = parameters.get("retry_after")
            wait = float(retry_after) if isinstance(retry_after, int | float) and retry_after >= 0 else 5.0
            raise RetryAfterError(method, description, wait)
        if code == 409:
            raise ConflictError(method, code, description)
        raise BotApiError(method, code, description)
