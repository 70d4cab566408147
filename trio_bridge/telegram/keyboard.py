"""Inline keyboards for an agent waiting for input: its screen's numbered options as buttons.

A button's callback data is ``k:<session id>:<key>`` (at most 26 bytes: Telegram allows 64);
what comes back in a callback query is checked against that form and a short list of keys
before anything is typed.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = ["Choice", "choices_on_screen", "keyboard", "parse_callback"]

#: "1. Yes", "\u276f 2. No, and tell Claude...", "\u2502 3) Always" (Claude's, Gemini's dialogs): a
#: digit, after box lines, pointers and bullets
_OPTION = re.compile("^[\\s\u2502|>\u276f\u203a\u25cf\u25cb*]*([1-9])[.)]\\s+(\\S.{0,60})")
_CALLBACK = re.compile(r"^k:([0-9a-f]{12}):(Enter|Escape|[1-9])$")
#: looked for in the screen's last lines only (older options are from past questions)
_TAIL = 20
_LABEL = 40


@attrs.frozen
class Choice:
    #: what is typed: a digit, or a key name
    key: str
    label: str


def choices_on_screen(screen: str) -> list[Choice]:
    """The numbered options at the bottom of the screen; if none, Enter and Escape."""
    found: dict[str, Choice] = {}
    for line in screen.rstrip().splitlines()[-_TAIL:]:
        match = _OPTION.match(line)
        if match:
            label = " ".join(match.group(2).split()).rstrip("│| ")
            if len(label) > _LABEL:
                label = label[: _LABEL - 1] + "…"
            found[match.group(1)] = Choice(match.group(1), f"{match.group(1)}. {label}")
    if not found:
        return [Choice("Enter", "⏎ Enter"), Choice("Escape", "Esc")]
    return [found[k] for k in sorted(found)]


def keyboard(session_id: str, choices: list[Choice]) -> dict[str, Any]:
    """The ``reply_markup`` of a question: one button per row."""
    return {
        "inline_keyboard": [[{"text": c.label, "callback_data": f"k:{session_id}:{c.key}"}] for c in choices]
    }


def parse_callback(data: object) -> tuple[str, str] | None:
    """``(session id, key)`` from a button's callback data; None for anything else."""
    if not isinstance(data, str):
        return None
    match = _CALLBACK.match(data)
    return (match.group(1), match.group(2)) if match else None
