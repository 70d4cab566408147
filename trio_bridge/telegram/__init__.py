"""The Telegram front end: every session a forum topic, agents reachable from a phone.

Loaded only when ``telegram_token`` is set; then it runs as a supervised service of the
daemon (see :func:`serve_telegram` and docs/architecture.md).
"""

from .api import BotApi, BotApiError, ConflictError, NetworkError, RetryAfterError
from .bot import TelegramBot, serve_telegram

__all__ = [
    "BotApi",
    "BotApiError",
    "ConflictError",
    "NetworkError",
    "RetryAfterError",
    "TelegramBot",
    "serve_telegram",
]
