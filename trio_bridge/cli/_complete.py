"""Dynamic shell completion (argcomplete completers): live session ids and names, session
states, agent profiles, the mesh's computers. Each asks the daemon once, bounded by the client's
connect timeout; without a daemon (or on any error) it offers nothing rather than files."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

STATES = ("starting", "running", "exited", "killed", "lost")
_LIVE = {"starting", "running"}

Completer = Callable[..., Iterable[str]]


def _client(parsed_args: argparse.Namespace) -> Any:
    from ..client import Client
    from . import settings_flags
    from ._client import load_client_settings

    settings = load_client_settings(settings_flags(parsed_args), getattr(parsed_args, "config", None))
    return Client(
        settings.api_socket, settings.url, settings.client_token(), getattr(parsed_args, "computer", None)
    )


def sessions(which: str = "all") -> Completer:
    """Ids and names of the sessions: ``all``, ``live`` (kill, keys, attach) or ``ended`` (rm)."""

    def complete(prefix: str, parsed_args: argparse.Namespace, **_: object) -> list[str]:
        try:
            with _client(parsed_args) as client:
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
    from . import settings_flags
    from ._client import load_client_settings

    try:
        names = load_client_settings(settings_flags(parsed_args), getattr(parsed_args, "config", None)).agents
    except Exception:
        return []
    return [n for n in sorted(names) if n.startswith(prefix)]


def computers(prefix: str, parsed_args: argparse.Namespace, **_: object) -> list[str]:
    try:
        with _client(argparse.Namespace(**{**vars(parsed_args), "computer": None})) as client:
            found = [str(c["name"]) for c in client.computers()["computers"]]
    except Exception:
        return []
    return [n for n in [*found, "*"] if n.startswith(prefix)]


def attach(action: argparse.Action, completer: Completer) -> None:
    """Give ``action`` its completer (argcomplete reads the attribute)."""
    action.completer = completer  # type: ignore[attr-defined]
