"""``trio-bridge run``: exit codes, pre-flight checks and the terminal side of a run."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from ..config import ConfigError, Settings, resolve_settings
from ._preflight import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_START_FAILED,
    StartFailed,
    check_command,
)

__all__ = ["EXIT_NOT_EXECUTABLE", "EXIT_NOT_FOUND", "EXIT_START_FAILED", "EXIT_TIMEOUT", "StartFailed"]

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_USAGE = 2
#: settings of the tmux server a session runs on: the daemon's own when `run` goes through it
_DAEMON_SIDE = ("tmux_socket", "tmux_binary")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _error(message: str) -> None:
    print(f"trio-bridge: {message}", file=sys.stderr, flush=True)


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    from ..tmux.server import is_env_name

    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not is_env_name(name):
            raise StartFailed(f"--env expects NAME=VALUE with a valid variable name, got {pair!r}")
        env[name] = value
    return env


class _Stdout:
    """Our stdout: raw bytes on a terminal, plain text (no escapes, LF line ends) otherwise.

    Writes happen in a worker thread, so a slow or blocked reader of our stdout
    never blocks the event loop (and so never blocks Ctrl-C handling).
    """

    def __init__(self) -> None:
        self._fd = sys.stdout.fileno()
        self._plain = None
        if not os.isatty(self._fd):
            from .._terminal import PlainText

            self._plain = PlainText()

    def _write_all(self, data: bytes) -> None:
        from ._ws import StdoutClosedError

        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except BrokenPipeError as exc:
            raise StdoutClosedError(*exc.args) from None

    async def write(self, data: bytes) -> None:
        if self._plain is not None:
            data = self._plain.feed(data)
        if data:
            # Abandoned on cancel: Ctrl-C must work even while our reader is stuck.
            await trio.to_thread.run_sync(self._write_all, data, abandon_on_cancel=True)

    def flush(self) -> None:
        """Write what the plain-text filter still holds (a final lone CR)."""
        if self._plain is not None and (rest := self._plain.flush()):
            self._write_all(rest)


def run_command(
    cmd: list[str],
    *,
    cwd: str | None,
    env_pairs: Sequence[str],
    timeout: float | None,
    keep: bool,
    embedded: bool = False,
    flags: Mapping[str, object] | None = None,
    config_file: str | None = None,
) -> int:
    """Run ``trio-bridge run``; returns the process exit code.

    Through the daemon when one answers (the session then shows in ``ls`` and can be
    attached while it runs), else embedded: on trio-bridge's tmux server, in this process.
    """
    try:
        settings = resolve_settings(
            flags=flags, config_file=Path(config_file).expanduser() if config_file else None
        ).settings
        env_extra = _parse_env(env_pairs)
        workdir = Path(cwd).expanduser().resolve() if cwd else Path.cwd()
        if not workdir.is_dir():
            raise StartFailed(f"working directory does not exist: {cwd}")
        from ..runner import pane_environment

        env = pane_environment(env_extra)
        check_command(cmd[0], workdir, env.get("PATH"))
        stdin_tty = os.isatty(sys.stdin.fileno())
        interactive = stdin_tty and os.isatty(sys.stdout.fileno())
        # --keep through the daemon: its sessions stay listed after they end (ls, screen, tail) until rm
        if not embedded and _daemon_answers(settings):
            given = [name for name in _DAEMON_SIDE if flags and flags.get(name) is not None]
            if given:
                flag = "--" + given[0].replace("_", "-")
                _error(f"{flag} cannot apply to a run through the daemon (it uses its own tmux): "
                       "give it to the daemon, or add --embedded")  # fmt: skip
                return EXIT_USAGE
            body: dict[str, object] = {"command": cmd, "cwd": str(workdir), "env": env, **_terminal_size()}
            if stdin_tty or not _daemon_is_local(settings):
                return trio.run(_run_via_daemon, settings, body, timeout, interactive)
            from ._stdin import stdin_fifo, title_of, wrap_command

            with stdin_fifo() as fifo:
                body.update(command=wrap_command(cmd, fifo), title=title_of(cmd))
                return trio.run(_run_via_daemon, settings, body, timeout, False, fifo)
        if shutil.which(settings.tmux_binary) is None:
            raise StartFailed(
                f"tmux is not installed ({settings.tmux_binary!r} not found); "
                "install it, e.g. apt-get install tmux"
            )
    except (StartFailed, ConfigError) as exc:
        _error(str(exc))
        return exc.code if isinstance(exc, StartFailed) else EXIT_START_FAILED
    if stdin_tty:
        return trio.run(_run, settings, cmd, workdir, env, timeout, keep, None, interactive)
    from ._stdin import stdin_fifo, wrap_command

    with stdin_fifo() as fifo:
        return trio.run(_run, settings, wrap_command(cmd, fifo), workdir, env, timeout, keep, fifo)


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
    width, height = 80, 24
    if os.isatty(sys.stdout.fileno()):
        width, height = shutil.get_terminal_size((80, 24))
    stopped_by: list[int] = []
    stdout = _Stdout()
    result = None
    failure: list[int] = []
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

                nursery.start_soon(keyboard)
            with trio.CancelScope() as run_scope:
                result = await run_session(
                    server,
                    cmd,
                    cwd=workdir,
                    env=env,
                    write=stdout.write,
                    run_dir=settings.state_dir / "run",
                    keep=keep,
                    width=max(2, min(width, 1000)),
                    height=max(2, min(height, 1000)),
                    started=started,
                )
            nursery.cancel_scope.cancel()
    except* BrokenPipeError:
        # Our reader went away (e.g. `| head`): like a shell pipeline, exit with SIGPIPE's code.
        failure.append(128 + signal.SIGPIPE)
    except* (TmuxError, SubprocessError, OSError, ValueError) as group:
        for exc in _leaves(group):
            _error(str(exc))
        failure.append(EXIT_START_FAILED)
    if failure:
        return failure[0]
    stdout.flush()
    if stopped_by:
        return 128 + stopped_by[0]
    if result is None:  # the run scope's deadline (--timeout) cancelled it
        return EXIT_TIMEOUT
    if keep:
        _error(f"session kept: tmux -L {settings.tmux_socket} attach -t {result.session_name}")
    code = result.exit_code
    if code is None:
        _error("the session ended without an exit status (was it killed from outside?)")
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


def _daemon_is_local(settings: Settings) -> bool:
    """Whether the daemon runs on this computer (its sessions can open a FIFO of ours)."""
    if not settings.url:
        return True
    from urllib.parse import urlsplit

    return urlsplit(settings.url).hostname in ("127.0.0.1", "::1", "localhost")


def _terminal_size() -> dict[str, int]:
    width, height = 80, 24
    if os.isatty(sys.stdout.fileno()):
        width, height = shutil.get_terminal_size((80, 24))
    return {"width": max(2, min(width, 1000)), "height": max(2, min(height, 1000))}


def run_agent(
    agent: str | None,
    *,
    model: str | None,
    prompt: str | None,
    resume: str | None,
    extra_args: Sequence[str],
    cwd: str | None,
    env_pairs: Sequence[str],
    flags: Mapping[str, object] | None = None,
    config_file: str | None = None,
) -> int:
    """``trio-bridge run --agent NAME``: an agent session in the daemon (its hooks report its
    state there), attached to this terminal (Ctrl-] detaches, the agent goes on); without a
    terminal, its output streamed as ``run`` does. Exit codes as ``run``."""
    try:
        settings = resolve_settings(
            flags=flags, config_file=Path(config_file).expanduser() if config_file else None
        ).settings
        if agent is not None and agent not in settings.agents:
            raise StartFailed(f"no agent profile {agent!r} (known: {', '.join(sorted(settings.agents))})")
        if agent is not None and resume is not None:
            raise StartFailed("--resume takes the agent of the resumed session: omit --agent")
        workdir = Path(cwd).expanduser().resolve() if cwd else Path.cwd()
        if not workdir.is_dir():
            raise StartFailed(f"working directory does not exist: {cwd}")
        from ..runner import pane_environment

        env = pane_environment(_parse_env(env_pairs))
        if agent is not None:
            check_command(settings.agents[agent].binary, workdir, env.get("PATH"))
        if not _daemon_answers(settings):
            raise StartFailed(
                "run --agent needs the daemon (the agent's hooks report to it): start it with: "
                "trio-bridge daemon"
            )
    except (StartFailed, ConfigError) as exc:
        _error(str(exc))
        return exc.code if isinstance(exc, StartFailed) else EXIT_START_FAILED
    body: dict[str, object] = {"env": env, **_terminal_size()}
    if cwd is not None or resume is None:
        body["cwd"] = str(workdir)
    optional = {"agent": agent, "model": model, "prompt": prompt, "resume": resume}
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
    stdin_fifo: Path | None = None,
) -> int:
    """`run` as a daemon session: create it, stream its output over its WebSocket (resuming by
    offset if the connection drops), and on Ctrl-C/--timeout kill it. Same exit codes.
    ``interactive``: attach this terminal to it instead (Ctrl-] detaches; it goes on)."""
    from ..client import async_client
    from ._resume import EXIT_DAEMON_LOST, DaemonLostError, Reconnect
    from ._ws import StdoutClosedError, connection_lost, control_message, open_session_socket

    async with async_client(settings.api_socket, settings.url, settings.client_token()) as http:
        try:
            response = await http.post("/v1/sessions", json=body)
        except OSError as exc:
            _error(f"the daemon went away: {exc}")
            return EXIT_START_FAILED
        if response.status_code != 201:
            _error(_api_message(response))
            return EXIT_START_FAILED
        session_id = response.json()["id"]
        if interactive:
            from ._attach import attach_session

            kind = "agent session" if body.get("agent") or body.get("resume") else "session"
            _error(f"{kind} {session_id}; Ctrl-] detaches (it goes on), attach again with: "
                   f"trio-bridge attach {session_id}")  # fmt: skip
            return await attach_session(settings, session_id)
        stdout = _Stdout()
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
                                await stdout.write(message)
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
                if stdin_fifo is not None:
                    from ._stdin import feed_stdin

                    feeder.start_soon(feed_stdin, stdin_fifo)
                await _follow_output()
                feeder.cancel_scope.cancel()
        except* StdoutClosedError:
            stopped_by.append(signal.SIGPIPE)
        if lost:
            _error(f"{lost[0]} (the session goes on: trio-bridge attach {session_id})")
            return EXIT_DAEMON_LOST
        if final is None:
            # Ctrl-C, a signal, --timeout or a closed stdout: the session goes too.
            with trio.CancelScope(shield=True), trio.move_on_after(settings.timeouts.tmux + 5):
                try:
                    await http.delete(f"/v1/sessions/{session_id}")
                except OSError:
                    _error(f"could not kill session {session_id}: the daemon is unreachable")
            return 128 + stopped_by[0] if stopped_by else EXIT_TIMEOUT
        stdout.flush()
    from ._client import exit_status

    if final.get("exit_code") is None and not final.get("exit_signal"):
        _error(f"the session ended without an exit status ({final.get('state')})")
        return EXIT_START_FAILED
    return exit_status(final)


def _reason(exc: BaseException) -> str:
    """One line on why a connection failed (the first leaf of a group)."""
    from trio_websocket import ConnectionClosed

    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
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
