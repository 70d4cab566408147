"""``trio-bridge attach ID``: an interactive view of a session, over its WebSocket.

The terminal goes into raw mode; what the user types goes to the session byte for byte
(Ctrl-C included), and the session's output comes back as it is. Ctrl-] detaches (as
telnet's escape), leaving the session running. The session's current screen is drawn
first, then live output follows.
"""

from __future__ import annotations

import argparse
import os
import sys
import termios
import tty
from collections.abc import Mapping

import trio

from ..config import ConfigError, Settings

DETACH = b"\x1d"  # Ctrl-]


def attach(args: argparse.Namespace, flags: Mapping[str, object]) -> int:
    from ._client import EXIT_USAGE, load_client_settings

    try:
        settings = load_client_settings(flags, getattr(args, "config", None))
    except ConfigError as exc:
        print(f"trio-bridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not (os.isatty(sys.stdin.fileno()) and os.isatty(sys.stdout.fileno())):
        print("trio-bridge: attach needs a terminal (use tail -f and send in scripts)", file=sys.stderr)
        return EXIT_USAGE
    return trio.run(attach_session, settings, args.id)


async def attach_session(settings: Settings, session_id: str) -> int:
    """Attach this terminal (raw mode, restored after) to the session until it ends (its exit
    status) or Ctrl-] (0)."""
    from trio_websocket import ConnectionClosed, ConnectionRejected

    from ._client import EXIT_REFUSED, EXIT_UNAVAILABLE, exit_status
    from ._ws import control_message, open_session_socket

    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = termios.tcgetattr(stdin)
    outcome: list[str | int] = []
    try:
        async with open_session_socket(settings, session_id, offset="end", screen=1) as ws:
            tty.setraw(stdin, termios.TCSANOW)  # keep what the user typed ahead
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
                    while True:
                        message = await ws.get_message()
                        if isinstance(message, bytes):
                            _write(stdout, message)
                            continue
                        control = control_message(message)
                        if control["type"] == "screen":
                            text = control["text"].rstrip("\n").replace("\n", "\r\n")
                            _write(stdout, b"\x1b[H\x1b[2J" + text.encode())
                        elif control["type"] == "end":
                            outcome.append(exit_status(control["session"]))
                            nursery.cancel_scope.cancel()
                            return
                        elif control["type"] == "error":
                            _write(stdout, f"\r\n[trio-bridge: {control.get('message')}]\r\n".encode())

                nursery.start_soon(keyboard)
                nursery.start_soon(screen)
    except ConnectionRejected as exc:
        print(f"trio-bridge: cannot attach to {session_id}: HTTP {exc.status_code}", file=sys.stderr)
        return EXIT_REFUSED
    except ConnectionClosed as exc:
        outcome.append(f"connection closed ({exc.reason})")
    except OSError as exc:
        print(
            f"trio-bridge: the daemon is not running ({exc.strerror}); start it with: trio-bridge daemon",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    finally:
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    result = outcome[0] if outcome else "detached"
    if isinstance(result, int):
        print(f"\r\n[session {session_id} ended]", file=sys.stderr)
        return result
    print(f"\r\n[{result}; the session goes on: trio-bridge attach {session_id}]", file=sys.stderr)
    return 0


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
