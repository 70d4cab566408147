"""Clients survive a daemon restart: `run` (through the daemon), `tail -f`, `wait` and `attach`
reconnect, resume from the last byte received (no gap, no duplicate) and exit as they would
have; past ``reconnect_timeout`` they exit with one line and their own exit code."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from trio_bridge.config import resolve_settings

from ..conftest import Sandbox
from ..test_daemon import start_daemon, stop

EXIT_DAEMON_LOST = 75
LINES = 50
# one line every 0.1 s: the restart happens while it runs
SCRIPT = f"for i in $(seq 1 {LINES}); do echo line $i; sleep 0.1; done; exit 4"


def cli(
    sandbox: Sandbox, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", *args],
        env=env or sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
    )  # fmt: skip


def read_until(fd: int, needle: bytes, timeout: float = 15) -> bytes:
    """Read ``fd`` until ``needle`` has come (bounded)."""
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} in {data!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"EOF before {needle!r} in {data!r}"
            data += chunk
    return data


def connected(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Wait until the client has a socket open (it reached the daemon; sync clients have no
    other socket)."""
    deadline = time.monotonic() + timeout
    while True:
        fds = Path(f"/proc/{proc.pid}/fd")
        links = []
        for fd in fds.iterdir() if fds.exists() else []:
            try:
                links.append(os.readlink(fd))
            except OSError:
                continue
        if any(link.startswith("socket:") for link in links):
            return
        assert proc.poll() is None, "the client exited"
        assert time.monotonic() < deadline, "the client never connected"
        time.sleep(0.02)


def api_streams(sandbox: Sandbox) -> int:
    """Open SSE/WebSocket streams, from the daemon's metrics."""
    settings = resolve_settings(sandbox.env).settings
    transport = httpx.HTTPTransport(uds=str(settings.api_socket))
    with httpx.Client(transport=transport, base_url="http://trio-bridge", timeout=10) as http:
        for line in http.get("/metrics").text.splitlines():
            if line.startswith("trio_bridge_api_streams "):
                return int(float(line.split()[1]))
    raise AssertionError("no trio_bridge_api_streams metric")


def finish(proc: subprocess.Popen[bytes], first: bytes = b"") -> tuple[bytes, bytes]:
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return first + out, err


def expected_lines() -> list[str]:
    return [f"line {i}" for i in range(1, LINES + 1)]


def test_run_tail_and_wait_survive_a_daemon_restart(sandbox: Sandbox, tmp_path: Path) -> None:
    daemon = start_daemon(sandbox)
    clients: list[subprocess.Popen[bytes]] = []
    try:
        new = subprocess.run(
            [sys.executable, "-m", "trio_bridge", "new", "--", "sh", "-c", SCRIPT],
            env=sandbox.env, capture_output=True, timeout=15, cwd=tmp_path, check=True,
        )  # fmt: skip
        session_id = new.stdout.decode().strip()
        run = cli(sandbox, "run", "--", "sh", "-c", SCRIPT, cwd=tmp_path)
        tail = cli(sandbox, "tail", "-f", "-n", "1000", session_id)
        wait = cli(sandbox, "wait", session_id)
        clients += [run, tail, wait]
        assert run.stdout is not None and tail.stdout is not None
        connected(wait)
        run_first = read_until(run.stdout.fileno(), b"line 3\n")
        tail_first = read_until(tail.stdout.fileno(), b"line 3\n")
        stop(daemon)
        time.sleep(0.5)  # the clients find no daemon for a while
        daemon = start_daemon(sandbox)
        run_out, run_err = finish(run, run_first)
        tail_out, tail_err = finish(tail, tail_first)
        _, wait_err = finish(wait)
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        stop(daemon)
    # every byte exactly once, and the command's own exit code
    assert run_out.decode().splitlines() == expected_lines(), run_err
    assert run.returncode == 4, run_err
    assert tail_out.decode().splitlines() == expected_lines(), tail_err
    assert tail.returncode == 0, tail_err
    assert wait.returncode == 4, wait_err
    for err in (run_err, tail_err, wait_err):
        assert err.count(b"reconnecting") == 1, err
        assert b"Traceback" not in err, err


