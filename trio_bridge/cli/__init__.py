"""The ``trio-bridge`` command line.

Parsing uses only the standard library; each command imports what it needs
when it runs, so start-up stays fast (``--help`` does not even import Trio).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from . import _complete

__all__ = ["main"]


def _settings_parser(*, exclude: tuple[str, ...] = ()) -> argparse.ArgumentParser:
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
                setting.flag, dest=_dest(setting.name), action="store_const", const="true",
                default=argparse.SUPPRESS, help=setting.help,
            )  # fmt: skip
            continue
        group.add_argument(
            setting.flag,
            dest=_dest(setting.name),
            metavar="VALUE",
            default=argparse.SUPPRESS,
            help=setting.help,
        )
    return parent


def _dest(name: str) -> str:
    return "setting__" + name.replace(".", "__")


def settings_flags(args: argparse.Namespace) -> dict[str, object]:
    """The settings given as flags, by setting name."""
    from ..config import SETTINGS

    return {s.name: getattr(args, _dest(s.name)) for s in SETTINGS if hasattr(args, _dest(s.name))}


class _OnlyCommand:
    """Adds only the subparser of the command being run (all of them, each with every settings
    flag, cost ~20 ms of every command's start-up); ``only=None`` adds them all (help, errors)."""

    def __init__(self, commands: Any, only: str | None) -> None:
        self._commands = commands
        self._only = only

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if self._only is None or name == self._only:
            if name in _EXAMPLES:
                import textwrap

                # raw text (the examples keep their lines), so the description is wrapped here
                description = kwargs.get("description") or kwargs.get("help") or ""
                kwargs["description"] = textwrap.fill(description, width=78)
                kwargs["epilog"] = "example:\n" + "\n".join(f"  {line}" for line in _EXAMPLES[name])
                kwargs["formatter_class"] = argparse.RawDescriptionHelpFormatter
            return self._commands.add_parser(name, **kwargs)  # type: ignore[no-any-return]
        return argparse.ArgumentParser(add_help=False)  # not used


#: one or two examples per command, shown at the end of its --help
_EXAMPLES = {
    "daemon": ["trio-bridge daemon --log-format json"],
    "config": ["trio-bridge config"],
    "run": ["trio-bridge run --timeout 60 -- make test", "echo hi | trio-bridge run -- cat"],
    "ls": [
        "trio-bridge ls --state running",
        "trio-bridge kill $(trio-bridge ls -q --state running)",
        "trio-bridge ls --format '{id} {state} {title}'",
    ],
    "new": [
        "trio-bridge new --name build -- make",
        "trio-bridge new --agent claude --prompt 'fix the tests'",
    ],
    "send": ["trio-bridge send build 'print(6*7)'", "trio-bridge send build - < script.txt"],
    "prompt": ["trio-bridge prompt ID 'now run the tests'"],
    "keys": ["trio-bridge keys build C-c", "trio-bridge keys top q", "trio-bridge keys emacs M-x"],
    "screen": ["trio-bridge screen build"],
    "tail": ["trio-bridge tail -f build", "trio-bridge tail -n 50 dc4c"],
    "attach": ["trio-bridge attach build    # Ctrl-] detaches"],
    "kill": ["trio-bridge kill build", "trio-bridge kill -s USR1 build"],
    "rm": ["trio-bridge rm build", "trio-bridge rm -f build    # kills it first"],
    "clean": ["trio-bridge clean --older-than 1d", "trio-bridge clean --state killed,lost"],
    "wait": ["trio-bridge wait build --timeout 600", "trio-bridge wait ID --until idle,waiting_for_input"],
    "events": ["trio-bridge events --json"],
    "status": ["trio-bridge status"],
    "computers": ["trio-bridge computers"],
    "completion": ['eval "$(trio-bridge completion bash)"'],
    "web": ["trio-bridge web --open"],
}

COMMANDS = (
    "daemon", "config", "run", "ls", "new", "send", "prompt", "keys", "screen", "tail", "attach", "kill",
    "rm", "clean", "wait", "events", "status", "computers", "completion", "web",
)  # fmt: skip


def _command_in(argv: Sequence[str]) -> str | None:
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
            return arg if arg in COMMANDS else None
    return None


def _build_parser(only: str | None = None) -> argparse.ArgumentParser:
    settings = _settings_parser()
    from ._usage import Parser

    parser = Parser(
        prog="trio-bridge",
        description="Run and supervise terminal sessions in tmux.",
        parents=[settings],
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"trio-bridge {__version__}")
    all_commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    all_commands.required = True
    commands: Any = _OnlyCommand(all_commands, only)

    commands.add_parser(
        "daemon",
        parents=[settings],
        help="run the daemon in the foreground (sessions survive its restarts)",
    )

    config = commands.add_parser(
        "config",
        parents=[settings],
        help="print the effective configuration and where each value came from",
    )
    config.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    run = commands.add_parser(
        "run",
        parents=[settings],
        help="run a command as a managed tmux session and exit with its exit code",
        description=(
            "Start CMD in a new managed tmux session, stream its output live, and exit "
            "with CMD's exit code: 128+N if a signal N killed it, 124 if --timeout "
            "expired, 130 on Ctrl-C, 127/126 if CMD cannot be found/executed, and 125 "
            "if trio-bridge itself could not start it."
        ),
    )
    run.add_argument("--cwd", metavar="DIR", help="working directory (default: the current one)")
    run.add_argument(
        "--env",
        metavar="K=V",
        action="append",
        default=[],
        help="set an environment variable for CMD (repeatable)",
    )
    run.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        help="stop CMD after this many seconds and exit with 124",
    )
    run.add_argument(
        "--keep",
        action="store_true",
        help="keep the session after CMD ends: through the daemon it stays in ls (screen, tail, rm); "
        "embedded, its tmux session stays for tmux attach",
    )
    run.add_argument(
        "--embedded",
        action="store_true",
        help="run without the daemon even if one is running (the session is not in `ls`)",
    )
    _agent_flags(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    # In client commands --computer names the session's computer, not this daemon's name.
    if only is None or only in _CLIENT_COMMANDS | {"attach"}:
        _add_client_commands(commands, _settings_parser(exclude=("computer",)))
    web = commands.add_parser(
        "web", parents=[settings], help="print a single-use login link to the web dashboard (valid 60 s)"
    )
    web.add_argument("--open", action="store_true", help="also open it in the browser")
    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash, zsh or fish)", parents=[settings]
    )
    completion.add_argument("shell", choices=["bash", "zsh", "fish"])
    return parser


