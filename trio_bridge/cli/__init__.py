"""The ``trio-bridge`` command line.

Every command is declared once, in the command table (``_table.py``); the parser
(``_parser.py``), the dispatch (``_context.py``) and the shell completion are made from it.
Parsing uses only the standard library; each command imports what it needs when it runs, so
start-up stays fast (``--help`` does not even import Trio).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trio-bridge`` console script; returns the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # `trio-bridge config | head`: the reader went away; exit as a shell pipeline would,
        # without a traceback (and without another error when Python flushes stdout at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: Sequence[str] | None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    if args_list[:1] == ["hook"]:
        # Called by agents at every turn: the standard library only, no parser, no settings.
        from ..hook import main as hook_main

        return hook_main(args_list[1:])
    from ._parser import build_parser, command_in
    from ._table import command_named

    completing = "_ARGCOMPLETE" in os.environ
    parser = build_parser(None if completing else command_in(args_list))
    if completing:  # a shell asks for completions (see `completion`)
        import argcomplete

        argcomplete.autocomplete(parser, always_complete_options=False)  # `kill <Tab>`: ids, not flags
    args = parser.parse_args(args_list)
    command = command_named(args.command)
    if command is None:
        parser.error(f"unknown command {args.command!r}")  # argparse refused it already
    from ._context import Invocation, dispatch
    from ._exit import Exit
    from ._text import error

    try:
        return dispatch(Invocation(command, args, parser))
    except Exit as exc:
        if exc.message is not None:
            error(exc.message)
        return exc.code
