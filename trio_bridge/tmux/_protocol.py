"""Pure helpers for tmux's control-mode protocol and for the text we send.

Nothing here does I/O, so every function is tested directly (including with
hypothesis) without a tmux server.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["InvalidTextError", "check_text", "decode_output", "quote_argument"]


class InvalidTextError(ValueError):
    """Text that cannot be sent to a session as typed text."""


def decode_output(data: bytes) -> bytes:
    """Undo control mode's escaping of ``%output`` data.

    tmux writes every byte below 32 and the backslash itself as ``\\ooo``
    (three octal digits); every other byte is passed through unchanged.
    """
    if b"\\" not in data:
        return data
    parts = data.split(b"\\")
    out = bytearray(parts[0])
    for part in parts[1:]:
        out.append(int(part[:3], 8))
        out += part[3:]
    return bytes(out)


def quote_argument(arg: str) -> str:
    """Quote one argument for a tmux command line sent over control mode.

    Single quotes make tmux take everything literally (no ``;`` separators,
    no ``#{}`` or ``$`` expansion, no ``~``); a single quote inside is written
    as ``'\\''``. Newlines cannot be quoted in the line-based protocol.
    """
    if "\n" in arg or "\r" in arg:
        raise ValueError("a control-mode argument cannot contain a newline")
    return "'" + arg.replace("'", "'\\''") + "'"


_ALLOWED_CONTROLS = {"\n", "\t"}


def check_text(text: str) -> bytes:
    """Validate text to be typed into a session and return it as UTF-8.

    Accepts printable text, newlines and tabs. Rejects, with a message that
    says where and why: strings that are not valid Unicode (lone surrogates,
    which have no UTF-8 form), and control characters (C0 other than newline
    and tab, DEL, C1): those would act on the terminal (an ESC can end a
    bracketed paste early), so they go through named keys instead. ``\\r\\n``
    is taken as a newline.
    """
    if not isinstance(text, str):
        raise InvalidTextError(f"text must be a string, not {type(text).__name__}")
    text = text.replace("\r\n", "\n")
    for index, char in enumerate(text):
        if char in _ALLOWED_CONTROLS:
            continue
        category = unicodedata.category(char)
        if category == "Cs":
            raise InvalidTextError(
                f"text is not valid Unicode: lone surrogate U+{ord(char):04X} at index {index}"
            )
        if category == "Cc":
            raise InvalidTextError(
                f"text contains control character U+{ord(char):04X} at index {index}; "
                "send control keys as named keys instead"
            )
    return text.encode("utf-8")


_SESSION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_session_name(name: str) -> str:
    """Session names are ours (``tb-<id>``); refuse anything tmux could read as a pattern."""
    if not _SESSION_NAME.match(name):
        raise ValueError(f"invalid tmux session name {name!r}")
    return name
