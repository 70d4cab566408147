"""The command table: every command declared once (name, help, arguments with their completers,
examples, handler, what it needs), from which the parser, the dispatch and the shell completion
are made.

Frozen dataclasses, not attrs: this module is loaded by every command, and ``ls`` must not pay
for importing attrs (see docs/decisions.md, "CLI start-up").
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from . import _argtypes as types
from . import _complete as complete
from ._exit import EXIT_START_FAILED, EXIT_USAGE

__all__ = ["COMMANDS", "Arg", "Command", "arg", "command_named"]


@dataclasses.dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call: its names and options, its completer, its argument group."""

    names: tuple[str, ...]
    options: Mapping[str, Any]
    complete: complete.Completer | None = None
    #: the title of the argument group it is shown in (None: argparse's own groups)
    group: str | None = None


def arg(
    *names: str, complete: complete.Completer | None = None, group: str | None = None, **options: Any
) -> Arg:
    """An :class:`Arg`, written as ``add_argument`` is called."""
    return Arg(names, options, complete, group)


@dataclasses.dataclass(frozen=True)
class Command:
    """One command of ``trio-bridge``."""

    name: str
    help: str
    #: ``"module:function"`` in this package, imported only when the command runs (start-up);
    #: it takes the :class:`~._context.Invocation`, or for a ``client`` command (client, args)
    handler: str
    arguments: tuple[Arg, ...] = ()
    #: one or two examples, shown at the end of its --help
    examples: tuple[str, ...] = ()
    #: the --help text above the options (default: ``help``)
    description: str | None = None
    #: talks to the daemon over the synchronous client: run with it open, ids resolved, the
    #: daemon's failures translated into exit codes (see ``_context.dispatch``)
    client: bool = False
    #: has ``--json`` (JSON output, for scripts)
    json: bool = False
    #: has ``--computer NAME``: the session's computer in the mesh
    mesh: bool = False
    #: settings that are no flags of this command (a client's --computer names the session's
    #: computer, not this daemon's name)
    without_settings: tuple[str, ...] = ()
    #: the exit code of a bad setting (``run``: 125, as every failure to start CMD)
    config_error: int = EXIT_USAGE

    def load_handler(self) -> Callable[..., int]:
        module, _, function = self.handler.partition(":")
        found: Callable[..., int] = getattr(importlib.import_module(module, __package__), function)
        return found


