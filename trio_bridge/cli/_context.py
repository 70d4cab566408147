"""What every command is given: its parsed arguments, its settings (loaded once, when first
needed), and one way to open the daemon's client (``_connect.py``); and the dispatch to its
handler."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, NoReturn

from ._exit import Exit
from ._settings import resolve, settings_flags

if TYPE_CHECKING:
    from ..config import Resolved, Settings
    from ._connect import CommandClient
    from ._table import Command

__all__ = ["Invocation", "after_dashes", "dispatch"]


class Invocation:
    """One run of one command: its table entry, parsed arguments and settings."""

    def __init__(self, command: Command, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        self.command = command
        self.args = args
        self._parser = parser

    @functools.cached_property
    def resolved(self) -> Resolved:
        """The settings and where each came from, loaded on first use (``completion`` never
        loads them, and ``run`` reports its usage errors before a bad setting).

        Raises:
            Exit: a bad setting (the command's ``config_error`` code, one line).
        """
        from ..config import ConfigError

        try:
            return resolve(self.args)
        except ConfigError as exc:
            raise Exit(self.command.config_error, str(exc)) from None

    @property
    def settings(self) -> Settings:
        """See :attr:`resolved`."""
        return self.resolved.settings

    @property
    def flags(self) -> Mapping[str, object]:
        """The settings given as flags, by setting name."""
        return settings_flags(self.args)

    def usage_error(self, message: str) -> NoReturn:
        """Exit 2 with the short usage error (see ``_usage.py``)."""
        self._parser.error(message)

    def open_client(self) -> AbstractContextManager[CommandClient]:
        """The daemon's client (on ``--computer``'s sessions if the command has it), closed after
        (see ``_connect.open_client``: the daemon's failures become exit codes there)."""
        from ._connect import open_client

        return open_client(self.settings, getattr(self.args, "computer", None))


def dispatch(invocation: Invocation) -> int:
    """Run the command's handler: ``handler(invocation)``, or for a client command
    ``handler(client, args)`` with the client open and its session references resolved."""
    command, args = invocation.command, invocation.args
    handler = command.load_handler()
    if not command.client:
        return int(handler(invocation))
    from ._connect import resolve_id

    with invocation.open_client() as client:
        if getattr(args, "id", None) is not None:
            args.id = resolve_id(client, args.id)
        if getattr(args, "ids", None):
            args.ids = [resolve_id(client, i) for i in args.ids]
        return int(handler(client, args))


def after_dashes(words: list[str]) -> list[str]:
    """A command line given after ``--`` (argparse's REMAINDER keeps the ``--``)."""
    return words[1:] if words[:1] == ["--"] else list(words)
