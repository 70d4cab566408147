"""The CLI commands that talk to the daemon: ls, new, send, keys, screen, tail, kill, wait, status.

Each one is a few calls of :class:`trio_bridge.client.Client` (httpx only: the server stack is
never imported). Exit codes: 0 done; 1 the daemon refused (unknown session, ended session,
bad input: its message is printed); 2 usage or configuration; 3 no daemon answers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from ..client import ApiError, Client, DaemonUnavailableError, OutputDroppedError
from ..config import ConfigError, Settings, resolve_settings
from ._resume import EXIT_DAEMON_LOST, DaemonLostError, Reconnect
from ._text import printable

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_TIMEOUT = 124
#: ``prompt``: the busy agent queued the prompt (it will run when its turn ends: do not resend)
EXIT_QUEUED = 4

_COLOURS = {
    "running": "32", "starting": "36", "exited": "0", "killed": "33", "lost": "31",
    # agent states
    "working": "32", "idle": "34", "waiting_for_input": "1;35", "stuck": "1;31", "unknown": "0",
}  # fmt: skip


def _error(message: str) -> None:
    print(f"trio-bridge: {printable(message)}", file=sys.stderr, flush=True)


def _colour(enabled: bool) -> Callable[[str, str], str]:
    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if enabled and code != "0" else text

    return paint


def _use_colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def load_client_settings(flags: Mapping[str, object], config_file: str | None) -> Settings:
    return resolve_settings(
        flags=flags, config_file=Path(config_file).expanduser() if config_file else None
    ).settings


def _import_httpcore_without_async_libraries() -> None:
    """Import httpcore without letting it import trio, anyio and h2.

    httpcore imports them when installed: trio and anyio for its async locks, h2 for HTTP/2.
    That costs ~180 ms of a command's start-up (measured: ``ls`` 480 -> 300 ms). These
    commands are synchronous, speak HTTP/1.1, and never use httpcore's async side in this
    process. Skipped when any of them is already loaded.
    """
    blocked = ("trio", "anyio", "h2")
    if any(name in sys.modules for name in ("httpcore", *blocked)):
        return
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # so `import name` raises ImportError
    try:
        import httpcore  # noqa: F401
    finally:
        for name in blocked:
            del sys.modules[name]


def run_client_command(args: argparse.Namespace, flags: Mapping[str, object]) -> int:
    """Dispatch one client command; translate failures into messages and exit codes."""
    _import_httpcore_without_async_libraries()
    try:
        settings = load_client_settings(flags, getattr(args, "config", None))
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    command = _COMMANDS[args.command]
    args.resolved_settings = settings
    try:
        with Client(
            settings.api_socket, settings.url, settings.client_token(), getattr(args, "computer", None),
            reconnect_timeout=settings.reconnect_timeout,
        ) as client:  # fmt: skip
            if getattr(args, "id", None) is not None:
                args.id = resolve_id(client, args.id)
            if getattr(args, "ids", None):
                args.ids = [resolve_id(client, i) for i in args.ids]
            return command(client, args)
    except DaemonUnavailableError as exc:
        _error(str(exc))
        return EXIT_UNAVAILABLE
    except DaemonLostError as exc:
        _error(str(exc))
        return EXIT_DAEMON_LOST
    except ApiError as exc:
        _error(exc.message)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `trio-bridge tail ... | head`: the reader went away; exit as a shell pipeline would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def resolve_id(client: Client, ref: str) -> str:
    """The session ``ref`` names: an id, a name (``new --name``), or a unique prefix of an id
    (as docker's), in that order. Raises
    ApiError: no such session, or a prefix that several ids share (they are listed)."""
    if getattr(client, "computer", None) == "*":
        return ref
    sessions = client.sessions()
    ids = [str(s["id"]) for s in sessions]
    if ref in ids:
        return ref
    named = [str(s["id"]) for s in sessions if s.get("name") == ref]
    if named:
        return named[0]  # names are unique
    matches = [i for i in ids if i.startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ApiError(
            409, "ambiguous_id", f"{ref!r} is the start of several sessions: {', '.join(sorted(matches))}"
        )
    return ref  # the daemon's "no session" answer, as for any unknown id


# -- formatting --------------------------------------------------------------------------------


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _exit_text(session: Mapping[str, Any]) -> str:
    if session.get("exit_signal"):
        import signal

        try:
            return signal.Signals(session["exit_signal"]).name
        except ValueError:
            return f"signal {session['exit_signal']}"
    code = session.get("exit_code")
    return "" if code is None else str(code)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def exit_status(session: Mapping[str, Any]) -> int:
    """The exit code a command reports for an ended session (as ``run``: 128+N for signal N)."""
    if session.get("exit_signal"):
        return 128 + int(session["exit_signal"])
    code = session.get("exit_code")
    return int(code) if code is not None else EXIT_REFUSED


# -- commands ----------------------------------------------------------------------------------


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    sessions = client.sessions([s.strip() for s in (args.state or "").split(",") if s.strip()])
    if args.quiet:
        for session in sessions:
            print(printable(session["id"]))
        return 0
    if args.format is not None:
        for session in sessions:
            print(_formatted(args.format, session))
        return 0
    if args.json:
        _print_json(sessions)
        return 0
    if not sessions:
        print("no sessions", file=sys.stderr)
        return 0
    paint = _colour(_use_colour())
    now = time.time()
    rows = [
        (printable(s["id"]), printable(_state_text(s)), _exit_text(s), _age(now - s["created_at"]),
         printable(f"[{s['name']}] {s['title']}" if s.get("name") else s["title"]))
        for s in sessions
    ]  # fmt: skip
    header = ("ID", "STATE", "EXIT", "AGE", "TITLE")
    if args.computer == "*":
        rows = [
            (printable(f"{s['computer']}:{s['id']}"), *row[1:]) for s, row in zip(sessions, rows, strict=True)
        ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    title_width = max(10, _terminal_width() - sum(widths) - 8)
    print(paint("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + "  TITLE", "1"))
    for row in rows:
        colour = _COLOURS.get(row[1].split(":")[-1], "0")
        cells = [row[0].ljust(widths[0]), paint(row[1].ljust(widths[1]), colour)]
        cells += [row[2].ljust(widths[2]), row[3].ljust(widths[3])]
        title = row[4] if len(row[4]) <= title_width else row[4][: title_width - 1] + "…"
        print("  ".join(cells) + "  " + title)
    return 0


def _formatted(template: str, session: Mapping[str, Any]) -> str:
    """``template`` with each ``{field}`` replaced by the session's field (printable; empty when
    unset). Only plain field names: not str.format, whose ``{x.attr}``/``{x[i]}`` reach further."""
    import re

    def field(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in session:
            raise ApiError(
                422, "invalid_format", f"--format: no field {name!r} (fields: {', '.join(session)})"
            )
        value = session[name]
        return (
            ""
            if value is None
            else printable(" ".join(map(str, value)) if isinstance(value, list) else str(value))
        )

    return re.sub(r"\{([a-z_]+)\}", field, template.replace("\\t", "\t"))


def _state_text(session: Mapping[str, Any]) -> str:
    """``running``, or for a running agent session ``claude:waiting_for_input``."""
    if session.get("agent") and session.get("agent_state") and session["state"] == "running":
        return f"{session['agent']}:{session['agent_state']}"
    return str(session["state"])


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 1000


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ApiError(422, "invalid_env", f"--env expects NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


def cmd_new(client: Client, args: argparse.Namespace) -> int:
    from ..runner import pane_environment

    command = list(args.cmd)
    if command[:1] == ["--"]:
        command = command[1:]
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
    env = _env_pairs(args.env) if remote else pane_environment(_env_pairs(args.env))
    if command and not agent_args and not remote:
        # as `run` does, before anything is created: no session that can only end 127
        from ._preflight import StartFailed, check_command

        try:
            check_command(command[0], Path(cwd or os.getcwd()), env.get("PATH"))
        except StartFailed as exc:
            _error(str(exc))
            return exc.code
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
        _print_json(session)
    else:
        print(session["id"])
    return 0


def cmd_prompt(client: Client, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == ["-"] else " ".join(args.text)
    if args.text == ["-"]:
        text = text.removesuffix("\n")  # the file's last line end is not part of the prompt
    queued = client.prompt(args.id, text)
    if queued is not None:
        _error(queued)
        return EXIT_QUEUED
    return 0


def cmd_send(client: Client, args: argparse.Namespace) -> int:
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

    send_bytes(args.resolved_settings, args.id, data + (b"" if args.no_enter else b"\r"))
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


def cmd_keys(client: Client, args: argparse.Namespace) -> int:
    client.send_keys(args.id, args.keys)
    return 0


def cmd_screen(client: Client, args: argparse.Namespace) -> int:
    screen = client.screen(args.id)
    if args.json:
        _print_json(screen)
    else:
        sys.stdout.write(screen["text"].rstrip("\n") + "\n")
    return 0


class _Out:
    """Output bytes to our stdout: as they are on a terminal, plain text (no escapes) otherwise."""

    def __init__(self) -> None:
        self._plain = None
        if not sys.stdout.isatty():
            from .._terminal import PlainText

            self._plain = PlainText()

    def write(self, data: bytes) -> None:
        if self._plain is not None:
            data = self._plain.feed(data)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def close(self) -> None:
        if self._plain is not None:
            sys.stdout.buffer.write(self._plain.flush())
        sys.stdout.buffer.flush()


def _last_lines_offset(client: Client, session_id: str, lines: int) -> int:
    """The offset where the last ``lines`` lines of the output begin; of what the log keeps,
    when the output passed ``output_max_bytes`` (saying on stderr that earlier output was
    dropped)."""
    first = 0
    try:
        _, _, end, _ = client.output(session_id, 0, 1)
    except OutputDroppedError as exc:
        if exc.first_offset is None:
            raise
        first = exc.first_offset
        _error(f"output before byte {first} was dropped (the log keeps the last output_max_bytes)")
        _, _, end, _ = client.output(session_id, first, 1)
    window = 1 << 16
    while True:
        start = max(first, end - window)
        data, _, _, _ = client.output(session_id, start, min(window, 1 << 20))
        # A trailing newline ends the last line rather than starting a new one.
        cut = len(data)
        for _ in range(lines + 1 if data.endswith(b"\n") else lines):
            cut = data.rfind(b"\n", 0, cut)
            if cut < 0:
                break
        if cut >= 0 or start == first or window >= 1 << 20:
            return start + cut + 1 if cut >= 0 else start
        window *= 4


def cmd_tail(client: Client, args: argparse.Namespace) -> int:
    out = _Out()
    offset = args.from_ if args.from_ is not None else _last_lines_offset(client, args.id, args.lines)
    try:
        if not args.follow:
            while True:
                try:
                    data, offset, end, _ = client.output(args.id, offset, 1 << 20)
                except OutputDroppedError as exc:
                    # (--from an offset no longer kept, or trimmed while we read)
                    if exc.first_offset is None or exc.first_offset <= offset:
                        raise
                    _error(f"output from {offset} was dropped; continuing at {exc.first_offset}")
                    offset = exc.first_offset
                    continue
                out.write(data)
                if not data or offset >= end:
                    return 0
        reconnect = Reconnect(client.reconnect_timeout, f"following session {args.id}")
        while True:
            reason: object = "the stream ended"
            try:
                for event in client.stream(args.id, offset, on_open=reconnect.connected):
                    if event.event == "output":
                        out.write(event.json()["data"].encode())
                        offset = int(event.id or offset)
                    elif event.event == "resync":
                        _error(f"output from {offset} was dropped; continuing at {event.json()['offset']}")
                        offset = int(event.json()["offset"])
                    elif event.event == "end":
                        return 0
                    elif event.event == "shutdown":
                        reason = "it is shutting down"
                        break
            except (ApiError, DaemonUnavailableError, httpx.TransportError) as exc:
                reason = reconnect.why_lost(exc)
            # The daemon stopped or the connection dropped: resume where we were.
            time.sleep(reconnect.lost(reason))
    finally:
        out.close()


def cmd_kill(client: Client, args: argparse.Namespace) -> int:
    status = 0
    for session_id in args.ids:
        try:
            if args.signal is not None:
                client.signal(session_id, args.signal.upper())
                continue
            session = client.kill(session_id)
        except ApiError as exc:
            _error(exc.message)
            status = EXIT_REFUSED
            continue
        print(f"{session['id']} {session['state']}")
    return status


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    until = [s for s in (args.until or "").split(",") if s]
    reconnect = Reconnect(client.reconnect_timeout, f"waiting for session {args.id}")
    while True:
        remaining = 60.0 if deadline is None else max(0.0, min(60.0, deadline - time.monotonic()))
        try:
            result = client.wait(args.id, remaining, until)
        except (ApiError, DaemonUnavailableError, httpx.TransportError) as exc:
            # The daemon restarts: ask again (the session goes on meanwhile).
            time.sleep(reconnect.lost(reconnect.why_lost(exc)))
            continue
        reconnect.connected()
        if until and result.get("reached"):
            # The agent is in one of the states asked for: 0 (the session may go on).
            if args.json:
                _print_json(result["session"])
            else:
                print(result["session"].get("agent_state") or result["session"]["state"])
            return 0
        if until and result["ended"]:
            _error(
                f"session {args.id} ended ({result['session']['state']}) "
                f"before its agent was {' or '.join(until)}"
            )
            return EXIT_REFUSED
        if result["ended"]:
            session = result["session"]
            if args.json:
                _print_json(session)
            return exit_status(session)
        if deadline is not None and time.monotonic() >= deadline:
            what = f"not {' or '.join(until)} yet" if until else "still running"
            _error(f"session {args.id} is {what}")
            return EXIT_TIMEOUT


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    """Lifecycle events, one line each (``KIND ID STATE TITLE``; ``--json``: the API's event
    object), until interrupted; reconnecting (and resuming after the last event) like ``tail
    -f``. ``resync``: events may have been missed (the daemon could not replay them all)."""
    reconnect = Reconnect(client.reconnect_timeout, "following events")
    last_id: str | None = None
    while True:
        reason: object = "the stream ended"
        cut_off = False
        try:
            for event in client.events(last_id, on_open=reconnect.connected):
                if event.event == "shutdown":
                    reason = "it is shutting down"
                    break
                if event.event == "overflow":
                    # We fell behind (or the daemon's session manager restarted): ask again
                    # from the last event we printed.
                    cut_off = True
                    break
                if event.event == "resync":
                    _error("events: resync (some may have been missed: see trio-bridge ls)")
                    continue
                last_id = event.id or last_id
                if args.json:
                    print(event.data, flush=True)
                    continue
                data = event.json()
                session = data["session"]
                state = data.get("agent") or session["state"]
                title = " ".join(str(session["title"]).split())  # one line per event
                print(f"{event.event} {session['id']} {state} {title}", flush=True)
        except (ApiError, DaemonUnavailableError, httpx.TransportError) as exc:
            reason = reconnect.why_lost(exc)
        if cut_off:
            time.sleep(0.05)
            continue
        time.sleep(reconnect.lost(reason))


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    version = client.version()
    sessions = client.sessions()
    counts: dict[str, int] = {}
    for session in sessions:
        counts[session["state"]] = counts.get(session["state"], 0) + 1
    if args.json:
        _print_json({"running": True, "at": client.where, **version, "sessions": counts})
        return 0
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no sessions"
    print(f"daemon: running, trio-bridge {version['version']} (API {version['api']}) at {client.where}")
    print(f"sessions: {summary}")
    return 0


def cmd_computers(client: Client, args: argparse.Namespace) -> int:
    found = client.computers()
    if args.json:
        _print_json(found)
        return 0
    paint = _colour(_use_colour())
    # Every field came through Redis: escaped, so that no name can drive the terminal.
    rows = [
        (
            printable(str(c["name"])) + (" (this)" if c["local"] else ""),
            "online" if c["online"] else "offline",
            _age(c["age"]),
            printable(str(c["sessions"])),
            printable(str(c["version"])),
            printable(str(c["host"])),
        )
        for c in found["computers"]
    ]
    header = ("NAME", "STATE", "SEEN", "SESSIONS", "VERSION", "HOST")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(paint("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(), "1"))
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        cells[1] = paint(cells[1], "32" if row[1] == "online" else "31")
        print("  ".join(cells).rstrip())
    if not found["mesh"]:
        print("(no mesh: start the daemon with --redis URL to join one)", file=sys.stderr)
    elif found.get("signed"):
        print("mesh: signed (messages carry the mesh secret's HMAC)", file=sys.stderr)
    else:
        print(
            "mesh: NOT signed (no mesh_secret): anyone who can write to its Redis can run commands here",
            file=sys.stderr,
        )
    return 0


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    status = 0
    for session_id in args.ids:
        try:
            if args.force and client.get(session_id)["state"] in ("starting", "running"):
                client.kill(session_id)
            client.remove(session_id)
        except ApiError as exc:
            _error(exc.message + (" (rm -f kills it)" if exc.code == "session_running" else ""))
            status = EXIT_REFUSED
            continue
        print(session_id)
    return status


def cmd_clean(client: Client, args: argparse.Namespace) -> int:
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
            _error(exc.message)
            status = EXIT_REFUSED
            continue
        print(printable(session["id"]))
    return status


_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "ls": cmd_ls,
    "new": cmd_new,
    "send": cmd_send,
    "keys": cmd_keys,
    "screen": cmd_screen,
    "tail": cmd_tail,
    "kill": cmd_kill,
    "rm": cmd_rm,
    "clean": cmd_clean,
    "wait": cmd_wait,
    "events": cmd_events,
    "prompt": cmd_prompt,
    "status": cmd_status,
    "computers": cmd_computers,
}
