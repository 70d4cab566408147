"""What an agent's hook may report: checked where it comes in, before anything keeps it.

A hook request is input like any other: anyone who can reach the owner's socket can send one,
and what the tracker keeps is stored, read back after a restart, used as a path and sent to API
clients. So the fields the tracker reads have types, lengths and shapes (a transcript is an
absolute path without NUL or control characters; an id is short), and no text anywhere in the
payload may hold a lone surrogate (it cannot be encoded, stored or sent on).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_DEPTH", "InvalidHookPayload", "check_hook", "safe_path"]

#: how deeply a payload's objects and arrays may nest
MAX_DEPTH = 32
_EVENT = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,99}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: field -> longest text it may hold
_SHORT_TEXT = {"session_id": 200, "thread-id": 200, "thread_id": 200, "type": 100, "notification_type": 100,
               "hook_event_name": 100}  # fmt: skip
_PATHS = ("transcript_path", "cwd")


class InvalidHookPayload(ValueError):
    """A hook request the daemon refuses (422); the message names the field."""


def safe_path(value: object) -> str | None:
    """``value`` if it can be a file's path for us (absolute, at most 4096 characters, no
    control characters, encodable), else None: also for what a store kept from older versions."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 4096:
        return None
    if _CONTROL.search(value) or not _encodable(value):
        return None
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidHookPayload(f"{where} nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if not _encodable(value):
            raise InvalidHookPayload(f"{where} holds a lone surrogate (not encodable text)")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not _encodable(str(key)):
                raise InvalidHookPayload(f"a key of {where} holds a lone surrogate")
            _walk(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{where}[{index}]", depth + 1)


def check_hook(event: str, payload: Mapping[str, Any], *, max_prompt: int) -> None:
    """Refuse a hook whose event or payload the tracker could not keep safely.

    Raises:
        InvalidHookPayload: naming the field and what is wrong with it.
    """
    if not _EVENT.fullmatch(event):
        raise InvalidHookPayload(f"event {event[:100]!r} is not a hook event name")
    _walk(payload, "payload", 1)
    for field, limit in _SHORT_TEXT.items():
        value = payload.get(field)
        if value is not None and (not isinstance(value, str) or len(value) > limit or _CONTROL.search(value)):
            raise InvalidHookPayload(f"payload.{field} must be text of at most {limit} characters")
    for field in _PATHS:
        value = payload.get(field)
        if value is not None and safe_path(value) is None:
            raise InvalidHookPayload(f"payload.{field} must be an absolute path without control characters")
    prompt = payload.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or "\0" in prompt or len(prompt) > max_prompt):
        raise InvalidHookPayload(f"payload.prompt must be text of at most {max_prompt} characters, no NUL")
    messages = payload.get("input-messages")
    texts = isinstance(messages, list) and all(isinstance(m, str) for m in messages)
    if messages is not None and not texts:
        raise InvalidHookPayload("payload.input-messages must be a list of texts")
