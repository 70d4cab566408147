"""The bounded process helper, with real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest
import trio

from trio_bridge.process import (
    ExitWatch,
    SubprocessFailedError,
    SubprocessStartError,
    SubprocessTimeoutError,
    open_process_group,
    run_process,
    signal_session_but_leader,
    unix_session_members,
)

from .conftest import is_alive, live_pids_matching


async def test_success_returns_output() -> None:
    result = await run_process(["sh", "-c", "echo out; echo err >&2"], operation="echo", timeout=5)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"out\n", b"err\n")


async def test_input_is_fed_to_stdin() -> None:
    data = os.urandom(300_000)  # more than a pipe buffer: feeding and reading run together
    result = await run_process(["cat"], operation="cat", timeout=10, input=data)
    assert result.stdout == data


async def test_nonzero_exit_raises_with_code_and_stderr() -> None:
    with pytest.raises(SubprocessFailedError) as info:
        await run_process(["sh", "-c", "echo broken >&2; exit 3"], operation="demo step", timeout=5)
    assert info.value.returncode == 3
    assert info.value.stderr == b"broken\n"
    assert "demo step exited with status 3: broken" in str(info.value)


async def test_nonzero_exit_without_check_is_returned() -> None:
    result = await run_process(["sh", "-c", "exit 4"], operation="x", timeout=5, check=False)
    assert result.returncode == 4


async def test_missing_binary_raises_start_error() -> None:
    with pytest.raises(SubprocessStartError) as info:
        await run_process(["/nonexistent/tb-binary"], operation="start it", timeout=5)
    assert info.value.operation == "start it"


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan")])
async def test_bad_timeout_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        await run_process(["true"], operation="x", timeout=bad)


async def test_timeout_kills_stubborn_child_and_grandchild() -> None:
    """A child that ignores SIGTERM and has a grandchild: both gone, error carries the facts."""
    marker = f"tb-marker-{uuid.uuid4().hex}"
    script = f"trap '' TERM; sleep 300 & sleep 301; : {marker}"
    start = trio.current_time()
    with pytest.raises(SubprocessTimeoutError) as info:
        await run_process(["sh", "-c", script], operation="stubborn", timeout=0.5, kill_grace=0.3)
    elapsed = trio.current_time() - start
    error = info.value
    assert (error.operation, error.timeout) == ("stubborn", 0.5)
    assert error.pid > 0
    assert str(error) == f"stubborn timed out after 0.5 s (pid {error.pid}, killed)"
    # timeout + grace, with room for a loaded machine; far below the children's 300 s
    assert elapsed < 10
    with pytest.raises(ProcessLookupError):
        os.kill(error.pid, 0)  # reaped: not even a zombie
    assert live_pids_matching(marker) == []
    # The grandchild `sleep 300` shares the group: it was killed too (SIGKILLed with the
    # group; it may take a moment to be scheduled and die)
    with trio.fail_after(10):
        while _children_of_pgrp(error.pid):
            await trio.sleep(0.02)


def _children_of_pgrp(pgid: int) -> list[int]:
    """Live members of a process group (zombies are dead: they wait for init to reap them)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


async def test_cancellation_kills_the_group() -> None:
    marker = f"tb-marker-{uuid.uuid4().hex}"
    with trio.move_on_after(0.3) as scope:
        await run_process(["sh", "-c", f"sleep 300; : {marker}"], operation="x", timeout=60)
    assert scope.cancelled_caught
    assert live_pids_matching(marker) == []


async def test_process_group_is_stopped_on_exit() -> None:
    marker = f"tb-marker-{uuid.uuid4().hex}"
    async with open_process_group(
        ["sh", "-c", f"trap '' TERM; sleep 300; : {marker}"],
        operation="long-lived",
        close_grace=0.1,
        kill_grace=0.2,
    ) as proc:
        assert proc.returncode is None
    assert proc.returncode is not None
    assert live_pids_matching(marker) == []


async def test_exit_watch_sees_a_non_child_exit() -> None:
    # The grandchild is not our child; ExitWatch still sees it exit.
    result = await run_process(
        ["sh", "-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"], operation="spawn", timeout=5
    )
    pid = int(result.stdout)
    with ExitWatch(pid) as watch:
        assert is_alive(pid)
        with trio.fail_after(5):
            await watch.wait()
    assert not is_alive(pid)


async def test_exit_watch_of_a_gone_process_returns_at_once() -> None:
    proc = await trio.lowlevel.open_process([sys.executable, "-c", "pass"])
    await proc.wait()
    with ExitWatch(proc.pid) as watch, trio.fail_after(1):
        await watch.wait()


async def test_signalling_a_unix_session_spares_its_leader() -> None:
    # setsid: the shell leads a new Unix session (exec'd in place: our child); two sleeps in it;
    # once they are gone it waits on its stdin (a pipe nobody writes)
    proc = await trio.lowlevel.open_process(
        ["setsid", "sh", "-c", "sleep 300 & sleep 301 & wait; read x"], stdin=subprocess.PIPE
    )
    try:
        with trio.fail_after(10):
            while len(set(unix_session_members(proc.pid))) < 3:  # sh and its two sleeps
                await trio.sleep(0.02)
            assert os.getsid(proc.pid) == proc.pid
            signal_session_but_leader(proc.pid, signal.SIGTERM)
            while set(unix_session_members(proc.pid)) != {proc.pid}:
                await trio.sleep(0.02)
        assert is_alive(proc.pid)  # the leader lives on (as a pane's start wrapper must)
    finally:
        proc.kill()
        await proc.wait()
        assert proc.stdin is not None
        await proc.stdin.aclose()
