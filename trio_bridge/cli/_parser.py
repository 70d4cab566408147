"""The argument parser, made from the command table (``_table.py``), and the settings flags
every command takes.

Only the sub-parser of the command being run is built (all of them, each with every settings
flag, cost ~20 ms of every command's start-up); all are built for ``--help``, a usage error and
shell completion.
"""

from __future__ import annotations

import argparse
import functools
import textwrap
from collections.abc import Sequence

from .._version import __version__
from ._settings import dest
from ._table import COMMANDS, Command, command_named
from ._usage import Parser

__all__ = ["build_parser", "command_in"]


@functools.cache
def _settings_parser(exclude: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """Flags for every setting (but ``exclude``), accepted before or after the command name."""
    from ..config import SETTINGS

    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    group = parent.add_argument_group("settings (flag > TRIO_BRIDGE_* variable > config file > default)")
    group.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="config file (default: $XDG_CONFIG_HOME/trio-bridge/config.toml)",
    )
    for setting in SETTINGS:
        if setting.name in exclude:
            continue
        if setting.switch:
            group.add_argument(
                setting.flag, dest=dest(setting.name), action="store_const", const="true",
                default=argparse.SUPPRESS, help=setting.help,
            )  # fmt: skip
            continue
        group.add_argument(
            setting.flag,
            dest=dest(setting.name),
            metavar="VALUE",
            default=argparse.SUPPRESS,
            help=setting.help,
        )
    return parent


def command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (skipping settings flags and their values), if it is one."""
    from ..config import SETTINGS

    with_value = {s.flag for s in SETTINGS if not s.switch} | {"--config"}
    switches = {s.flag for s in SETTINGS if s.switch}
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in switches:
            index += 1
        elif arg in with_value:
            index += 2
        elif arg.startswith("-"):
            if arg in ("-h", "--help", "--version") or "=" not in arg:
                return None
            index += 1
        else:
            return arg if command_named(arg) is not None else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``trio-bridge``: with only the sub-parser of command ``only``, or (None)
    with every command's."""
    parser = Parser(
        prog="trio-bridge",
        description="Run and supervise terminal sessions in tmux.",
        parents=[_settings_parser()],
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"trio-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for command in COMMANDS:
        if only is None or command.name == only:
            _add_command(commands, command)
    return parser


def _add_command(commands: argparse._SubParsersAction[Parser], command: Command) -> None:
    parents = [_settings_parser(command.without_settings)]
    if command.json:
        parents.append(_json_flag())
    if command.mesh:
        parents.append(_computer_flag())
    options: dict[str, object] = {"help": command.help, "parents": parents}
    if command.examples:
        # raw text (the examples keep their lines), so the description is wrapped here
        options["description"] = textwrap.fill(command.description or command.help, width=78)
        options["epilog"] = "example:\n" + "\n".join(f"  {line}" for line in command.examples)
        options["formatter_class"] = argparse.RawDescriptionHelpFormatter
    elif command.description is not None:
        options["description"] = command.description
    sub = commands.add_parser(command.name, **options)  # type: ignore[arg-type]
    groups: dict[str, argparse._ArgumentGroup] = {}
    for arg in command.arguments:
        where: argparse._ActionsContainer = sub
        if arg.group is not None:
            where = groups.get(arg.group) or groups.setdefault(arg.group, sub.add_argument_group(arg.group))
        action = where.add_argument(*arg.names, **arg.options)
        if arg.complete is not None:
            action.completer = arg.complete  # type: ignore[attr-defined]  # argcomplete reads it


@functools.cache
def _json_flag() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="JSON output, for scripts")
    return parent


@functools.cache
def _computer_flag() -> argparse.ArgumentParser:
    from ._complete import computers

    parent = argparse.ArgumentParser(add_help=False)
    action = parent.add_argument(
        "--computer", metavar="NAME", help="the session's computer in the mesh (default: this one)"
    )
    action.completer = computers  # type: ignore[attr-defined]  # argcomplete reads it
    return parent