def _add_client_commands(commands: Any, settings: argparse.ArgumentParser) -> None:
    """The commands that talk to a running daemon (see ``_client.py``)."""
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="JSON output, for scripts")

    on_computer = argparse.ArgumentParser(add_help=False)
    _complete.attach(
        on_computer.add_argument(
            "--computer", metavar="NAME", help="the session's computer in the mesh (default: this one)"
        ),
        _complete.computers,
    )

    def add(name: str, help: str, *, json: bool = True, mesh: bool = True) -> argparse.ArgumentParser:
        parents = [settings] + ([json_flag] if json else []) + ([on_computer] if mesh else [])
        return commands.add_parser(name, help=help, parents=parents)  # type: ignore[no-any-return]

    ls = add("ls", "list sessions (--computer '*': on every computer of the mesh)")
    _complete.attach(
        ls.add_argument(
            "--state",
            metavar="STATES",
            type=_states,
            help="only these states, comma-separated: starting, running, exited, killed, lost",
        ),
        _complete.states,
    )
    ls.add_argument("-q", "--quiet", action="store_true", help="only the ids, one a line (for scripts)")
    ls.add_argument(
        "--format", metavar="TEMPLATE",
        help="one line per session from TEMPLATE: {id} {name} {state} {exit_code} {title} {agent} "
        "{agent_state} {computer} {cwd} ... (any field of --json), e.g. '{id} {state}'",
    )  # fmt: skip

    new = add("new", "start a session in the daemon and print its id")
    new.add_argument("--cwd", metavar="DIR", help="working directory (default: the current one)")
    new.add_argument("--env", metavar="K=V", action="append", default=[], help="set a variable (repeatable)")
    new.add_argument("--title", help="a title shown by ls")
    new.add_argument(
        "--name", metavar="NAME", type=_session_name,
        help="a unique name to use instead of the id (a letter, then letters, digits, _ . -)",
    )  # fmt: skip
    new.add_argument("--shell", metavar="CMDLINE", help="run CMDLINE with /bin/sh -c instead of CMD")
    new.add_argument("--width", type=_size, default=None, help="terminal columns, 2 to 1000 (default 80)")
    new.add_argument("--height", type=_size, default=None, help="terminal rows, 2 to 1000 (default 24)")
    _agent_flags(new)
    new.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")

    prompt = add("prompt", "submit a prompt to a session's agent, verified (paste, Enter, check)", json=False)
    _complete.attach(
        prompt.add_argument("id", metavar="ID", help="a session id, its name, or a unique prefix of its id"),
        _complete.sessions("live"),
    )
    prompt.add_argument("text", nargs="+", metavar="TEXT", help="words joined by spaces; '-' reads stdin")

    send = add("send", "type text into a session, then Enter", json=False)
    _complete.attach(
        send.add_argument("id", metavar="ID", help="a session id, its name, or a unique prefix of its id"),
        _complete.sessions("live"),
    )
    send.add_argument("text", nargs="+", metavar="TEXT", help="words joined by spaces; '-' reads stdin")
    send.add_argument("--no-enter", action="store_true", help="do not press Enter after the text")

    keys = add(
        "keys", "press keys in a session, as tmux send-keys (q, Enter, C-c, M-x, PgUp, ...)", json=False
    )
    _complete.attach(
        keys.add_argument("id", metavar="ID", help="a session id, its name, or a unique prefix of its id"),
        _complete.sessions("live"),
    )
    keys.add_argument(
        "keys", nargs="+", metavar="KEY",
        help="one character, or a tmux key name (Enter Escape Tab BTab Space BSpace Up Down Left Right "
        "Home End PgUp PgDn Insert Delete F1-F12 KP0-KP9 ...), with C- (Ctrl), M- (Alt), S- (Shift)",
    )  # fmt: skip

    screen = add("screen", "print a session's rendered screen")
    _complete.attach(
        screen.add_argument("id", metavar="ID", help="a session id, its name, or a unique prefix of its id"),
        _complete.sessions("all"),
    )

    tail = add("tail", "print a session's output (-f: follow it until it ends)", json=False)
    _complete.attach(
        tail.add_argument("id", metavar="ID", help="a session id, its name, or a unique prefix of its id"),
        _complete.sessions("all"),
    )
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    tail.add_argument(
        "-n", "--lines", type=_count, default=10, help="start this many lines from the end (0 or more)"
    )
    tail.add_argument("--from", dest="from_", type=int, metavar="OFFSET", help="start at this byte offset")

    attach = add("attach", "interactive view of a session; Ctrl-] detaches", json=False, mesh=False)
    _complete.attach(
        attach.add_argument("id", metavar="ID", help="a session id, its name, or a unique prefix of its id"),
        _complete.sessions("live"),
    )

    kill = add("kill", "kill running sessions (-s: send them a signal instead)", json=False)
    _complete.attach(
        kill.add_argument("ids", nargs="+", metavar="ID", help="session ids, names, or unique id prefixes"),
        _complete.sessions("live"),
    )
    kill.add_argument(
        "-s", "--signal", metavar="SIGNAL",
        help="send this signal to the command (TERM, INT, HUP, KILL, USR1, ...); it may go on",
    )  # fmt: skip

    rm = add("rm", "remove ended sessions (record, output, last screen)", json=False)
    _complete.attach(
        rm.add_argument("ids", nargs="+", metavar="ID", help="session ids, names, or unique id prefixes"),
        _complete.sessions("ended"),
    )
    rm.add_argument("-f", "--force", action="store_true", help="kill running ones first")

    clean = add("clean", "remove every ended session (or those older than --older-than)", json=False)
    clean.add_argument(
        "--older-than", metavar="DURATION", type=_duration,
        help="only those ended this long ago (30s, 10m, 2h, 7d)",
    )  # fmt: skip
    _complete.attach(
        clean.add_argument(
            "--state",
            metavar="STATES",
            type=_states,
            help="only these end states, comma-separated: exited, killed, lost",
        ),
        _complete.states,
    )

    wait = add("wait", "wait for a session to end; exit with its exit code (124: --timeout)")
    _complete.attach(
        wait.add_argument("id", metavar="ID", help="a session id, its name, or a unique prefix of its id"),
        _complete.sessions("all"),
    )
    wait.add_argument("--timeout", type=_positive_seconds, metavar="SECONDS")
    wait.add_argument(
        "--until",
        metavar="STATES",
        help="wait for the agent's state instead (comma-separated: idle, waiting_for_input, "
        "exited, working, stuck); exit 0 when reached",
    )

    add("events", "print session lifecycle events as they happen, until interrupted", mesh=False)
    add("status", "whether the daemon is running, and a summary of its sessions", mesh=False)
    add("computers", "the computers of the mesh: online/offline, last heartbeat, sessions", mesh=False)


