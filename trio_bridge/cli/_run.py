"""``trio-bridge run``: exit codes, pre-flight checks and the terminal side of a run."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ._context import after_dashes
from ._exit import EXIT_DAEMON_LOST, EXIT_START_FAILED, EXIT_TIMEOUT, EXIT_USAGE, exit_status
from ._preflight import StartFailed, check_command, env_pairs
from ._text import Out, error

if TYPE_CHECKING:
    import httpx

    from ..config import Settings
    from ._context import Invocation

__all__ = ["run"]

#: settings of the tmux server a session runs on: the daemon's own when `run` goes through it
_DAEMON_SIDE = ("tmux_socket", "tmux_binary")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: seconds after our stdin's connection dropped within which a session that ends explains it
_ENDED_WITHIN = 2.0


def run(invocation: Invocation) -> int:
    """``trio-bridge run``: CMD (or with ``--agent``/``--resume`` an agent) as a session; returns
    the process exit code (see the command's --help)."""
    args = invocation.args
    cmd = after_dashes(args.cmd)
    if args.agent is not None or args.resume is not None:
        return _run_agent(invocation, cmd)
    if args.model is not None or args.prompt is not None:
        invocation.usage_error("run: --model and --prompt need --agent")
    if not cmd:
        invocation.usage_error("run: a command is required, e.g. trio-bridge run -- ls -l")
    return _run_command(invocation, cmd)


def _run_command(invocation: Invocation, cmd: list[str]) -> int:
    """``trio-bridge run -- CMD``: through the daemon when one answers (the session then shows in
    ``ls`` and can be attached while it runs), else embedded: on trio-bridge's tmux server, in
    this process."""
    args, settings, flags = invocation.args, invocation.settings, invocation.flags
    timeout, keep = args.timeout, args.keep
    try:
        workdir = _workdir(args.cwd)
        from ..runner import pane_environment

        env = pane_environment(env_pairs(args.env))
        check_command(cmd[0], workdir, env.get("PATH"))
        stdin_tty = os.isatty(sys.stdin.fileno())
        interactive = stdin_tty and os.isatty(sys.stdout.fileno())
        # --keep through the daemon: its sessions stay listed after they end (ls, screen, tail) until rm
        if not args.embedded and _daemon_answers(settings):
            given = [name for name in _DAEMON_SIDE if flags.get(name) is not None]
            if given:
                flag = "--" + given[0].replace("_", "-")
                error(f"{flag} cannot apply to a run through the daemon (it uses its own tmux): "
                      "give it to the daemon, or add --embedded")  # fmt: skip
                return EXIT_USAGE
            body: dict[str, object] = {"command": cmd, "cwd": str(workdir), "env": env, **_terminal_size()}
            if stdin_tty:
                return trio.run(_run_via_daemon, settings, body, timeout, interactive)
            # the daemon's stdin pipe, fed over the API: the daemon may be on another computer
            from ._stdin import title_of

            body.update(stdin="pipe", title=title_of(cmd))
            return trio.run(_run_via_daemon, settings, body, timeout, False, True)
        if shutil.which(settings.tmux_binary) is None:
            raise StartFailed(
                f"tmux is not installed ({settings.tmux_binary!r} not found); "
                "install it, e.g. apt-get install tmux"
            )
    except StartFailed as exc:
        error(str(exc))
        return exc.code
    if stdin_tty:
        return trio.run(_run, settings, cmd, workdir, env, timeout, keep, None, interactive)
    from ._stdin import stdin_fifo

    with stdin_fifo() as fifo:
        return trio.run(_run, settings, cmd, workdir, env, timeout, keep, fifo)


@asynccontextmanager
async def _stop_on_signals(time_limit: float | None) -> AsyncIterator[list[int]]:
    """A block cancelled by the first SIGINT/SIGTERM/SIGHUP (recorded in the yielded list) or
    when ``time_limit`` seconds have passed (nothing recorded: the caller's 124)."""
    stopped_by: list[int] = []
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    stopped_by.append(signum)
                    scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            with trio.CancelScope() as scope:
                if time_limit is not None:
                    scope.deadline = trio.current_time() + time_limit
                yield stopped_by
            nursery.cancel_scope.cancel()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


async def _run(
    settings: Settings,
    cmd: list[str],
    workdir: Path,
    env: dict[str, str],
    time_limit: float | None,
    keep: bool,
    stdin_fifo: Path | None = None,
    interactive: bool = False,
) -> int:
    from ..process import SubprocessError
    from ..runner import run_session
    from ..tmux import TmuxError, TmuxServer

    server = TmuxServer(
        socket_name=settings.tmux_socket,
        binary=settings.tmux_binary,
        config_path=settings.state_dir / "tmux.conf",
        timeouts=settings.timeouts,
    )
    stopped_by: list[int] = []
    stdout = Out()
    result = None
    failure: list[int] = []
    size = _terminal_size()
    try:
        async with _stop_on_signals(time_limit) as stopped_by, trio.open_nursery() as nursery:
            if stdin_fifo is not None:
                from ._stdin import feed_stdin

                nursery.start_soon(feed_stdin, stdin_fifo)
            session_name: list[str] = []
            named = trio.Event()

            def started(name: str) -> None:
                session_name.append(name)
                named.set()

            if interactive:

                async def keyboard() -> None:
                    await named.wait()
                    if await _type_keys(server, session_name[0]):
                        stopped_by.append(signal.SIGINT)  # Ctrl-]: stop, as Ctrl-C would
                        run_scope.cancel()

                async def follow_size() -> None:
                    await named.wait()
                    await _follow_terminal_size(server, session_name[0], size)

                nursery.start_soon(keyboard)
                nursery.start_soon(follow_size)
            with trio.CancelScope() as run_scope:
                result = await run_session(
                    server,
                    cmd,
                    cwd=workdir,
                    env=env,
                    write=stdout.write_async,
                    run_dir=settings.state_dir / "run",
                    keep=keep,
                    started=started,
                    stdin=stdin_fifo,
                    **size,
                )
            nursery.cancel_scope.cancel()
    except* BrokenPipeError:
        # Our reader went away (e.g. `| head`): like a shell pipeline, exit with SIGPIPE's code.
        failure.append(128 + signal.SIGPIPE)
    except* (TmuxError, SubprocessError, OSError, ValueError) as group:
        for exc in _leaves(group):
            error(str(exc))
        failure.append(EXIT_START_FAILED)
    if failure:
        return failure[0]
    stdout.close()
    if stopped_by:
        return 128 + stopped_by[0]
    if result is None:  # the run scope's deadline (--timeout) cancelled it
        return EXIT_TIMEOUT
    if keep:
        error(f"session kept: tmux -L {settings.tmux_socket} attach -t {result.session_name}")
    code = result.exit_code
    if code is None:
        error("the session ended without an exit status (was it killed from outside?)")
        return EXIT_START_FAILED
    return code


async def _type_keys(server: object, name: str) -> bool:
    """This terminal (raw mode while it runs) typed into tmux session ``name``, byte for byte,
    until stdin ends (False) or Ctrl-] (True: the caller stops the run; embedded, there is no
    daemon to leave the session with)."""
    import termios
    import tty

    from ..tmux import TmuxServer
    from ._attach import DETACH

    assert isinstance(server, TmuxServer)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        while True:
            await trio.lowlevel.wait_readable(fd)
            chunk = os.read(fd, 4096)
            if not chunk:
                return False
            data = chunk.split(DETACH, 1)[0]
            if data:
                await server.run("send-keys", "-t", f"={name}:", "-H", *(f"{b:02x}" for b in data))
            if DETACH in chunk:
                return True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _follow_terminal_size(server: object, name: str, size: dict[str, int]) -> None:
    """Resize tmux session ``name`` (made at ``size``) to this terminal's size each time it
    changes (SIGWINCH), as ``attach`` does through the daemon's WebSocket; a failed resize (the
    session ending; each is bounded by ``timeouts.tmux``) is dropped, the next one goes on.
    Runs until cancelled."""
    from ..process import SubprocessError
    from ..tmux import TmuxError, TmuxServer
    from ._attach import _size

    assert isinstance(server, TmuxServer)

    async def follow() -> None:
        nonlocal size
        if (new := _size(sys.stdout.fileno())) == size:
            return
        size = new
        try:
            await server.resize_window(name, size["width"], size["height"])
        except (TmuxError, SubprocessError):
            # Not an error to report: the session is ending (its end is reported as such) or
            # tmux was slow; the next resize tries again.
            return

    with trio.open_signal_receiver(signal.SIGWINCH) as resized:
        await follow()  # (a change made before the receiver was in place)
        async for _ in resized:
            await follow()


def _daemon_answers(settings: Settings) -> bool:
    """Whether a daemon listens where clients look (a quick connect; no request)."""
    import socket

    if settings.url:
        from urllib.parse import urlsplit

        parts = urlsplit(settings.url)
        address: tuple[object, ...] | str = (
            parts.hostname,
            parts.port or (443 if parts.scheme == "https" else 80),
        )
        family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
    else:
        address, family = str(settings.api_socket), socket.AF_UNIX
    probe = socket.socket(family, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(address)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _workdir(cwd: str | None) -> Path:
    """``--cwd`` (default: ours), resolved.

    Raises:
        StartFailed: it is not a directory.
    """
    workdir = Path(cwd).expanduser().resolve() if cwd else Path.cwd()
    if not workdir.is_dir():
        raise StartFailed(f"working directory does not exist: {cwd}")
    return workdir


def _terminal_size() -> dict[str, int]:
    """Our terminal's size (80x24 when stdout is not one), within what a session accepts."""
    width, height = 80, 24
    if os.isatty(sys.stdout.fileno()):
        width, height = shutil.get_terminal_size((80, 24))
    return {"width": max(2, min(width, 1000)), "height": max(2, min(height, 1000))}


def _run_agent(invocation: Invocation, extra_args: list[str]) -> int:
    """``trio-bridge run --agent NAME``: an agent session in the daemon (its hooks report its
    state there), attached to this terminal (Ctrl-] detaches, the agent goes on); without a
    terminal, its output streamed as ``run`` does. Exit codes as ``run``."""
    args, settings = invocation.args, invocation.settings
    agent, resume, cwd = args.agent, args.resume, args.cwd
    try:
        if agent is not None and agent not in settings.agents:
            raise StartFailed(f"no agent profile {agent!r} (known: {', '.join(sorted(settings.agents))})")
        if agent is not None and resume is not None:
            raise StartFailed("--resume takes the agent of the resumed session: omit --agent")
        workdir = _workdir(cwd)
        from ..runner import pane_environment

        env = pane_environment(env_pairs(args.env))
        if agent is not None:
            check_command(settings.agents[agent].binary, workdir, env.get("PATH"))
        if not _daemon_answers(settings):
            raise StartFailed(
                "run --agent needs the daemon (the agent's hooks report to it): start it with: "
                "trio-bridge daemon"
            )
    except StartFailed as exc:
        error(str(exc))
        return exc.code
    body: dict[str, object] = {"env": env, **_terminal_size()}
    if cwd is not None or resume is None:
        body["cwd"] = str(workdir)
    optional = {"agent": agent, "model": args.model, "prompt": args.prompt, "resume": resume}
    body.update({k: v for k, v in optional.items() if v is not None})
    if extra_args:
        body["args"] = list(extra_args)
    interactive = os.isatty(sys.stdin.fileno()) and os.isatty(sys.stdout.fileno())
    return trio.run(_run_via_daemon, settings, body, None, interactive)


async def _run_via_daemon(
    settings: Settings,
    body: Mapping[str, object],
    time_limit: float | None,
    interactive: bool = False,
    pipe_stdin: bool = False,
) -> int:
    """`run` as a daemon session: create it, stream its output over its WebSocket (resuming by
    offset if the connection drops), and on Ctrl-C/--timeout kill it. Same exit codes.
    ``interactive``: attach this terminal to it instead (Ctrl-] detaches; it goes on).
    ``pipe_stdin``: the session was asked for a stdin pipe (``body``): our stdin goes to it."""
    from ..client import async_client
    from ._resume import DaemonLostError, Reconnect
    from ._text import StdoutClosedError
    from ._ws import connection_lost, control_message, open_session_socket

    async with async_client(settings.api_socket, settings.url, settings.client_token()) as http:
        try:
            response = await http.post("/v1/sessions", json=body)
        except OSError as exc:
            error(f"the daemon went away: {exc}")
            return EXIT_START_FAILED
        if response.status_code != 201:
            error(_api_message(response))
            return EXIT_START_FAILED
        session_id = response.json()["id"]
        if interactive:
            from ._attach import attach_session

            kind = "agent session" if body.get("agent") or body.get("resume") else "session"
            error(f"{kind} {session_id}; Ctrl-] detaches (it goes on), attach again with: "
                   f"trio-bridge attach {session_id}")  # fmt: skip
            return await attach_session(settings, session_id)
        stdout = Out()
        stopped_by: list[int] = []
        final: dict[str, object] | None = None
        offset = 0
        reconnect = Reconnect(settings.reconnect_timeout, f"following session {session_id}")
        lost: list[DaemonLostError] = []

        async def _follow_output() -> None:
            nonlocal final, offset
            while final is None:
                try:
                    async with open_session_socket(settings, session_id, offset=offset) as ws:
                        reconnect.connected()
                        while True:
                            message = await ws.get_message()
                            if isinstance(message, bytes):
                                await stdout.write_async(message)
                                offset += len(message)
                                continue
                            control = control_message(message)
                            if control["type"] == "resync":
                                offset = int(control["offset"])
                            elif control["type"] == "end":
                                final = control["session"]
                                return
                except Exception as exc:
                    if not connection_lost(exc):
                        raise
                    # The daemon restarts or the connection dropped: resume at offset.
                    try:
                        await trio.sleep(reconnect.lost(_reason(exc)))
                    except DaemonLostError as gone:
                        lost.append(gone)
                        break

        try:
            async with _stop_on_signals(time_limit) as stopped_by, trio.open_nursery() as feeder:
                if pipe_stdin:
                    feeder.start_soon(_send_stdin, http, session_id)
                await _follow_output()
                feeder.cancel_scope.cancel()
        except* StdoutClosedError:
            stopped_by.append(signal.SIGPIPE)
        if lost:
            error(f"{lost[0]} (the session goes on: trio-bridge attach {session_id})")
            return EXIT_DAEMON_LOST
        if final is None:
            # Ctrl-C, a signal, --timeout or a closed stdout: the session goes too.
            with trio.CancelScope(shield=True), trio.move_on_after(settings.timeouts.tmux + 5):
                try:
                    await http.delete(f"/v1/sessions/{session_id}")
                except OSError:
                    error(f"could not kill session {session_id}: the daemon is unreachable")
            return 128 + stopped_by[0] if stopped_by else EXIT_TIMEOUT
        stdout.close()
    if final.get("exit_code") is None and not final.get("exit_signal"):
        error(f"the session ended without an exit status ({final.get('state')})")
        return EXIT_START_FAILED
    return exit_status(final)


async def _send_stdin(http: object, session_id: str) -> None:
    """Our stdin to the session's stdin pipe, as the command reads it; our stdin's end is the
    command's EOF. A refusal is said on stderr. A dropped connection ends the command's stdin
    there (the daemon closes the pipe); it is said too unless the session ended meanwhile (then
    the daemon closed the connection: the command no longer reads)."""
    import httpx

    from ..client import ApiError, feed_stdin
    from ._stdin import stdin_chunks

    assert isinstance(http, httpx.AsyncClient)
    try:
        await feed_stdin(http, session_id, stdin_chunks())
    except ApiError as exc:
        error(f"stdin: {exc.message}")
    except httpx.TransportError as exc:
        if await _ended_meanwhile(http, session_id):
            return  # (its end closed the connection: the command had its input)
        error(
            f"stdin: the connection to the daemon dropped ({_reason(exc)}): the command's input ended there"
        )


async def _ended_meanwhile(http: httpx.AsyncClient, session_id: str) -> bool:
    """Whether the session ended (within ``_ENDED_WITHIN`` s); False also when the daemon cannot
    say (the caller then reports the dropped connection, which covers that case)."""
    import httpx

    with trio.move_on_after(_ENDED_WITHIN + 5):  # (the long poll's own bound, and its answer)
        try:
            response = await http.get(f"/v1/sessions/{session_id}/wait", params={"timeout": _ENDED_WITHIN})
            return response.status_code == 200 and response.json()["ended"] is True
        except (httpx.TransportError, ValueError, KeyError):
            return False
    return False


def _reason(exc: BaseException) -> str:
    """One line on why a connection failed (the first leaf of a group)."""
    from trio_websocket import ConnectionClosed

    from ._ws import first_leaf

    exc = first_leaf(exc)
    if isinstance(exc, ConnectionClosed) and exc.reason is not None:
        return exc.reason.reason or exc.reason.name
    return str(exc) or type(exc).__name__


def _api_message(response: object) -> str:
    import httpx

    assert isinstance(response, httpx.Response)
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"the daemon answered HTTP {response.status_code}"
