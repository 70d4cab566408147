"""The fixed vocabulary of named keys trio-bridge sends to sessions.

Only these names reach ``tmux send-keys`` (as key names, never as literal
text); anything else is rejected before tmux is involved, so a key name can
never smuggle in a tmux option, target or command.
"""

from __future__ import annotations

_NAMED = {
    "Enter",
    "Escape",
    "Tab",
    "BTab",
    "Space",
    "BSpace",
    "Up",
    "Down",
    "Left",
    "Right",
    "Home",
    "End",
    "PageUp",
    "PageDown",
    "Insert",
    "Delete",
}
_FUNCTION = {f"F{n}" for n in range(1, 13)}
_CTRL = {f"C-{c}" for c in "abcdefghijklmnopqrstuvwxyz"} | {"C-\\", "C-]", "C-Space"}

#: every key name :meth:`TmuxServer.send_keys` accepts
KEY_NAMES: frozenset[str] = frozenset(_NAMED | _FUNCTION | _CTRL)


class InvalidKeyError(ValueError):
    """A key name outside the fixed vocabulary (see :data:`KEY_NAMES`)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"unknown key {key!r}: expected one of Enter, Escape, Tab, BTab, Space, BSpace, "
            "Up, Down, Left, Right, Home, End, PageUp, PageDown, Insert, Delete, F1-F12, "
            "C-a..C-z, C-\\, C-], C-Space"
        )


def check_keys(keys: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return ``keys`` as a tuple, or raise :class:`InvalidKeyError` for the first bad one."""
    for key in keys:
        if key not in KEY_NAMES:
            raise InvalidKeyError(key)
    return tuple(keys)
