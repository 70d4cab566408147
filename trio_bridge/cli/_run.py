"""``trio-bridge run``: exit codes, pre-flight checks and the terminal side of a run."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from ..config import ConfigError, Settings, resolve_settings

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_START_FAILED = 125  # trio-bridge itself could not run CMD
EXIT_NOT_EXECUTABLE = 126  # as the shell
EXIT_NOT_FOUND = 127  # as the shell

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StartFailed(Exception):
    """A one-line reason why the command cannot be started, and the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_START_FAILED) -> None:
        super().__init__(message)
        self.code = code


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


def _check_command(argv0: str, cwd: Path, path: str | None) -> None:
    """Refuse, with the shell's exit codes, a command that cannot be executed."""
    if "/" in argv0:
        target = cwd / argv0
        if not target.exists():
            raise StartFailed(f"no such file: {argv0}", EXIT_NOT_FOUND)
        if target.is_dir() or not os.access(target, os.X_OK):
            raise StartFailed(f"not executable: {argv0}", EXIT_NOT_EXECUTABLE)
    elif shutil.which(argv0, path=path) is None:
        raise StartFailed(f"command not found: {argv0}", EXIT_NOT_FOUND)


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
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

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
    flags: Mapping[str, object] | None = None,
    config_file: str | None = None,
) -> int:
    """Run ``trio-bridge run``; returns the process exit code."""
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
        _check_command(cmd[0], workdir, env.get("PATH"))
        if shutil.which(settings.tmux_binary) is None:
            raise StartFailed(
                f"tmux is not installed ({settings.tmux_binary!r} not found); "
                "install it, e.g. apt-get install tmux"
            )
    except (StartFailed, ConfigError) as exc:
        _error(str(exc))
        return exc.code if isinstance(exc, StartFailed) else EXIT_START_FAILED
    return trio.run(_run, settings, cmd, workdir, env, timeout, keep)


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
        with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        stopped_by.append(signum)
                        run_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                with trio.CancelScope() as run_scope:
                    if time_limit is not None:
                        run_scope.deadline = trio.current_time() + time_limit
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