def _agent_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AI coding agents (what follows -- is extra arguments for the agent)")
    _complete.attach(
        group.add_argument(
            "--agent", metavar="NAME", help="run this agent profile (claude, codex, gemini, ...)"
        ),
        _complete.agents,
    )
    group.add_argument("--model", metavar="MODEL", help="the agent's model")
    group.add_argument("--prompt", metavar="TEXT", help="a prompt submitted at start")
    _complete.attach(
        group.add_argument("--resume", metavar="ID", help="resume the agent conversation of session ID"),
        _complete.sessions(),
    )


def _positive_seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


_STATES = ("starting", "running", "exited", "killed", "lost")


def _states(text: str) -> str:
    """A comma-separated list of session states (a usage error otherwise, with a suggestion)."""
    import difflib

    for state in (s.strip() for s in text.split(",") if s.strip()):
        if state not in _STATES:
            close = difflib.get_close_matches(state, _STATES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (one of {', '.join(_STATES)})"
            raise argparse.ArgumentTypeError(f"no state {state!r}{hint}")
    return text


def _session_name(text: str) -> str:
    import re

    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a session name: a letter, then up to 63 letters, digits, _ . or -"
        )
    return text


def _size(text: str) -> int:
    value = _count(text)
    if not 2 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected 2 to 1000, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30s, 10m, 2h or 7d, got {text!r}"
        ) from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a duration such as 30s, 10m, 2h or 7d, got {text!r}")
    return value


