"""Text for Telegram: escaping, lengths as Telegram counts them, splitting, what a topic says."""

from __future__ import annotations

import html

from ..sessions.store import SessionRecord

#: Telegram's limits: a message's text, a topic's name, a document's caption
MESSAGE_LIMIT = 4096
TOPIC_NAME_LIMIT = 128
CAPTION_LIMIT = 1024
#: an answer longer than this many messages goes as a file instead
MAX_PARTS = 3

_EMOJI = {
    "starting": "⏳",
    "running": "▶️",
    "working": "⚙️",
    "waiting_for_input": "❓",
    "idle": "💬",
    "stuck": "⚠️",
    "unknown": "▶️",
    "exited": "🏁",
    "killed": "✖️",
    "lost": "❔",
}


def units(text: str) -> int:
    """Telegram counts lengths in UTF-16 code units (an emoji outside the BMP is two)."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def state_of(record: SessionRecord) -> str:
    """The one word for where a session is: its agent's state while it runs, else its own."""
    if record.state.ended:
        return record.state.value
    return record.agent_state or record.state.value


def emoji(state: str) -> str:
    return _EMOJI.get(state, "▶️")


def topic_name(record: SessionRecord, computer: str) -> str:
    """``"<emoji> computer · agent · title"``, cut to Telegram's 128."""
    name = f"{emoji(state_of(record))} {computer} · {record.agent or 'shell'} · {record.title}"
    name = " ".join(name.split())
    while units(name) > TOPIC_NAME_LIMIT:
        name = name[:-2] + "…"
    return name


def _cut(line: str, limit: int) -> list[str]:
    """A line longer than ``limit`` units, in pieces of at most ``limit``."""
    pieces, piece = [], ""
    for char in line:
        if units(piece + char) > limit:
            pieces.append(piece)
            piece = ""
        piece += char
    return [*pieces, piece]


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """``text`` in parts of at most ``limit`` units, split where lines end (a line longer than
    a whole message is cut). Nothing is lost: the parts joined are the text."""
    parts: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        if units(current + line) <= limit:
            current += line
            continue
        if current:
            parts.append(current)
            current = ""
        if units(line) <= limit:
            current = line
        else:
            *whole, current = _cut(line, limit)
            parts.extend(whole)
    if current or not parts:
        parts.append(current)
    return parts


def status_text(record: SessionRecord, screen: str, lines: int = 25) -> str:
    """The session's status message (HTML): its state, and the screen's last lines in <pre>."""
    state = state_of(record)
    head = f"{emoji(state)} <b>{escape(state)}</b>"
    if record.state.ended:
        head += " · " + escape(ended_text(record))
    shown = [line.rstrip() for line in screen.rstrip("\n").splitlines()]
    while shown and not shown[-1]:
        shown.pop()
    shown = shown[-lines:]
    while True:
        body = escape("\n".join(shown)) or " "
        text = f"{head}\n<pre>{body}</pre>"
        # counted as Telegram does: the text without the tags, entities decoded
        if units(f"{head}\n") + units("\n".join(shown) or " ") <= MESSAGE_LIMIT - 16 or not shown:
            return text
        shown.pop(0)


def ended_text(record: SessionRecord) -> str:
    """How a session ended, in words."""
    if record.state.value == "killed":  # (recorded with the hang-up that ended it: say killed)
        return "killed"
    if record.exit_code is not None:
        return f"exited with code {record.exit_code}"
    if record.exit_signal is not None:
        return f"ended by signal {record.exit_signal}"
    return {"killed": "killed", "lost": "lost (gone while the daemon was down)"}.get(
        record.state.value, record.state.value
    )
