"""Turn a terminal's byte stream into plain text, incrementally.

A command in a tmux pane writes to a terminal: the tty turns ``\\n`` into
``\\r\\n`` and programs add escape sequences (colours, titles, bracketed-paste
toggles). :class:`PlainText` removes both, so that ``trio-bridge run -- cmd >
out.txt`` gives what ``cmd > out.txt`` would. Sequences split across chunks
are held back until complete.
"""

from __future__ import annotations

import re

__all__ = ["PlainText"]

_ESC = 0x1B
# Complete sequences: CSI, OSC (ended by BEL or ST), DCS/SOS/PM/APC (ended by
# ST), and two-byte escapes (ESC + intermediates + final).
_SEQUENCE = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    rb"|\x1b[PX^_][^\x1b]*\x1b\\"
    # (not the introducers [ ] P X ^ _, which start the longer forms above)
    rb"|\x1b[ -/]*[0-OQ-WYZ\\`-~]"
)
# What may still become a sequence when more bytes arrive.
_PARTIAL = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[ -/]*)?\Z")
_MAX_HELD = 65536


class PlainText:
    """Incremental filter: ``feed`` chunks, then ``flush`` once at the end."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk
        self._held = b""
        if b"\x1b" in data:
            data = _SEQUENCE.sub(b"", data)
            # Complete sequences are gone; an ESC left over may start one that
            # the next chunk completes (the earliest such ESC, as an unfinished
            # DCS or OSC can itself contain an ESC).
            start = data.find(b"\x1b", max(0, len(data) - _MAX_HELD))
            while start >= 0:
                if _PARTIAL.match(data, start):
                    data, self._held = data[:start], data[start:]
                    break
                start = data.find(b"\x1b", start + 1)
        # SO/SI switch character sets (top, ncurses line drawing): no text in them
        data = data.translate(None, b"\x0e\x0f")
        if b"\r" in data:
            if data.endswith(b"\r"):
                # Maybe the first half of a CRLF: decide when the next byte comes.
                data, self._held = data[:-1], b"\r" + self._held
            data = data.replace(b"\r\n", b"\n")
        return data

    def flush(self) -> bytes:
        """What is still held back (an incomplete sequence is dropped, a lone CR kept)."""
        held, self._held = self._held, b""
        return b"\r" if held.startswith(b"\r") else b""
