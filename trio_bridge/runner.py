"""One-off session runs (``trio-bridge run``), embedded: no daemon, no Redis, no config.

:func:`run_session` starts a command in a new tmux session of trio-bridge's
own server, streams its output as it is produced, and returns how it ended.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import attrs
import trio

from .process import ExitWatch
from .tmux import SessionSpec, TmuxServer, new_session_id, open_control_client
from .tmux.control import ControlClient
from .tmux.server import SessionInfo, read_exit_status, signal_unix_session

__all__ = ["RunResult", "run_session"]

log = logging.getLogger(__name__)

# How often the bounded clean-up checks whether a stopped command is gone.
_STOP_CHECK_INTERVAL = 0.02
# How often, after the pane's process exited, we ask whether tmux read its last output.
_DEAD_CHECK_INTERVAL = 0.001
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


async def _pump(output: trio.MemoryReceiveChannel[bytes], write: Writer) -> None:
    """Copy output chunks to ``write``, batching whatever is already queued."""
    async with output:
        async for chunk in output:
            parts = [chunk]
            while True:
                try:
                    parts.append(output.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await write(b"".join(parts))


async def _pane_dead(client: ControlClient, pane_id: str) -> bool:
    lines = await client.command("display-message", "-p", "-t", pane_id, "#{pane_dead}")
    return lines == [b"1"]


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
    status_dir: Path,
    keep: bool = False,
    width: int = 80,
    height: int = 24,
) -> RunResult:
    """Run ``argv`` as a managed tmux session and stream its output to ``write``.

    Owns, until it returns: the tmux session (removed at the end unless
    ``keep``), one control-mode client (the output) and the task copying
    its output, a pidfd on the pane's process (the exit notification), and
    the exit-status file in ``status_dir``.
    To limit the run time (``--timeout``) or stop it (Ctrl-C), cancel the
    call: the command's processes are stopped (SIGTERM, then SIGKILL after
    the kill grace) and the session removed before the cancellation goes on.

    Raises:
        TmuxUnavailableError, TmuxError, NotADirectoryError, ValueError: the
            session could not be started.
        SubprocessTimeoutError: tmux did not answer in time.
    """
    await trio.Path(status_dir).mkdir(parents=True, exist_ok=True)
    session_id = new_session_id()
    status_path = status_dir / f"{session_id}.exit"
    spec = SessionSpec(argv, cwd, status_path, env, width=width, height=height, session_id=session_id)
    info: SessionInfo = await server.new_session(spec)
    ended = False
    try:
        with ExitWatch(info.pane_pid) as exited:
            async with open_control_client(server, info.name) as client:
                output = client.subscribe(info.pane_id, buffer=1024)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pump, output, write)
                    await client.command("wait-for", "-S", spec.gate_channel)
                    await exited.wait()
                    ended = True
                    # The pane's process is gone; once tmux has also read the
                    # pty to its end it marks the pane dead. Then one command
                    # round trip: tmux answers it only after every %output
                    # queued before it, so no output is left behind.
                    with trio.move_on_after(server.timeouts.tmux):
                        # A short poll, once per run: tmux has no event for it.
                        while not await _pane_dead(client, info.pane_id):  # noqa: ASYNC110
                            await trio.sleep(_DEAD_CHECK_INTERVAL)
                    await client.command("display-message", "-p", "")
                    client.unsubscribe(info.pane_id)
                    # The pump drains what is queued and ends by itself.
    finally:
        with trio.CancelScope(shield=True):
            if not ended:
                await _stop_unix_session(info.pane_pid, server.timeouts.kill_grace)
            if not keep:
                with trio.move_on_after(server.timeouts.tmux):
                    await server.kill_session(info.name, missing_ok=True)
    status = read_exit_status(status_path)
    status_path.unlink(missing_ok=True)
    if status is not None and status > 128 and status - 128 in _SIGNAL_NUMBERS:
        # The shell reports death by signal N as 128+N.
        return RunResult(info.name, None, status - 128)
    return RunResult(info.name, status, None)


def pane_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment (valid names only) plus ``extra``: what `run` gives the command."""
    from .tmux.server import _ENV_NAME

    env = {k: v for k, v in os.environ.items() if _ENV_NAME.match(k) and "\0" not in v}
    env.update(extra)
    return env
