"""The commands that act on sessions: ``new``, ``send``, ``prompt``, ``keys``, ``kill``, ``rm``,
``clean``.

Each is a few calls of :class:`trio_bridge.client.Client`, given open (ids resolved) by
``_context.dispatch``; an ``ApiError`` raised here is the daemon's refusal (exit 1, its message).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..client import ApiError
from ._connect import CommandClient
from ._context import after_dashes
from ._exit import EXIT_QUEUED, EXIT_REFUSED, Exit
from ._preflight import StartFailed, env_pairs
from ._show import print_json
from ._text import error, printable

__all__ = [
    "EXIT_QUEUED",
    "EXIT_REFUSED",
    "cmd_clean",
    "cmd_keys",
    "cmd_kill",
    "cmd_new",
    "cmd_prompt",
    "cmd_rm",
    "cmd_send",
]


def cmd_new(client: CommandClient, args: argparse.Namespace) -> int:
    from ..runner import pane_environment

    command = after_dashes(args.cmd)
    if command and args.shell is not None:
        raise ApiError(422, "invalid_command", "give a command or --shell, not both")
    agent_args: dict[str, Any] = {}
    if args.agent is not None or args.resume is not None:
        # With an agent, what follows -- are extra arguments for it.
        agent_args = {
            "agent": args.agent, "model": args.model, "prompt": args.prompt, "args": command,
            "resume": args.resume,
        }  # fmt: skip
        command = []
    elif args.model is not None or args.prompt is not None:
        raise ApiError(422, "invalid_agent", "--model and --prompt need --agent")
    remote = args.computer is not None
    # On another computer: its paths and environment, not ours (only --cwd and --env travel).
    cwd = args.cwd if remote else str(Path(args.cwd).expanduser().resolve()) if args.cwd else os.getcwd()
    if args.resume is not None and args.cwd is None:
        cwd = None  # the resumed session's own directory (where the agent keeps the conversation)
    try:
        env = env_pairs(args.env)
    except StartFailed as exc:
        raise Exit(EXIT_REFUSED, str(exc)) from None
    if not remote:
        env = pane_environment(env)
    if command and not agent_args and not remote:
        # as `run` does, before anything is created: no session that can only end 127
        from ._preflight import check_command

        try:
            check_command(command[0], Path(cwd or os.getcwd()), env.get("PATH"))
        except StartFailed as exc:
            raise Exit(exc.code, str(exc)) from None
    session = client.create(
        command or None,
        shell=args.shell,
        cwd=cwd,
        env=env,
        title=args.title,
        width=args.width,
        height=args.height,
        name=args.name,
        **agent_args,
    )
    if args.json:
        print_json(session)
    else:
        print(session["id"])
    return 0


def cmd_prompt(client: CommandClient, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == ["-"] else " ".join(args.text)
    if args.text == ["-"]:
        text = text.removesuffix("\n")  # the file's last line end is not part of the prompt
    queued = client.prompt(args.id, text)
    if queued is not None:
        error(queued)
        return EXIT_QUEUED
    return 0


def cmd_send(client: CommandClient, args: argparse.Namespace) -> int:
    if args.text != ["-"]:
        client.send_text(args.id, " ".join(args.text), enter=not args.no_enter)
        return 0
    data = sys.stdin.buffer.read()
    text = _as_text(data)
    if text is not None:
        client.send_text(args.id, text, enter=not args.no_enter)
        return 0
    # Not text that can be pasted (not UTF-8, or control characters): typed byte for byte, as
    # an attached terminal would, then Enter as a CR.
    if getattr(args, "computer", None) is not None:
        # (the WebSocket, the only door for raw keystrokes, is not relayed through the mesh)
        raise ApiError(422, "invalid_text", "input that is not text can only go to this computer's sessions")
    client.get(args.id)  # an unknown id is told as by every command
    from ._ws import send_bytes

    send_bytes(client.settings, args.id, data + (b"" if args.no_enter else b"\r"))
    return 0


def _as_text(data: bytes) -> str | None:
    """``data`` as text to paste (UTF-8; no control characters but newline and tab), or None."""
    import unicodedata

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.replace("\r\n", "\n")
    if any(c not in "\n\t" and unicodedata.category(c) == "Cc" for c in text):
        return None
    return text


def cmd_keys(client: CommandClient, args: argparse.Namespace) -> int:
    client.send_keys(args.id, args.keys)
    return 0


def cmd_kill(client: CommandClient, args: argparse.Namespace) -> int:
    status = 0
    for session_id in args.ids:
        try:
            if args.signal is not None:
                client.signal(session_id, args.signal.upper())
                continue
            session = client.kill(session_id)
        except ApiError as exc:
            error(exc.message)
            status = EXIT_REFUSED
            continue
        print(f"{session['id']} {session['state']}")
    return status


def cmd_rm(client: CommandClient, args: argparse.Namespace) -> int:
    status = 0
    for session_id in args.ids:
        try:
            if args.force and client.get(session_id)["state"] in ("starting", "running"):
                client.kill(session_id)
            client.remove(session_id)
        except ApiError as exc:
            error(exc.message + (" (rm -f kills it)" if exc.code == "session_running" else ""))
            status = EXIT_REFUSED
            continue
        print(session_id)
    return status


def cmd_clean(client: CommandClient, args: argparse.Namespace) -> int:
    ended = ("exited", "killed", "lost")
    states = [s.strip() for s in (args.state or ",".join(ended)).split(",") if s.strip()]
    if not set(states) <= set(ended):
        raise ApiError(422, "invalid_state", "clean removes ended sessions only: exited, killed, lost")
    now = time.time()
    status = 0
    for session in client.sessions(states):
        ended_at = session.get("ended_at") or session["created_at"]
        if args.older_than is not None and now - ended_at < args.older_than:
            continue
        try:
            client.remove(session["id"])
        except ApiError as exc:
            error(exc.message)
            status = EXIT_REFUSED
            continue
        print(printable(session["id"]))
    return status
