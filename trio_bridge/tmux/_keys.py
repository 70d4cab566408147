"""The key vocabulary trio-bridge sends to sessions: what ``tmux send-keys`` accepts.

A key is one character (``q``, ``;``, ``é``: any character but a control character), or one of
tmux's key names (:data:`KEY_NAMES`: ``Enter``, ``PgUp``, ``NPage``, ``F12``, ``KP5``, ...),
with up to three of the modifiers ``C-`` (Ctrl), ``M-`` (Meta/Alt) and ``S-`` (Shift) before it
(``C-c``, ``M-x``, ``C-Left``, ``S-Up``, ``C-M-a``). Names are spelled as tmux's manual spells
them (case matters: ``c-c`` is refused). Anything else is rejected before tmux is involved.

Keys reach tmux as arguments of one ``send-keys`` process (no shell, no tmux command line), so
the only tmux syntax left is the command separator: an argument ending in ``;`` ends the command
(``a ; kill-server``). :func:`check_keys` writes such a key as tmux's escaped ``\\;``, so a key
can never smuggle in a tmux option, target or command.
"""

from __future__ import annotations

import re

_NAMED = (
    "Enter", "Escape", "Tab", "BTab", "Space", "BSpace",
    "Up", "Down", "Left", "Right", "Home", "End",
    "PageUp", "PgUp", "PPage", "PageDown", "PgDn", "NPage",
    "Insert", "IC", "Delete", "DC",
    "KP/", "KP*", "KP-", "KP+", "KP.", "KPEnter",
    *(f"KP{n}" for n in range(10)),
    *(f"F{n}" for n in range(1, 13)),
)  # fmt: skip

#: tmux's key names (as its manual spells them); a modifier or a single character makes the rest
KEY_NAMES: frozenset[str] = frozenset(_NAMED)

#: control characters (C0, C1) and lone surrogates (not a character tmux can be given)
_CONTROL = r"\x00-\x1f\x7f-\x9f\ud800-\udfff"
#: the whole vocabulary as a regular expression (also the OpenAPI document's ``pattern``)
KEY_PATTERN = (
    "^(?:[CMS]-){0,3}(?:"
    + "|".join(re.escape(name) for name in sorted(_NAMED, key=len, reverse=True))
    + f"|[^{_CONTROL}])$"
)
_KEY = re.compile(KEY_PATTERN)


class InvalidKeyError(ValueError):
    """A key outside the vocabulary (see the module's description)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"unknown key {key!r}: expected one character (q, ;, ...) or a tmux key name "
            "(Enter, Escape, Tab, BTab, Space, BSpace, Up, Down, Left, Right, Home, End, "
            "PgUp/PageUp/PPage, PgDn/PageDown/NPage, Insert/IC, Delete/DC, F1-F12, KP0-KP9, "
            "KP/ KP* KP- KP+ KP. KPEnter), each with up to three modifiers C- (Ctrl), "
            "M- (Alt), S- (Shift): C-c, M-x, C-Left, S-Up"
        )


def is_key(key: str) -> bool:
    """Whether ``key`` is in the vocabulary."""
    return _KEY.fullmatch(key) is not None


def check_keys(keys: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return ``keys`` as ``tmux send-keys`` arguments (a final ``;`` escaped as ``\\;``), or
    raise :class:`InvalidKeyError` for the first key outside the vocabulary."""
    for key in keys:
        if not is_key(key):
            raise InvalidKeyError(key)
    return tuple(key[:-1] + "\\;" if key.endswith(";") else key for key in keys)
