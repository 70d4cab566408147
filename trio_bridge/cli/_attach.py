"""``trio-bridge attach ID``: an interactive view of a session, over its WebSocket.

The terminal goes into raw mode; what the user types goes to the session byte for byte
(Ctrl-C included), and the session's output comes back as it is. Ctrl-] detaches (as
telnet's escape), leaving the session running. The session's current screen is drawn
first, then live output follows.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import termios
import tty
from collections.abc import Mapping
from typing import TYPE_CHECKING

import trio

from ._exit import EXIT_DAEMON_LOST, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE, Exit, exit_status
from ._resume import DaemonLostError, Reconnect
from ._text import error

if TYPE_CHECKING:
    from ..config import Settings
    from ._context import Invocation

__all__ = ["DETACH", "attach", "attach_session"]

DETACH = b"\x1d"  # Ctrl-]


def attach(invocation: Invocation) -> int:
    """Attach this terminal to the session until it ends (its exit status) or Ctrl-] (0)."""
    from ._connect import resolve_id

    # an unknown id (or no daemon) is told in one line before the terminal is touched
    with invocation.open_client() as client:
        session_id = resolve_id(client, invocation.args.id)
        client.get(session_id)
    if not (os.isatty(sys.stdin.fileno()) and os.isatty(sys.stdout.fileno())):
        raise Exit(EXIT_USAGE, "attach needs a terminal (use tail -f and send in scripts)")
    return trio.run(attach_session, invocation.settings, session_id)


async def attach_session(settings: Settings, session_id: str) -> int:
    """Attach this terminal (raw mode, restored after) to the session until it ends (its exit
    status) or Ctrl-] (0). A connection that drops (the daemon restarts) is resumed from the
    last byte received, for up to ``reconnect_timeout`` seconds."""
    from trio_websocket import ConnectionRejected

    from ._ws import connection_lost, control_message, first_leaf, open_session_socket

    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = termios.tcgetattr(stdin)
    outcome: list[str | int] = []
    reconnect = Reconnect(settings.reconnect_timeout, f"attached to {session_id}", line_end="\r\n")
    # the first connection starts at the end and draws the screen; the next ones resume
    offset: int | None = None
    raw = False

    async def follow() -> None:
        nonlocal offset, raw
        query: dict[str, object] = {"offset": "end", "screen": 1} if offset is None else {"offset": offset}
        query.update(_size(stdout))  # the session takes this terminal's size, as under tmux attach
        async with open_session_socket(settings, session_id, **query) as ws:
            reconnect.connected()
            if not raw:
                tty.setraw(stdin, termios.TCSANOW)  # keep what the user typed ahead
                raw = True
            async with trio.open_nursery() as nursery:

                async def keyboard() -> None:
                    while True:
                        await trio.lowlevel.wait_readable(stdin)
                        data = os.read(stdin, 4096)
                        if not data:
                            return
                        if DETACH in data:
                            data = data[: data.index(DETACH)]
                            if data:
                                await ws.send_message(data)
                            outcome.append("detached")
                            nursery.cancel_scope.cancel()
                            return
                        await ws.send_message(data)

                async def screen() -> None:
                    nonlocal offset
                    while True:
                        message = await ws.get_message()
                        if isinstance(message, bytes):
                            _write(stdout, message)
                            if offset is not None:
                                offset += len(message)
                            continue
                        control = control_message(message)
                        if control["type"] == "hello" or control["type"] == "resync":
                            offset = int(control["offset"])
                        elif control["type"] == "screen":
                            _write(stdout, _draw_screen(control))
                        elif control["type"] == "end":
                            outcome.append(exit_status(control["session"]))
                            nursery.cancel_scope.cancel()
                            return
                        elif control["type"] == "error":
                            _write(stdout, f"\r\n[trio-bridge: {control.get('message')}]\r\n".encode())

                async def follow_size() -> None:
                    with trio.open_signal_receiver(signal.SIGWINCH) as resized:
                        async for _ in resized:
                            await ws.send_message(json.dumps({"type": "resize", **_size(stdout)}))

                nursery.start_soon(keyboard)
                nursery.start_soon(screen)
                nursery.start_soon(follow_size)

    try:
        while not outcome:
            try:
                await follow()
            except Exception as exc:
                cause = first_leaf(exc)
                if isinstance(cause, ConnectionRejected) and cause.status_code == 404:
                    error(f"no session {session_id!r}")
                    return EXIT_REFUSED
                if not connection_lost(exc):
                    raise
                if offset is None and not reconnect.ever_connected and isinstance(cause, OSError):
                    # never connected: no daemon to come back
                    error(f"the daemon is not running ({cause.strerror}); start it with: trio-bridge daemon")
                    return EXIT_UNAVAILABLE
                try:
                    await trio.sleep(reconnect.lost())
                except DaemonLostError as gone:
                    print(f"\r\ntrio-bridge: {gone} (the session goes on: trio-bridge attach {session_id})",
                          file=sys.stderr)  # fmt: skip
                    return EXIT_DAEMON_LOST
    finally:
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    result = outcome[0] if outcome else "detached"
    if isinstance(result, int):
        print(f"\r\n[session {session_id} ended]", file=sys.stderr)
        return result
    print(f"\r\n[{result}; the session goes on: trio-bridge attach {session_id}]", file=sys.stderr)
    return 0


def _size(fd: int) -> dict[str, int]:
    """This terminal's size, within what a session accepts."""
    try:
        columns, lines = os.get_terminal_size(fd)
    except OSError:
        columns, lines = 80, 24
    return {"width": max(2, min(columns, 1000)), "height": max(2, min(lines, 1000))}


def _draw_screen(control: Mapping[str, object]) -> bytes:
    """A ``screen`` message as terminal output: clear, the text, then the cursor where the
    session has it (not after the last line drawn)."""
    text = str(control["text"]).rstrip("\n").replace("\n", "\r\n")
    drawn = b"\x1b[H\x1b[2J" + text.encode()
    cursor = control.get("cursor")
    if isinstance(cursor, list) and len(cursor) == 2 and all(type(n) is int and n >= 0 for n in cursor):
        drawn += f"\x1b[{cursor[1] + 1};{cursor[0] + 1}H".encode()
    return drawn


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
