"""`run --url` (a daemon reached over TCP, as one on another computer is) connects a stdin that is
not a terminal through the daemon's API: byte for byte, of any size, and its end is the
command's EOF. The CLI shares no file with the daemon for it (no FIFO of its own)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..api.test_stdin import TOKEN, Daemon
from ..conftest import Sandbox
from ..test_daemon import stop

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def daemon(sandbox: Sandbox) -> Iterator[Daemon]:
    # 127.0.0.2: to the CLI, as remote as another computer (it can share no file with it)
    running = Daemon(sandbox, host="127.0.0.2")
    try:
        yield running
    finally:
        assert stop(running.proc) == 0


def run(
    sandbox: Sandbox, daemon: Daemon, *cmd: str, token: str | None = TOKEN, **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    env = {**sandbox.env, "TRIO_BRIDGE_URL": daemon.url}
    if token is not None:
        env["TRIO_BRIDGE_TOKEN"] = token
    return sandbox.cli("run", "--", *cmd, env=env, timeout=90, **kwargs)


def test_piped_bytes_arrive_whole(sandbox: Sandbox, daemon: Daemon, tmp_path: Path) -> None:
    result = run(sandbox, daemon, "cat", input=b"hi\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hi\n", b"")
    # binary, NUL bytes and what a terminal would eat, more than 1 MiB (the daemon's body limit)
    data = os.urandom(3 << 20) + b"\0\x03\x04\x1a\r\n" * 4096
    result = run(sandbox, daemon, "sha256sum", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest().encode()
    # stdin a regular file: `run -- wc -c < bigfile`
    big = tmp_path / "big"
    big.write_bytes(data)
    with big.open("rb") as stdin:
        result = run(sandbox, daemon, "wc", "-c", stdin=stdin)
    assert (result.returncode, result.stdout.split()) == (0, [str(len(data)).encode()]), result.stderr
    # the daemon's records show the commands as given: no wrapper, no path of ours
    with daemon.client() as client:
        commands = sorted(session["command"] for session in client.sessions())
    assert commands == [["cat"], ["sha256sum"], ["wc", "-c"]]


def test_the_end_of_stdin_is_the_commands_eof(sandbox: Sandbox, daemon: Daemon) -> None:
    with open("/dev/null", "rb") as devnull:
        result = run(sandbox, daemon, "sh", "-c", "cat; echo after-eof", stdin=devnull)
    assert (result.returncode, result.stdout) == (0, b"after-eof\n"), result.stderr
    result = run(sandbox, daemon, "sh", "-c", "cat; echo after-eof", input=b"last line without newline")
    assert (result.returncode, result.stdout) == (0, b"last line without newlineafter-eof\n"), result.stderr


def test_a_command_that_stops_reading_ends_the_run(sandbox: Sandbox, daemon: Daemon) -> None:
    # `head -1` exits after one line while our stdin has more and never ends
    env = {**sandbox.env, "TRIO_BRIDGE_URL": daemon.url, "TRIO_BRIDGE_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "run", "--", "head", "-n", "1"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"first\nsecond\n")
        proc.stdin.flush()
        stdout, stderr = proc.communicate(timeout=30)
        assert (proc.returncode, stdout, stderr) == (0, b"first\n", b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_no_token_no_run(sandbox: Sandbox, daemon: Daemon) -> None:
    result = run(sandbox, daemon, "cat", token=None, input=b"secret\n")
    assert result.returncode == 125
    assert b"token" in result.stderr.lower()
    with daemon.client() as client:
        assert client.sessions() == []


def test_a_lost_daemon_ends_the_commands_input_and_says_so(sandbox: Sandbox) -> None:
    running = Daemon(sandbox, host="127.0.0.2")
    env = {
        **sandbox.env, "TRIO_BRIDGE_URL": running.url, "TRIO_BRIDGE_TOKEN": TOKEN,
        "TRIO_BRIDGE_RECONNECT_TIMEOUT": "1",
    }  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "run", "--", "cat"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"before\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"before\n"
        running.proc.kill()  # gone at once: no answer, no close of the session
        running.proc.wait(10)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 75, stderr
        assert b"stdin: the connection to the daemon dropped" in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        stop(running.proc)
