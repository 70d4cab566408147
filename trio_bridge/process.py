"""Every external command trio-bridge runs goes through this module.

Two entry points:

* :func:`run_process` runs a short command to completion under a hard deadline.
* :func:`open_process_group` owns a long-lived child (the tmux control-mode
  client, the pane-death waiter) for the duration of an ``async with`` block.

Both start the child in its own session/process group, so that on timeout or
cancellation the *whole group* is sent SIGTERM, then SIGKILL after a short
grace, and the child is always reaped.  A timeout is reported as
:class:`SubprocessTimeoutError` and is never turned into an "absent" result.

It also signals processes it did not start: :class:`ExitWatch` waits for one to exit, and
:func:`signal_unix_session` / :func:`signal_session_but_leader` signal a Unix session's
members (a pane's processes).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from .config import DEFAULT_TIMEOUTS

__all__ = [
    "ExitWatch",
    "ProcessResult",
    "SubprocessError",
    "SubprocessFailedError",
    "SubprocessStartError",
    "SubprocessTimeoutError",
    "open_process_group",
    "run_process",
    "signal_session_but_leader",
    "signal_unix_session",
    "unix_session_members",
]

_READ_SIZE = 65536


class SubprocessError(Exception):
    """Base class of every error raised by this module."""

    operation: str


#: subprocesses killed on timeout since start, in this process (for metrics)
timeouts_total = 0


class SubprocessTimeoutError(SubprocessError):
    """The child did not finish within ``timeout`` seconds; its group was killed and reaped."""

    def __init__(self, operation: str, timeout: float, pid: int) -> None:
        self.operation = operation
        self.timeout = timeout
        self.pid = pid
        super().__init__(f"{operation} timed out after {timeout:g} s (pid {pid}, killed)")


class SubprocessFailedError(SubprocessError):
    """The child exited with a non-zero status (or was killed by a signal)."""

    def __init__(self, operation: str, returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.operation = operation
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = stderr.decode("utf-8", "replace").strip() or "no error output"
        if returncode < 0:
            status = f"was killed by signal {-returncode}"
        else:
            status = f"exited with status {returncode}"
        super().__init__(f"{operation} {status}: {detail}")


class SubprocessStartError(SubprocessError):
    """The child could not be started at all (missing binary, bad cwd, ...)."""

    def __init__(self, operation: str, argv0: str, cause: OSError) -> None:
        self.operation = operation
        self.argv0 = argv0
        self.cause = cause
        super().__init__(f"{operation}: cannot start {argv0!r}: {cause.strerror or cause}")


@attrs.frozen
class ProcessResult:
    """What a finished child left behind."""

    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is already gone: nothing left to signal
    except PermissionError:
        # A pgid we may not signal can only mean the group is gone and the
        # number was reused by someone else's process: never touch it.
        pass


async def _terminate_group(proc: trio.Process, grace: float) -> None:
    """SIGTERM the child's group, SIGKILL it after ``grace``, reap the child.

    Runs shielded: it must finish even while the caller is being cancelled,
    and it is bounded (``grace`` plus the time a SIGKILLed child takes to die).
    """
    with trio.CancelScope(shield=True):
        _signal_group(proc.pid, signal.SIGTERM)
        with trio.move_on_after(grace):
            await proc.wait()
        # Grandchildren that ignore SIGTERM may outlive the child: always
        # finish the group off, whether or not the child itself has exited.
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                await trio.aclose_forcefully(stream)


async def _read_all(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    while chunk := await stream.receive_some(_READ_SIZE):
        into += chunk


async def _feed(stream: trio.abc.SendStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the child closed its stdin early; its exit status tells the story
    finally:
        await stream.aclose()


async def _spawn(
    argv: Sequence[str],
    *,
    operation: str,
    stdin: int,
    stderr: int,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
) -> trio.Process:
    try:
        return await trio.lowlevel.open_process(
            list(argv),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise SubprocessStartError(operation, argv[0], exc) from exc


async def run_process(
    argv: Sequence[str],
    *,
    operation: str,
    timeout: float,  # noqa: ASYNC109 - a hard, named deadline is this helper's contract
    input: bytes | None = None,
    check: bool = True,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    kill_grace: float = DEFAULT_TIMEOUTS.kill_grace,
) -> ProcessResult:
    """Run ``argv`` to completion and return its exit status and output.

    Owns one child process (in its own process group) until it is reaped.
    ``timeout`` is a hard limit on the whole run, enforced here with a Trio
    cancel scope; ``operation`` is the human label used in errors.

    Raises:
        SubprocessTimeoutError: the deadline passed; the group was killed and reaped.
        SubprocessFailedError: ``check`` is true and the exit status is not 0.
        SubprocessStartError: the command could not be started.
        trio.Cancelled: the caller's scope was cancelled (the group is killed first).
    """
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    proc = await _spawn(
        argv,
        operation=operation,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
    )
    out = bytearray()
    err = bytearray()
    finished = False
    try:
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                assert proc.stdout is not None and proc.stderr is not None
                nursery.start_soon(_read_all, proc.stdout, out)
                nursery.start_soon(_read_all, proc.stderr, err)
                if input is not None:
                    assert proc.stdin is not None
                    nursery.start_soon(_feed, proc.stdin, input)
                await proc.wait()
            finished = True
    finally:
        if not finished:
            await _terminate_group(proc, kill_grace)
    if not finished:
        global timeouts_total
        timeouts_total += 1
        raise SubprocessTimeoutError(operation, timeout, proc.pid)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            await stream.aclose()
    assert proc.returncode is not None
    result = ProcessResult(tuple(argv), proc.returncode, bytes(out), bytes(err))
    if check and result.returncode != 0:
        raise SubprocessFailedError(operation, result.returncode, result.stdout, result.stderr)
    return result


@asynccontextmanager
async def open_process_group(
    argv: Sequence[str],
    *,
    operation: str,
    stdin: bool = True,
    close_grace: float = DEFAULT_TIMEOUTS.control_close,
    kill_grace: float = DEFAULT_TIMEOUTS.kill_grace,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[trio.Process]:
    """Own a long-lived child process for the duration of the block.

    The child gets pipes for stdin (unless ``stdin`` is false) and stdout;
    stderr is discarded so that it can never fill up and block the child.
    On exit from the block, stdin is closed (a polite "please stop"), the
    child gets ``close_grace`` seconds to exit by itself, then its whole
    process group is terminated (SIGTERM, ``kill_grace``, SIGKILL) and the
    child is reaped. This cleanup runs shielded, so it also happens when the
    block is left by cancellation.

    Raises:
        SubprocessStartError: the command could not be started.
    """
    proc = await _spawn(
        argv,
        operation=operation,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
    )
    try:
        yield proc
    finally:
        with trio.CancelScope(shield=True):
            if proc.stdin is not None:
                await trio.aclose_forcefully(proc.stdin)
            with trio.move_on_after(close_grace):
                await proc.wait()
            await _terminate_group(proc, kill_grace)


class ExitWatch:
    """Wait for a process that is *not* our child to exit (a tmux pane's process).

    Uses a pidfd on Linux: the wait is event-driven, costs no subprocess and no
    polling, and is immune to PID reuse once opened. Elsewhere it falls back
    to checking the PID every 50 ms. Use as a context manager (it owns the fd).
    """

    _POLL_INTERVAL = 0.05

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd: int | None = None
        self._gone = False
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._gone = True
        except (AttributeError, OSError):
            self._fd = None  # no pidfd support: poll instead

    def __enter__(self) -> ExitWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def wait(self) -> None:
        """Return once the process has exited (at once if it already had)."""
        if self._gone:
            return
        if self._fd is not None:
            await trio.lowlevel.wait_readable(self._fd)
            self._gone = True
            return
        while True:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self._gone = True
                return
            await trio.sleep(self._POLL_INTERVAL)


def unix_session_members(sid: int) -> Iterable[int]:
    """PIDs whose Unix session id is ``sid`` (Linux /proc; empty elsewhere)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # Fields after the parenthesised command name: state ppid pgrp session ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        # Zombies are already dead; they only wait for their parent to reap them.
        if int(fields[3]) == sid and fields[0] != b"Z":
            yield int(entry)


def signal_unix_session(sid: int, sig: int) -> int:
    """Signal every live process in Unix session ``sid`` (a pane's processes).

    Returns how many were signalled; signal 0 just counts the live ones.
    """
    count = 0
    pids = set(unix_session_members(sid))
    if sig and not pids:
        try:
            os.killpg(sid, sig)  # no /proc (not Linux): the pane's own group
        except (ProcessLookupError, PermissionError):
            pass  # the group is already gone
    for pid in pids:
        try:
            os.kill(pid, sig)
            count += 1
        except (ProcessLookupError, PermissionError):
            continue  # exited meanwhile
    return count


def signal_session_but_leader(leader: int, sig: int) -> None:
    """Signal every live process of the Unix session ``leader`` leads, but ``leader`` itself
    (a pane's command and its children, not the start wrapper, which must live on to record
    the exit status). Processes that exit meanwhile (or are not ours) are skipped."""
    for pid in set(unix_session_members(leader)) - {leader}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
