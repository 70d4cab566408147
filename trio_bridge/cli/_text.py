"""What a command prints: one-line errors, session output on our stdout, and text from the
daemon made safe to print on a terminal.

Titles, names, hosts and error messages come from whoever could create a session or write to
the mesh: printed raw, an escape sequence in one would set the terminal's title, clear the
screen or worse (terminal injection). Control and format characters are shown escaped instead.
"""

from __future__ import annotations

import os
import sys
import unicodedata

__all__ = ["Out", "StdoutClosedError", "error", "printable"]


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


def error(message: str) -> None:
    """Print ``trio-bridge: MESSAGE`` on stderr (printable: it may come from the daemon)."""
    print(f"trio-bridge: {printable(message)}", file=sys.stderr, flush=True)


class StdoutClosedError(BrokenPipeError):
    """Our own stdout was closed (``| head``): not the daemon's connection."""


class Out:
    """A session's output on our stdout: the bytes as they are on a terminal, plain text (no
    escapes, LF line ends) otherwise (``tail``, ``run``).

    Writes raise :class:`StdoutClosedError` once the reader of our stdout went away.
    """

    def __init__(self) -> None:
        self._fd = sys.stdout.fileno()
        self._plain = None
        if not os.isatty(self._fd):
            from .._terminal import PlainText

            self._plain = PlainText()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except BrokenPipeError as exc:
            raise StdoutClosedError(*exc.args) from None

    def write(self, data: bytes) -> None:
        """Write ``data`` (filtered when not on a terminal) before returning."""
        if self._plain is not None:
            data = self._plain.feed(data)
        self._write_all(data)

    async def write_async(self, data: bytes) -> None:
        """:meth:`write` in a worker thread, so that a slow or blocked reader of our stdout never
        blocks the event loop (and so never blocks Ctrl-C handling)."""
        import trio

        if self._plain is not None:
            data = self._plain.feed(data)
        if data:
            # Abandoned on cancel: Ctrl-C must work even while our reader is stuck.
            await trio.to_thread.run_sync(self._write_all, data, abandon_on_cancel=True)

    def close(self) -> None:
        """Write what the plain-text filter still holds (a final lone CR)."""
        if self._plain is not None and (rest := self._plain.flush()):
            self._write_all(rest)
