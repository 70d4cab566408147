"""The command table drives parsing, dispatch and completion; settings are loaded once, when a
command needs them; start-up imports stay light."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from trio_bridge.cli._exit import EXIT_START_FAILED, EXIT_USAGE
from trio_bridge.cli._parser import build_parser, command_in
from trio_bridge.cli._preflight import StartFailed, env_pairs
from trio_bridge.cli._table import COMMANDS, command_named

from ..conftest import Sandbox
from ._helpers import complete

NAMES = [command.name for command in COMMANDS]


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def test_each_command_is_declared_once_and_runs_from_the_table() -> None:
    assert len(set(NAMES)) == len(NAMES) == 20
    assert _subcommands(build_parser()) == NAMES
    for command in COMMANDS:
        assert command_named(command.name) is command
        # only the command being run gets a parser (start-up), found past settings flags
        assert command_in(["--timeout-tmux", "5", command.name, "--help"]) == command.name
        assert _subcommands(build_parser(command.name)) == [command.name]
        assert callable(command.load_handler()), command.handler
        assert command.examples, command.name
    assert command_in(["lst"]) is None and command_in(["--help"]) is None


def test_the_shell_is_offered_the_table_s_commands(sandbox: Sandbox) -> None:
    assert complete(sandbox, "trio-bridge ") == sorted(NAMES)
    assert complete(sandbox, "trio-bridge completion ") == ["bash", "fish", "zsh"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["ls"], EXIT_USAGE),
        (["config"], EXIT_USAGE),
        (["daemon"], EXIT_USAGE),
        (["web"], EXIT_USAGE),
        (["attach", "x"], EXIT_USAGE),
        (["run", "--", "true"], EXIT_START_FAILED),
    ],
)
def test_a_bad_setting_ends_each_command_in_one_line(sandbox: Sandbox, args: list[str], code: int) -> None:
    result = sandbox.cli("--timeout-tmux", "soon", *args, stdin=subprocess.DEVNULL)
    assert result.returncode == code
    assert result.stderr.decode() == "trio-bridge: --timeout-tmux: expected a number of seconds, got 'soon'\n"


def test_commands_that_need_no_settings_do_not_load_them(sandbox: Sandbox) -> None:
    result = sandbox.cli("--timeout-tmux", "soon", "completion", "bash")
    assert result.returncode == 0 and b"trio-bridge" in result.stdout
    # a usage error is told before a bad setting, as before the settings were loaded
    assert sandbox.cli("--timeout-tmux", "soon", "run").returncode == EXIT_USAGE


@pytest.mark.parametrize("args", [["--help"], ["ls", "--help"], ["run", "--help"]])
def test_help_imports_neither_trio_nor_attrs_nor_httpx(args: list[str]) -> None:
    code = (
        "import sys; from trio_bridge.cli import main\n"
        f"try: main({args!r})\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in ('trio', 'attrs', 'httpx', 'trio_bridge.client') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert result.stdout.decode().splitlines()[-1] == "[]", result.stderr.decode()


def test_env_pairs() -> None:
    assert env_pairs(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    for bad in ("A", "=x", "1A=x", "A B=x"):
        with pytest.raises(StartFailed, match="--env expects NAME=VALUE"):
            env_pairs([bad])


def test_the_client_does_not_load_httpx_s_command_line_tool() -> None:
    code = (
        "import sys; import trio_bridge.client, httpx; httpx.Client().close()\n"
        "print(sorted(m for m in ('click', 'rich', 'pygments') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert result.stdout.decode().splitlines()[-1] == "[]", result.stderr.decode()