_ID = "a session id, its name, or a unique prefix of its id"
_IDS = "session ids, names, or unique id prefixes"
_AGENTS = "AI coding agents (what follows -- is extra arguments for the agent)"
#: ``run`` and ``new`` start an agent with these
_AGENT_ARGS = (
    arg("--agent", metavar="NAME", group=_AGENTS, complete=complete.agents,
        help="run this agent profile (claude, codex, gemini, ...)"),
    arg("--model", metavar="MODEL", group=_AGENTS, help="the agent's model"),
    arg("--prompt", metavar="TEXT", group=_AGENTS, help="a prompt submitted at start"),
    arg("--resume", metavar="ID", group=_AGENTS, complete=complete.sessions(),
        help="resume the agent conversation of session ID"),
)  # fmt: skip
_CMD = arg("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
_CLIENT: Mapping[str, Any] = {"client": True, "without_settings": ("computer",)}

COMMANDS: tuple[Command, ...] = (
    Command(
        "daemon", "run the daemon in the foreground (sessions survive its restarts)",
        "._daemon:daemon", examples=("trio-bridge daemon --log-format json",),
    ),
    Command(
        "config", "print the effective configuration and where each value came from",
        "._config:show_config",
        arguments=(arg("--json", action="store_true", help="one JSON object, for scripts"),),
        examples=("trio-bridge config",),
    ),
    Command(
        "run", "run a command as a managed tmux session and exit with its exit code", "._run:run",
        description=(
            "Start CMD in a new managed tmux session, stream its output live, and exit "
            "with CMD's exit code: 128+N if a signal N killed it, 124 if --timeout "
            "expired, 130 on Ctrl-C, 127/126 if CMD cannot be found/executed, and 125 "
            "if trio-bridge itself could not start it."
        ),
        arguments=(
            arg("--cwd", metavar="DIR", help="working directory (default: the current one)"),
            arg("--env", metavar="K=V", action="append", default=[],
                help="set an environment variable for CMD (repeatable)"),
            arg("--timeout", metavar="SECONDS", type=types.positive_seconds,
                help="stop CMD after this many seconds and exit with 124"),
            arg("--keep", action="store_true",
                help="keep the session after CMD ends: through the daemon it stays in ls (screen, tail, "
                "rm); embedded, its tmux session stays for tmux attach"),
            arg("--embedded", action="store_true",
                help="run without the daemon even if one is running (the session is not in `ls`)"),
            *_AGENT_ARGS,
            _CMD,
        ),
        examples=("trio-bridge run --timeout 60 -- make test", "echo hi | trio-bridge run -- cat"),
        config_error=EXIT_START_FAILED,
    ),
    Command(
        "ls", "list sessions (--computer '*': on every computer of the mesh)", "._show:cmd_ls",
        arguments=(
            arg("--state", metavar="STATES", type=types.states, complete=complete.states,
                help="only these states, comma-separated: starting, running, exited, killed, lost"),
            arg("-q", "--quiet", action="store_true", help="only the ids, one a line (for scripts)"),
            arg("--format", metavar="TEMPLATE",
                help="one line per session from TEMPLATE: {id} {name} {state} {exit_code} {title} {agent} "
                "{agent_state} {computer} {cwd} ... (any field of --json), e.g. '{id} {state}'"),
        ),
        examples=(
            "trio-bridge ls --state running",
            "trio-bridge kill $(trio-bridge ls -q --state running)",
            "trio-bridge ls --format '{id} {state} {title}'",
        ),
        json=True, mesh=True, **_CLIENT,
    ),
    Command(
        "new", "start a session in the daemon and print its id", "._client:cmd_new",
        arguments=(
            arg("--cwd", metavar="DIR", help="working directory (default: the current one)"),
            arg("--env", metavar="K=V", action="append", default=[], help="set a variable (repeatable)"),
            arg("--title", help="a title shown by ls"),
            arg("--name", metavar="NAME", type=types.session_name,
                help="a unique name to use instead of the id (a letter, then letters, digits, _ . -)"),
            arg("--shell", metavar="CMDLINE", help="run CMDLINE with /bin/sh -c instead of CMD"),
            arg("--width", type=types.size, default=None, help="terminal columns, 2 to 1000 (default 80)"),
            arg("--height", type=types.size, default=None, help="terminal rows, 2 to 1000 (default 24)"),
            *_AGENT_ARGS,
            _CMD,
        ),
        examples=(
            "trio-bridge new --name build -- make",
            "trio-bridge new --agent claude --prompt 'fix the tests'",
        ),
        json=True, mesh=True, **_CLIENT,
    ),
    Command(
        "prompt", "submit a prompt to a session's agent, verified (paste, Enter, check)",
        "._client:cmd_prompt",
        arguments=(
            arg("id", metavar="ID", help=_ID, complete=complete.sessions("live")),
            arg("text", nargs="+", metavar="TEXT", help="words joined by spaces; '-' reads stdin"),
        ),
        examples=("trio-bridge prompt ID 'now run the tests'",),
        mesh=True, **_CLIENT,
    ),
    Command(
        "send", "type text into a session, then Enter", "._client:cmd_send",
        arguments=(
            arg("id", metavar="ID", help=_ID, complete=complete.sessions("live")),
            arg("text", nargs="+", metavar="TEXT", help="words joined by spaces; '-' reads stdin"),
            arg("--no-enter", action="store_true", help="do not press Enter after the text"),
        ),
        examples=("trio-bridge send build 'print(6*7)'", "trio-bridge send build - < script.txt"),
        mesh=True, **_CLIENT,
    ),
    Command(
        "keys", "press keys in a session, as tmux send-keys (q, Enter, C-c, M-x, PgUp, ...)",
        "._client:cmd_keys",
        arguments=(
            arg("id", metavar="ID", help=_ID, complete=complete.sessions("live")),
            arg("keys", nargs="+", metavar="KEY",
                help="one character, or a tmux key name (Enter Escape Tab BTab Space BSpace Up Down Left "
                "Right Home End PgUp PgDn Insert Delete F1-F12 KP0-KP9 ...), with C- (Ctrl), M- (Alt), "
                "S- (Shift)"),
        ),
        examples=("trio-bridge keys build C-c", "trio-bridge keys top q", "trio-bridge keys emacs M-x"),
        mesh=True, **_CLIENT,
    ),
    Command(
        "screen", "print a session's rendered screen", "._show:cmd_screen",
        arguments=(arg("id", metavar="ID", help=_ID, complete=complete.sessions("all")),),
        examples=("trio-bridge screen build",),
        json=True, mesh=True, **_CLIENT,
    ),
    Command(
        "tail", "print a session's output (-f: follow it until it ends)", "._follow:cmd_tail",
        arguments=(
            arg("id", metavar="ID", help=_ID, complete=complete.sessions("all")),
            arg("-f", "--follow", action="store_true", help="keep printing new output"),
            arg("-n", "--lines", type=types.count, default=10,
                help="start this many lines from the end (0 or more)"),
            arg("--from", dest="from_", type=int, metavar="OFFSET", help="start at this byte offset"),
        ),
        examples=("trio-bridge tail -f build", "trio-bridge tail -n 50 dc4c"),
        mesh=True, **_CLIENT,
    ),
    Command(
        "attach", "interactive view of a session; Ctrl-] detaches", "._attach:attach",
        arguments=(arg("id", metavar="ID", help=_ID, complete=complete.sessions("live")),),
        examples=("trio-bridge attach build    # Ctrl-] detaches",),
        without_settings=("computer",),
    ),
    Command(
        "kill", "kill running sessions (-s: send them a signal instead)", "._client:cmd_kill",
        arguments=(
            arg("ids", nargs="+", metavar="ID", help=_IDS, complete=complete.sessions("live")),
            arg("-s", "--signal", metavar="SIGNAL",
                help="send this signal to the command (TERM, INT, HUP, KILL, USR1, ...); it may go on"),
        ),
        examples=("trio-bridge kill build", "trio-bridge kill -s USR1 build"),
        mesh=True, **_CLIENT,
    ),
    Command(
        "rm", "remove ended sessions (record, output, last screen)", "._client:cmd_rm",
        arguments=(
            arg("ids", nargs="+", metavar="ID", help=_IDS, complete=complete.sessions("ended")),
            arg("-f", "--force", action="store_true", help="kill running ones first"),
        ),
        examples=("trio-bridge rm build", "trio-bridge rm -f build    # kills it first"),
        mesh=True, **_CLIENT,
    ),
    Command(
        "clean", "remove every ended session (or those older than --older-than)", "._client:cmd_clean",
        arguments=(
            arg("--older-than", metavar="DURATION", type=types.duration,
                help="only those ended this long ago (30s, 10m, 2h, 7d)"),
            arg("--state", metavar="STATES", type=types.states, complete=complete.states,
                help="only these end states, comma-separated: exited, killed, lost"),
        ),
        examples=("trio-bridge clean --older-than 1d", "trio-bridge clean --state killed,lost"),
        mesh=True, **_CLIENT,
    ),
    Command(
        "wait", "wait for a session to end; exit with its exit code (124: --timeout)", "._follow:cmd_wait",
        arguments=(
            arg("id", metavar="ID", help=_ID, complete=complete.sessions("all")),
            arg("--timeout", type=types.positive_seconds, metavar="SECONDS"),
            arg("--until", metavar="STATES",
                help="wait for the agent's state instead (comma-separated: idle, waiting_for_input, "
                "exited, working, stuck); exit 0 when reached"),
        ),
        examples=(
            "trio-bridge wait build --timeout 600", "trio-bridge wait ID --until idle,waiting_for_input",
        ),
        json=True, mesh=True, **_CLIENT,
    ),
    Command(
        "events", "print session lifecycle events as they happen, until interrupted", "._follow:cmd_events",
        examples=("trio-bridge events --json",),
        json=True, **_CLIENT,
    ),
    Command(
        "status", "whether the daemon is running, and a summary of its sessions", "._show:cmd_status",
        examples=("trio-bridge status",),
        json=True, **_CLIENT,
    ),
    Command(
        "computers", "the computers of the mesh: online/offline, last heartbeat, sessions",
        "._show:cmd_computers",
        examples=("trio-bridge computers",),
        json=True, **_CLIENT,
    ),
    Command(
        "web", "print a single-use login link to the web dashboard (valid 60 s)", "._web:web",
        arguments=(arg("--open", action="store_true", help="also open it in the browser"),),
        examples=("trio-bridge web --open",),
    ),
    Command(
        "completion", "print a shell completion script (bash, zsh or fish)", "._complete:completion",
        arguments=(arg("shell", choices=["bash", "zsh", "fish"]),),
        examples=('eval "$(trio-bridge completion bash)"',),
    ),
)  # fmt: skip

_BY_NAME = {command.name: command for command in COMMANDS}


def command_named(name: str) -> Command | None:
    """The command called ``name``, if there is one."""
    return _BY_NAME.get(name)
