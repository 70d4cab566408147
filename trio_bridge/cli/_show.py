"""The commands that show the daemon's state: ``ls``, ``screen``, ``status``, ``computers``.

Each is a few calls of the client (httpx only: the server stack is never imported; ``ls`` not
even Trio or attrs: a test checks it). Every field printed in a table went through the daemon,
perhaps from another computer: it is printed escaped (``printable``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..client import ApiError, Client
from ._text import printable

__all__ = ["cmd_computers", "cmd_ls", "cmd_screen", "cmd_status", "print_json"]

_COLOURS = {
    "running": "32", "starting": "36", "exited": "0", "killed": "33", "lost": "31",
    # agent states
    "working": "32", "idle": "34", "waiting_for_input": "1;35", "stuck": "1;31", "unknown": "0",
}  # fmt: skip


def _colour(enabled: bool) -> Callable[[str, str], str]:
    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if enabled and code != "0" else text

    return paint


def _use_colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _age(seconds: float) -> str:
    """``seconds`` as ``42s``, ``5m``, ``3h`` or ``2d`` (rounded down)."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _exit_text(session: Mapping[str, Any]) -> str:
    if session.get("exit_signal"):
        import signal

        try:
            return signal.Signals(session["exit_signal"]).name
        except ValueError:
            return f"signal {session['exit_signal']}"
    code = session.get("exit_code")
    return "" if code is None else str(code)


def print_json(value: object) -> None:
    """``value`` as indented JSON on stdout (``--json``)."""
    print(json.dumps(value, indent=2))


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    sessions = client.sessions([s.strip() for s in (args.state or "").split(",") if s.strip()])
    if args.quiet:
        for session in sessions:
            print(printable(session["id"]))
        return 0
    if args.format is not None:
        for session in sessions:
            print(_formatted(args.format, session))
        return 0
    if args.json:
        print_json(sessions)
        return 0
    if not sessions:
        print("no sessions", file=sys.stderr)
        return 0
    paint = _colour(_use_colour())
    now = time.time()
    rows = [
        (printable(s["id"]), printable(_state_text(s)), _exit_text(s), _age(now - s["created_at"]),
         printable(f"[{s['name']}] {s['title']}" if s.get("name") else s["title"]))
        for s in sessions
    ]  # fmt: skip
    header = ("ID", "STATE", "EXIT", "AGE", "TITLE")
    if args.computer == "*":
        rows = [
            (printable(f"{s['computer']}:{s['id']}"), *row[1:]) for s, row in zip(sessions, rows, strict=True)
        ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    title_width = max(10, _terminal_width() - sum(widths) - 8)
    print(paint("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + "  TITLE", "1"))
    for row in rows:
        colour = _COLOURS.get(row[1].split(":")[-1], "0")
        cells = [row[0].ljust(widths[0]), paint(row[1].ljust(widths[1]), colour)]
        cells += [row[2].ljust(widths[2]), row[3].ljust(widths[3])]
        title = row[4] if len(row[4]) <= title_width else row[4][: title_width - 1] + "…"
        print("  ".join(cells) + "  " + title)
    return 0


def _formatted(template: str, session: Mapping[str, Any]) -> str:
    """``template`` with each ``{field}`` replaced by the session's field (printable; empty when
    unset). Only plain field names: not str.format, whose ``{x.attr}``/``{x[i]}`` reach further."""
    import re

    def field(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in session:
            raise ApiError(
                422, "invalid_format", f"--format: no field {name!r} (fields: {', '.join(session)})"
            )
        value = session[name]
        return (
            ""
            if value is None
            else printable(" ".join(map(str, value)) if isinstance(value, list) else str(value))
        )

    return re.sub(r"\{([a-z_]+)\}", field, template.replace("\\t", "\t"))


def _state_text(session: Mapping[str, Any]) -> str:
    """``running``, or for a running agent session ``claude:waiting_for_input``."""
    if session.get("agent") and session.get("agent_state") and session["state"] == "running":
        return f"{session['agent']}:{session['agent_state']}"
    return str(session["state"])


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 1000


def cmd_screen(client: Client, args: argparse.Namespace) -> int:
    screen = client.screen(args.id)
    if args.json:
        print_json(screen)
    else:
        sys.stdout.write(screen["text"].rstrip("\n") + "\n")
    return 0


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    version = client.version()
    sessions = client.sessions()
    counts: dict[str, int] = {}
    for session in sessions:
        counts[session["state"]] = counts.get(session["state"], 0) + 1
    if args.json:
        print_json({"running": True, "at": client.where, **version, "sessions": counts})
        return 0
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no sessions"
    print(f"daemon: running, trio-bridge {version['version']} (API {version['api']}) at {client.where}")
    print(f"sessions: {summary}")
    return 0


def cmd_computers(client: Client, args: argparse.Namespace) -> int:
    found = client.computers()
    if args.json:
        print_json(found)
        return 0
    paint = _colour(_use_colour())
    # Every field came through Redis: escaped, so that no name can drive the terminal.
    rows = [
        (
            printable(str(c["name"])) + (" (this)" if c["local"] else ""),
            "online" if c["online"] else "offline",
            _age(c["age"]),
            printable(str(c["sessions"])),
            printable(str(c["version"])),
            printable(str(c["host"])),
        )
        for c in found["computers"]
    ]
    header = ("NAME", "STATE", "SEEN", "SESSIONS", "VERSION", "HOST")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(paint("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(), "1"))
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        cells[1] = paint(cells[1], "32" if row[1] == "online" else "31")
        print("  ".join(cells).rstrip())
    if not found["mesh"]:
        print("(no mesh: start the daemon with --redis URL to join one)", file=sys.stderr)
    elif found.get("signed"):
        print("mesh: signed (messages carry the mesh secret's HMAC)", file=sys.stderr)
    else:
        print(
            "mesh: NOT signed (no mesh_secret): anyone who can write to its Redis can run commands here",
            file=sys.stderr,
        )
    return 0
