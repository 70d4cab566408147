"""Text from the daemon made safe to print on a terminal.

Titles, names, hosts and error messages come from whoever could create a session or write to
the mesh: printed raw, an escape sequence in one would set the terminal's title, clear the
screen or worse (terminal injection). Control and format characters are shown escaped instead.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every control or format character (C0, DEL, C1, bidi overrides, lone
    surrogates) written as a Python-style escape."""
    if text.isprintable():
        return text
    return "".join(
        char if char == " " or unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
        else _escaped(char)
        for char in text
    )  # fmt: skip