def _config_path(args: argparse.Namespace) -> Path | None:
    value = getattr(args, "config", None)
    return Path(value).expanduser() if value else None


_CLIENT_COMMANDS = {
    "ls", "new", "send", "prompt", "keys", "screen", "tail", "kill", "rm", "clean", "wait", "events",
    "status", "computers",
}  # fmt: skip


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
    completing = "_ARGCOMPLETE" in os.environ
    parser = _build_parser(None if completing else _command_in(args_list))
    if completing:  # a shell asks for completions (see `completion`)
        import argcomplete

        argcomplete.autocomplete(parser, always_complete_options=False)  # `kill <Tab>`: ids, not flags
    args = parser.parse_args(args_list)
    if args.command in _CLIENT_COMMANDS:
        from ._client import run_client_command

        return run_client_command(args, settings_flags(args))
    if args.command == "attach":
        from ._attach import attach

        return attach(args, settings_flags(args))
    if args.command == "web":
        from ._web import web

        return web(args, settings_flags(args))
    if args.command == "completion":
        from argcomplete.shell_integration import shellcode

        print(shellcode(["trio-bridge"], shell=args.shell))
        return 0
    if args.command == "run":
        cmd = list(args.cmd)
        if cmd[:1] == ["--"]:
            cmd = cmd[1:]
        if args.agent is not None or args.resume is not None:
            from ._run import run_agent

            return run_agent(
                args.agent, model=args.model, prompt=args.prompt, resume=args.resume, extra_args=cmd,
                cwd=args.cwd, env_pairs=args.env, flags=settings_flags(args),
                config_file=getattr(args, "config", None),
            )  # fmt: skip
        if args.model is not None or args.prompt is not None:
            parser.error("run: --model and --prompt need --agent")
        if not cmd:
            parser.error("run: a command is required, e.g. trio-bridge run -- ls -l")
        from ._run import run_command

        return run_command(
            cmd,
            cwd=args.cwd,
            env_pairs=args.env,
            timeout=args.timeout,
            keep=args.keep,
            embedded=args.embedded,
            flags=settings_flags(args),
            config_file=getattr(args, "config", None),
        )
    if args.command == "daemon":
        from ..config import ConfigError, resolve_settings

        try:
            settings = resolve_settings(flags=settings_flags(args), config_file=_config_path(args)).settings
        except ConfigError as exc:
            print(f"trio-bridge: {exc}", file=sys.stderr)
            return 2
        from ..daemon import run_daemon

        return run_daemon(settings)
    if args.command == "config":
        from ._config import show_config

        return show_config(settings_flags(args), getattr(args, "config", None), as_json=args.json)
    parser.error(f"unknown command {args.command!r}")  # argparse exits; never reached
    return 2


if __name__ == "__main__":
    sys.exit(main())
