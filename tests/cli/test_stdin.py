"""`run` connects stdin as `docker run -i` / ssh do: piped stdin reaches the command and its end
is the command's EOF (embedded and through the daemon); on a terminal `run` is interactive."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import Sandbox
from ..test_daemon import start_daemon, stop
from ._helpers import ok, wait_until


@pytest.fixture(params=["embedded", "daemon"])
def mode(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[str]:
    if request.param == "embedded":
        yield "embedded"
        return
    proc = start_daemon(sandbox)
    try:
        yield "daemon"
    finally:
        assert stop(proc) == 0


def test_piped_stdin_reaches_the_command_and_its_end_ends_it(sandbox: Sandbox, mode: str) -> None:
    result = sandbox.cli("run", "--", "cat", input=b"hi\nthere\n", timeout=20)
    assert (result.returncode, result.stdout) == (0, b"hi\nthere\n"), result.stderr
    # a stdin already at its end: the command sees EOF at once
    with open("/dev/null", "rb") as devnull:
        result = sandbox.cli("run", "--", "cat", stdin=devnull, timeout=20)
    assert (result.returncode, result.stdout) == (0, b""), result.stderr
    # bytes a terminal would eat (Ctrl-C, Ctrl-D, no final newline) arrive as they are
    script = "od -An -tx1 | tr -d ' \\n'"
    result = sandbox.cli("run", "--", "sh", "-c", script, input=b"a\x03b\x04c", timeout=20)
    assert (result.returncode, result.stdout) == (0, b"6103620463"), result.stderr
    if mode == "daemon":
        records = json.loads(ok(sandbox.cli("ls", "--json")))
        assert sorted(r["title"] for r in records) == sorted(["cat", "cat", shlex.join(["sh", "-c", script])])


def test_a_large_input_arrives_whole(sandbox: Sandbox, mode: str) -> None:
    data = b"".join(b"line %d\n" % n for n in range(20000))
    result = sandbox.cli("run", "--", "sh", "-c", "wc -l; wc -c </dev/null", input=data, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == b"20000"


def test_a_command_that_stops_reading_ends_the_run(sandbox: Sandbox, mode: str) -> None:
    # `head -1` exits after one line while stdin still has more (and never ends)
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "run", "--", "head", "-n", "1"],
        env=sandbox.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"first\nsecond\n")
        proc.stdin.flush()
        assert proc.stdout.read() == b"first\n"
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


def test_run_on_a_terminal_is_interactive(sandbox: Sandbox, tmp_path: Path) -> None:
    proc = start_daemon(sandbox)
    try:
        done = tmp_path / "run.status"
        command = (
            f"{sys.executable} -m trio_bridge run -- sh -c 'read -r x; echo got:$x; exit 3'; "
            f"echo $? > {done}; sleep 30"
        )
        sandbox.tmux("new-session", "-d", "-s", "user", "-x", "100", "-y", "30", command)
        wait_until(lambda: len(json.loads(ok(sandbox.cli("ls", "--json", "--state", "running")))) == 1)
        sandbox.tmux("send-keys", "-t", "=user:", "-l", "typed")
        sandbox.tmux("send-keys", "-t", "=user:", "Enter")
        wait_until(lambda: done.exists() and done.read_text().strip() != "")
        assert done.read_text().strip() == "3"
        screen = sandbox.tmux("capture-pane", "-p", "-t", "=user:").stdout
        assert "got:typed" in screen
        sandbox.tmux("kill-session", "-t", "=user")
    finally:
        assert stop(proc) == 0


def test_embedded_run_on_a_terminal_is_interactive(sandbox: Sandbox, tmp_path: Path) -> None:
    # no daemon: `run` types what the user types into its own session
    for keys, status in ((["-l", "typed"], "3"), (["C-]"], "130")):
        done = tmp_path / f"run-{status}.status"
        command = (
            f"{sys.executable} -m trio_bridge run -- sh -c 'read -r x; echo got:$x; exit 3'; "
            f"echo $? > {done}; sleep 30"
        )
        sandbox.tmux("new-session", "-d", "-s", "user", "-x", "100", "-y", "30", command)
        # the run's own session exists: the command waits for its line
        wait_until(lambda: len(sandbox.tmux("list-sessions", "-F", "#{session_name}").stdout.split()) == 2)
        time.sleep(0.5)  # (its keyboard is connected once the command runs)
        sandbox.tmux("send-keys", "-t", "=user:", *keys)
        if status == "3":
            sandbox.tmux("send-keys", "-t", "=user:", "Enter")
        wait_until(lambda done=done: done.exists() and done.read_text().strip() != "")
        assert done.read_text().strip() == status
        if status == "3":
            assert "got:typed" in sandbox.tmux("capture-pane", "-p", "-t", "=user:").stdout
        sandbox.tmux("kill-session", "-t", "=user")