def test_clients_give_up_after_the_bound(sandbox: Sandbox, tmp_path: Path) -> None:
    env = {**sandbox.env, "TRIO_BRIDGE_RECONNECT_TIMEOUT": "1"}
    daemon = start_daemon(sandbox)
    clients: list[subprocess.Popen[bytes]] = []
    try:
        run = cli(sandbox, "run", "--", "sh", "-c", SCRIPT, env=env, cwd=tmp_path)
        clients.append(run)
        assert run.stdout is not None
        read_until(run.stdout.fileno(), b"line 2\n")
        session_id = subprocess.run(
            [sys.executable, "-m", "trio_bridge", "ls", "--json"], env=sandbox.env, capture_output=True,
            timeout=15, check=True,
        ).stdout  # fmt: skip
        assert session_id
        wait = cli(sandbox, "wait", json.loads(session_id)[0]["id"], env=env)
        clients.append(wait)
        connected(wait)
        stop(daemon)
        started = time.monotonic()
        _, run_err = finish(run)
        _, wait_err = finish(wait)
        elapsed = time.monotonic() - started
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if daemon.poll() is None:
            stop(daemon)
    assert run.returncode == EXIT_DAEMON_LOST, run_err
    assert wait.returncode == EXIT_DAEMON_LOST, wait_err
    for err in (run_err, wait_err):
        lines = err.decode().splitlines()
        assert len(lines) == 2, lines  # "reconnecting", then the one line of giving up
        assert "reconnecting" in lines[0] and "did not come back within 1 s" in lines[1], lines
    assert elapsed < 15


def test_attach_survives_a_daemon_restart(sandbox: Sandbox, tmp_path: Path) -> None:
    daemon = start_daemon(sandbox)
    main, secondary = pty.openpty()
    attach: subprocess.Popen[bytes] | None = None
    try:
        script = "read line; echo got $line; sleep 0.5; read again; echo then $again; exit 5"
        new = subprocess.run(
            [sys.executable, "-m", "trio_bridge", "new", "--", "sh", "-c", script],
            env=sandbox.env, capture_output=True, timeout=15, cwd=tmp_path, check=True,
        )  # fmt: skip
        session_id = new.stdout.decode().strip()
        attach = subprocess.Popen(
            [sys.executable, "-m", "trio_bridge", "attach", session_id],
            env=sandbox.env, stdin=secondary, stdout=secondary, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(secondary)
        secondary = -1
        time.sleep(1.0)  # attached (the terminal in raw mode)
        os.write(main, b"first\r")
        seen = read_until(main, b"got first")
        stop(daemon)
        time.sleep(0.3)
        daemon = start_daemon(sandbox)
        time.sleep(1.5)  # reconnected
        os.write(main, b"second\r")
        seen += read_until(main, b"then second")
        assert attach.wait(timeout=15) == 5
        assert attach.stderr is not None
        err = attach.stderr.read()
    finally:
        if attach is not None and attach.poll() is None:
            attach.kill()
            attach.wait()
        if attach is not None and attach.stderr is not None:
            attach.stderr.close()
        os.close(main)
        if secondary >= 0:
            os.close(secondary)
        stop(daemon)
    assert seen.count(b"got first") == 1, seen  # resumed after the last byte: no duplicate
    assert err.count(b"reconnecting") == 1, err


def test_events_resume_after_a_daemon_restart(sandbox: Sandbox, tmp_path: Path) -> None:
    daemon = start_daemon(sandbox)
    events: subprocess.Popen[bytes] | None = None
    try:
        events = cli(sandbox, "events")
        assert events.stdout is not None
        deadline = time.monotonic() + 15
        while api_streams(sandbox) < 1:  # subscribed
            assert time.monotonic() < deadline
            time.sleep(0.05)

        def new(*argv: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "trio_bridge", "new", "--", *argv],
                env=sandbox.env, capture_output=True, timeout=15, cwd=tmp_path, check=True,
            )  # fmt: skip
            return done.stdout.decode().strip()

        first = new("sleep", "60")
        seen = read_until(events.stdout.fileno(), f"running {first}".encode())
        stop(daemon)
        time.sleep(0.3)
        daemon = start_daemon(sandbox)
        second = new("sleep", "60")
        seen += read_until(events.stdout.fileno(), f"running {second} running".encode())
        for session_id in (first, second):
            subprocess.run(
                [sys.executable, "-m", "trio_bridge", "kill", session_id],
                env=sandbox.env, capture_output=True, timeout=15, check=True,
            )  # fmt: skip
        seen += read_until(events.stdout.fileno(), f"killed {second}".encode())
        events.send_signal(signal.SIGINT)
        _, err = finish(events)
    finally:
        if events is not None and events.poll() is None:
            events.kill()
            events.communicate()
        stop(daemon)
    kinds = [tuple(line.split()[:2]) for line in seen.decode().splitlines()]
    # each event once, in order; across the restart, the new daemon's adoption is replayed
    assert kinds[:5] == [
        ("created", first), ("running", first), ("adopted", first), ("created", second), ("running", second),
    ], kinds  # fmt: skip
    assert len(kinds) == len(set(kinds)), kinds
    assert err.count(b"reconnecting") == 1, err
    assert err.count(b"resync") == 1, err  # told that the restart may have lost some
