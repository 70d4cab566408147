"""One-off session runs (``trio-bridge run``), embedded: no daemon, no Redis, no config.

:func:`run_session` starts a command in a new tmux session of trio-bridge's
own server, streams its output as it is produced, and returns how it ended.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import attrs
import trio

from .process import ExitWatch
from .tmux import SessionSpec, TmuxServer, new_session_id
from .tmux.server import SessionInfo, read_exit_status, signal_unix_session

__all__ = ["RunResult", "run_session"]

log = logging.getLogger(__name__)

# How often the bounded clean-up checks whether a stopped command is gone.
_STOP_CHECK_INTERVAL = 0.02
_READ_SIZE = 65536
# With --keep, how long the drained pipe may stay silent before the copy stops.
_KEEP_QUIET = 0.1
_SIGNAL_NUMBERS = frozenset(int(s) for s in signal.Signals)


@attrs.frozen
class RunResult:
    """How a run's command ended."""

    session_name: str
    #: the command's exit status, or None if it died by a signal or was never recorded
    exit_status: int | None = None
    #: the signal that killed the command, if one did (read from the shell's 128+N)
    exit_signal: int | None = None

    @property
    def exit_code(self) -> int | None:
        if self.exit_signal is not None:
            return 128 + self.exit_signal
        return self.exit_status


Writer = Callable[[bytes], Awaitable[None]]


class _FifoCopy:
    """Copies what tmux pipes into a FIFO (non-blocking read end) to ``write``, until EOF.

    Reads only after poll says so: Linux reports a FIFO readable when it holds
    data, or once a writer has come *and gone* since we opened it. So a read
    of 0 bytes is the real end (the pipe command exited), never "not started yet".
    """

    def __init__(self, fd: int, write: Writer) -> None:
        self._fd = fd
        self._write = write
        self.last_data = trio.current_time()

    async def run(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                chunk = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                continue
            if not chunk:
                return
            self.last_data = trio.current_time()
            await self._write(chunk)

    async def wait_quiet(self, quiet: float) -> None:
        """Return once no data has arrived for ``quiet`` seconds."""
        # sleeps exactly until the silence would be long enough, then re-checks
        while (left := self.last_data + quiet - trio.current_time()) > 0:  # noqa: ASYNC110
            await trio.sleep(left)


async def _stop_unix_session(sid: int, grace: float) -> None:
    """SIGTERM every process of the pane, SIGKILL what is left after ``grace``.

    Shielded and bounded: it runs during cancellation and takes at most
    ``grace`` plus one check interval.
    """
    with trio.CancelScope(shield=True):
        if signal_unix_session(sid, signal.SIGTERM) == 0:
            return
        with trio.move_on_after(grace):
            # Bounded poll of /proc: the processes are not our children.
            while signal_unix_session(sid, 0):  # noqa: ASYNC110
                await trio.sleep(_STOP_CHECK_INTERVAL)
            return
        signal_unix_session(sid, signal.SIGKILL)


async def run_session(
    server: TmuxServer,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    write: Writer,
    run_dir: Path,
    keep: bool = False,
    width: int = 80,
    height: int = 24,
    started: Callable[[str], object] | None = None,
    stdin: Path | None = None,
) -> RunResult:
    """Run ``argv`` as a managed tmux session and stream its output to ``write``.

    Owns, until it returns: the tmux session (removed at the end unless
    ``keep``); a FIFO in ``run_dir`` that tmux's ``pipe-pane`` writes the
    session's output into (copied to ``write``); the exit-status file that
    the session's start wrapper writes.
    ``started`` is called with the tmux session's name once the command runs.
    ``stdin``: a FIFO the command reads as its stdin (the caller writes it), else the pane's
    terminal.
    The output comes from ``pipe-pane`` rather than a control-mode client
    because tmux 3.3a loses a fresh pane's output on control clients under
    concurrency (see docs/decisions.md); tmux drains a pane into its pipe.
    To limit the run time (``--timeout``) or stop it (Ctrl-C), cancel the
    call: the command's processes are stopped (SIGTERM, then SIGKILL after
    the kill grace) and the session removed before the cancellation goes on.

    Raises:
        TmuxUnavailableError, TmuxError, NotADirectoryError, ValueError: the
            session could not be started.
        SubprocessTimeoutError: tmux did not answer in time.
    """
    await trio.Path(run_dir).mkdir(parents=True, exist_ok=True)
    session_id = new_session_id()
    status_path = run_dir / f"{session_id}.exit"
    fifo = run_dir / f"{session_id}.out"
    os.mkfifo(fifo, 0o600)
    fifo_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    spec = SessionSpec(
        argv,
        cwd,
        status_path,
        env,
        width=width,
        height=height,
        session_id=session_id,
        # tmux's own pipe: tmux drains the pane into it before it marks the pane dead
        pipe_command=f"exec cat > {shlex.quote(str(fifo))}",
        stdin_path=stdin,
    )
    ended = False
    try:
        info: SessionInfo = await server.new_session(spec)
        try:
            with ExitWatch(info.pane_pid) as exited:
                async with trio.open_nursery() as nursery:
                    copy = _FifoCopy(fifo_fd, write)
                    nursery.start_soon(copy.run)
                    await server.release(spec)
                    if started is not None:
                        started(info.name)  # (e.g. `run` on a terminal: where keys go)
                    await exited.wait()
                    ended = True
                    await server.wait_drained(info.name)
                    if keep:
                        # tmux keeps a dead pane's pipe open until the pane is
                        # killed; a kept session keeps it, so stop at silence.
                        await copy.wait_quiet(_KEEP_QUIET)
                        nursery.cancel_scope.cancel()
                    else:
                        # Killing the session closes tmux's pipe: `cat` copies
                        # what it holds and exits, the FIFO reaches EOF and the
                        # copy task ends with every byte delivered.
                        await server.kill_session(info.name, missing_ok=True)
        finally:
            with trio.CancelScope(shield=True):
                if not ended:
                    await _stop_unix_session(info.pane_pid, server.timeouts.kill_grace)
                if not keep:
                    with trio.move_on_after(server.timeouts.tmux):
                        await server.kill_session(info.name, missing_ok=True)
    finally:
        os.close(fifo_fd)
        fifo.unlink(missing_ok=True)
        spec.env_path.unlink(missing_ok=True)  # if the wrapper never got to read it
        status = read_exit_status(status_path)
        status_path.unlink(missing_ok=True)
    if status is not None and status > 128 and status - 128 in _SIGNAL_NUMBERS:
        # The shell reports death by signal N as 128+N.
        return RunResult(info.name, None, status - 128)
    return RunResult(info.name, status, None)


def pane_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment (valid names only) plus ``extra``: what `run` gives the command."""
    from .tmux.server import is_env_name

    env = {
        k: v for k, v in os.environ.items() if is_env_name(k) and "\0" not in v and k not in _SESSION_OWNED
    }
    env.update(extra)
    return env


#: what a session gets from the daemon that runs it, never from the caller's environment (a
#: caller inside another session would pass that one's on; and the token is not for commands)
_SESSION_OWNED = frozenset({"TRIO_BRIDGE_SESSION_ID", "TRIO_BRIDGE_API_SOCKET", "TRIO_BRIDGE_TOKEN"})
