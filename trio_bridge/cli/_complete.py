"""Shell completion: the ``completion`` command (argcomplete's script) and the dynamic completers
the command table gives its arguments: live session ids and names, session states, agent
profiles, the mesh's computers. Each asks the daemon once, bounded by the client's connect
timeout; without a daemon (or on any error) it offers nothing rather than files.

Loaded by every command (the table refers to the completers): the standard library only, at
import."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._argtypes import STATES

if TYPE_CHECKING:
    from ._connect import CommandClient
    from ._context import Invocation

__all__ = ["Completer", "agents", "completion", "computers", "sessions", "states"]

_LIVE = {"starting", "running"}

Completer = Callable[..., Iterable[str]]


def completion(invocation: Invocation) -> int:
    """``trio-bridge completion SHELL``: print the script that makes SHELL ask us."""
    from argcomplete.shell_integration import shellcode

    print(shellcode(["trio-bridge"], shell=invocation.args.shell))
    return 0


def _client(parsed_args: argparse.Namespace, computer: str | None) -> CommandClient:
    from ._connect import CommandClient
    from ._settings import resolve

    return CommandClient(resolve(parsed_args).settings, computer)


def sessions(which: str = "all") -> Completer:
    """Ids and names of the sessions: ``all``, ``live`` (kill, keys, attach) or ``ended`` (rm)."""

    def complete(prefix: str, parsed_args: argparse.Namespace, **_: object) -> list[str]:
        try:
            with _client(parsed_args, getattr(parsed_args, "computer", None)) as client:
                found = client.sessions()
        except Exception:
            return []
        words: list[str] = []
        for session in found:
            live = session["state"] in _LIVE
            if which == "all" or (which == "live") == live:
                words += [session["id"], *([session["name"]] if session.get("name") else [])]
        return [w for w in words if w.startswith(prefix)]

    return complete


def states(prefix: str, **_: object) -> list[str]:
    """Comma-separated states: completes the last one."""
    head, _sep, last = prefix.rpartition(",")
    lead = head + "," if head else ""
    return [lead + s for s in STATES if s.startswith(last)]


def agents(prefix: str, parsed_args: argparse.Namespace, **_: object) -> list[str]:
    from ._settings import resolve

    try:
        names = resolve(parsed_args).settings.agents
    except Exception:
        return []
    return [n for n in sorted(names) if n.startswith(prefix)]


def computers(prefix: str, parsed_args: argparse.Namespace, **_: object) -> list[str]:
    try:
        with _client(parsed_args, None) as client:
            found = [str(c["name"]) for c in client.computers()["computers"]]
    except Exception:
        return []
    return [n for n in [*found, "*"] if n.startswith(prefix)]
