"""What a session leaves in its directory (``<state>/sessions/<id>/``) and how its end is read
from it: the log's pipe (``pipe.pid``, split), the last screen, the exit status."""

from __future__ import annotations

import re
import shlex
import signal
import time
from pathlib import Path

import attrs

from ..agents import AgentState
from ..output.log import split_command
from .store import SessionRecord, SessionState

__all__ = ["ended_record", "pipe_command", "pipe_writer", "without_dead_banner"]

_SIGNALS = {128 + n for n in range(1, 65)}
_PIPE_PID = "pipe.pid"
_DEAD_BANNER = re.compile(r"\nPane is dead[^\n]*\n?$")


def ended_record(record: SessionRecord, status: int | None, *, killed: bool) -> SessionRecord:
    """The record of a session that ended now, with the exit ``status`` its start wrapper
    recorded (None: none), ``killed`` if a kill was asked for."""
    exit_code, exit_signal = status, None
    if status in _SIGNALS:
        exit_code, exit_signal = None, status - 128  # the shell's 128+N
    state = SessionState.KILLED if killed else SessionState.EXITED
    if status is None and not killed:
        state = SessionState.KILLED  # the wrapper itself was killed from outside
    elif status is None:
        # Killed by us: closing its window hung up its processes (tmux sends SIGHUP), the
        # start wrapper with them, so no status was written: the signal is ours to tell.
        exit_signal = int(signal.SIGHUP)
    return attrs.evolve(
        record, state=state, exit_code=exit_code, exit_signal=exit_signal, ended_at=time.time(),
        agent_state=str(AgentState.EXITED) if record.agent_state is not None else None,
    )  # fmt: skip


def without_dead_banner(screen: str) -> str:
    """The screen without tmux's "Pane is dead (status N, <time>)" line (remain-on-exit's)."""
    return _DEAD_BANNER.sub("\n", screen)


def pipe_command(directory: Path, segment_size: int) -> str:
    """The shell command tmux pipes the session's output to: split, writing its log."""
    pidfile = shlex.quote(str(directory / _PIPE_PID))
    # The shell records its PID and becomes split (exec): one process per session, whose
    # exit says the log is complete.
    # umask: the log is private whoever started the tmux server (an embedded `run` from a
    # shell with umask 022, say).
    return f"umask 077; echo $$ > {pidfile}; {split_command(directory / 'log', segment_size)}"


def pipe_writer(directory: Path) -> int | None:
    """The PID of the session's log writer (split), if it is still that process."""
    try:
        pid = int((directory / _PIPE_PID).read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError):
        return None
    if cmdline.startswith(b"split\0") and str(directory).encode() in cmdline:
        return pid
    return None  # exited, and maybe the PID was reused: nothing to wait for
