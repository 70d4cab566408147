"""A session's stdin pipe over the API (``"stdin": "pipe"``, ``PUT /v1/sessions/{id}/stdin``),
against a real daemon on loopback TCP with a token (as a remote client reaches it) and real tmux:
bytes arrive whole, the body's end is the command's EOF, the body is read only as fast as the
command reads, and every way the pipe can be left (no feeder, a second one, a dropped connection,
the session ending) ends bounded with a clear answer."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trio_bridge.client import ApiError, Client

from ..conftest import Sandbox, free_port
from ..test_daemon import stop

TOKEN = "stdin-test-token-0123456789abcdef"

pytestmark = pytest.mark.timeout(90)


class Daemon:
    """A daemon process on loopback TCP (and its unix socket), with :data:`TOKEN`; ``host``
    another loopback address than 127.0.0.1: a client cannot tell it from another computer's."""

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", **env: str) -> None:
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trio_bridge", "daemon", "--bind", f"{host}:{self.port}"],
            env={**sandbox.env, "TRIO_BRIDGE_TOKEN": TOKEN, **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 15
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if b"ready" in line or not line:
                break
        assert b"ready" in line, line

    def client(self, token: str | None = TOKEN) -> Client:
        return Client(Path("/nonexistent"), url=self.url, token=token)


@pytest.fixture
def daemon(sandbox: Sandbox) -> Iterator[Daemon]:
    running = Daemon(sandbox, TRIO_BRIDGE_TIMEOUT_STDIN_ATTACH="2")
    try:
        yield running
    finally:
        assert stop(running.proc) == 0


def wait_until(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def output_of(client: Client, session_id: str) -> bytes:
    """The session's whole output once it ended (bounded)."""
    result = client.wait(session_id, 30)
    assert result["ended"], result
    data, _, _, _ = client.output(session_id, 0, 1 << 20)
    return data


def test_bytes_arrive_whole_and_the_end_of_the_body_is_eof(sandbox: Sandbox, daemon: Daemon) -> None:
    data = os.urandom(3 << 20) + b"\0\x03\x04\r\n\x1b[A" * 1000  # > 1 MiB, NULs, what a tty eats
    with daemon.client() as client:
        session = client.create(["sh", "-c", "sha256sum; echo after-eof"], stdin="pipe")
        # the record shows the command as given, not a wrapper
        assert session["command"] == ["sh", "-c", "sha256sum; echo after-eof"]
        chunks = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
        assert client.feed_stdin(session["id"], chunks) == {"delivered": len(data), "eof": True}
        out = output_of(client, session["id"])
        assert hashlib.sha256(data).hexdigest().encode() + b"  -" in out
        assert b"after-eof" in out
        assert client.get(session["id"])["exit_code"] == 0
        # an empty body: EOF at once
        session = client.create(["sh", "-c", "wc -c"], stdin="pipe")
        assert client.feed_stdin(session["id"], b"") == {"delivered": 0, "eof": True}
        assert output_of(client, session["id"]).split() == [b"0"]


def test_the_body_is_read_only_as_fast_as_the_command_reads(
    sandbox: Sandbox, daemon: Daemon, tmp_path: Path
) -> None:
    # the command reads nothing until `go` exists; the client offers 64 MiB meanwhile
    go = tmp_path / "go"
    total, chunk = 64 << 20, b"\0" * (1 << 20)
    produced = [0]

    def body() -> Iterator[bytes]:
        while produced[0] < total:
            produced[0] += len(chunk)
            yield chunk

    with daemon.client() as client:
        script = f"while [ ! -e {go} ]; do sleep 0.05; done; wc -c"
        session = client.create(["sh", "-c", script], stdin="pipe")
        result: list[object] = []
        feeder = threading.Thread(target=lambda: result.append(client.feed_stdin(session["id"], body())))
        feeder.start()
        try:
            # the client is held back: what it offered stops growing, far short of the whole
            wait_until(lambda: produced[0] >= 1 << 20)
            last = -1
            while produced[0] != last:
                last = produced[0]
                time.sleep(1.0)
            assert produced[0] < total // 2, produced[0]
        finally:
            go.touch()
            feeder.join(60)
        assert result == [{"delivered": total, "eof": True}]
        assert output_of(client, session["id"]).split() == [str(total).encode()]


def test_no_feeder_within_the_limit_is_eof(sandbox: Sandbox, daemon: Daemon) -> None:
    # the daemon runs with timeouts.stdin_attach = 2 s
    with daemon.client() as client:
        session = client.create(["sh", "-c", "cat; echo eof-seen; sleep 30"], stdin="pipe")
        wait_until(lambda: b"eof-seen" in client.output(session["id"])[0])
        # a feeder that comes late is told
        with pytest.raises(ApiError) as refused:
            client.feed_stdin(session["id"], b"late")
        assert (refused.value.status, refused.value.code) == (409, "stdin_closed")
        client.kill(session["id"])
        with pytest.raises(ApiError) as refused:
            client.feed_stdin(session["id"], b"ended")
        assert (refused.value.status, refused.value.code) == (409, "session_ended")


def test_a_second_feeder_is_refused(sandbox: Sandbox, daemon: Daemon) -> None:
    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield b"first\n"
        assert release.wait(30)
        yield b"second\n"

    with daemon.client() as client, daemon.client() as other:
        session = client.create(["cat"], stdin="pipe")
        result: list[object] = []
        feeder = threading.Thread(target=lambda: result.append(client.feed_stdin(session["id"], body())))
        feeder.start()
        try:
            wait_until(lambda: b"first" in client.output(session["id"])[0])
            with pytest.raises(ApiError) as refused:
                other.feed_stdin(session["id"], b"intruder\n")
            assert (refused.value.status, refused.value.code) == (409, "stdin_busy")
        finally:
            release.set()
            feeder.join(30)
        assert result == [{"delivered": 13, "eof": True}]
        assert output_of(client, session["id"]).replace(b"\r\n", b"\n") == b"first\nsecond\n"


def test_refusals(sandbox: Sandbox, daemon: Daemon) -> None:
    with daemon.client() as client:
        # a session that reads its terminal has no pipe
        session = client.create(["cat"])
        with pytest.raises(ApiError) as refused:
            client.feed_stdin(session["id"], b"x")
        assert (refused.value.status, refused.value.code) == (409, "no_stdin_pipe")
        client.kill(session["id"])
        with pytest.raises(ApiError) as refused:
            client.feed_stdin("000000000000", b"x")
        assert (refused.value.status, refused.value.code) == (404, "session_not_found")
        # the field is checked: a value it does not know, an agent
        for body, code in (
            ({"command": ["cat"], "stdin": "file"}, "invalid_request"),
            ({"agent": "claude", "stdin": "pipe"}, "invalid_stdin"),
        ):
            with pytest.raises(ApiError) as refused:
                client.request("POST", "/sessions", json=body)
            assert (refused.value.status, refused.value.code) == (422, code)
        piped = client.create(["sh", "-c", "cat; echo eof-seen"], stdin="pipe")
        with pytest.raises(ApiError) as refused:
            client.request("PUT", f"/sessions/{piped['id']}/stdin", json={"text": "x"})
        assert (refused.value.status, refused.value.code) == (415, "unsupported_media_type")
        # no token, a wrong token: refused before the session is looked at
        for token in (None, TOKEN + "x"):
            with daemon.client(token=token) as anonymous, pytest.raises(ApiError) as refused:
                anonymous.feed_stdin(piped["id"], b"intruder\n")
            assert refused.value.status == 401
        assert client.feed_stdin(piped["id"], b"mine\n") == {"delivered": 5, "eof": True}
        assert output_of(client, piped["id"]).replace(b"\r\n", b"\n") == b"mine\neof-seen\n"


def _put_head(port: int, session_id: str) -> socket.socket:
    """A chunked ``PUT .../stdin`` begun by hand: its headers sent, the body not ended."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn.sendall(
        f"PUT /v1/sessions/{session_id}/stdin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    return conn


def test_a_dropped_feeder_is_eof(sandbox: Sandbox, daemon: Daemon) -> None:
    with daemon.client() as client:
        session = client.create(["sh", "-c", "cat; echo eof-seen"], stdin="pipe")
        conn = _put_head(daemon.port, session["id"])
        conn.sendall(b"6\r\npart1\n\r\n")
        wait_until(lambda: b"part1" in client.output(session["id"])[0])
        conn.close()  # mid-body
        out = output_of(client, session["id"])
        assert out.replace(b"\r\n", b"\n") == b"part1\neof-seen\n"
        assert client.get(session["id"])["exit_code"] == 0


def test_a_feeder_is_answered_when_the_session_ends(sandbox: Sandbox, daemon: Daemon) -> None:
    with daemon.client() as client:
        # the command reads 5 bytes and exits; the feeder sent 10 and has not ended its body
        session = client.create(["head", "-c", "5"], stdin="pipe")
        conn = _put_head(daemon.port, session["id"])
        try:
            conn.sendall(b"a\r\n0123456789\r\n")
            response = b""
            while b"\r\n\r\n" not in response or not response.endswith(b"}"):
                data = conn.recv(4096)
                if not data:
                    break
                response += data
        finally:
            conn.close()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), response
        assert json.loads(body) == {"delivered": 10, "eof": False}
        assert b"01234" in output_of(client, session["id"])


def test_a_daemon_stop_is_eof_and_a_restart_adopts_the_session(sandbox: Sandbox) -> None:
    first = Daemon(sandbox, TRIO_BRIDGE_TIMEOUT_STDIN_ATTACH="60")
    try:
        with first.client() as client:
            session = client.create(["sh", "-c", "cat; echo eof-seen; exec sleep 60"], stdin="pipe")
    finally:
        assert stop(first.proc) == 0
    # the daemon's end of the pipe went with it: the command read its end of input
    second = Daemon(sandbox, TRIO_BRIDGE_TIMEOUT_STDIN_ATTACH="1")
    try:
        with second.client() as client:
            wait_until(lambda: b"eof-seen" in client.output(session["id"])[0])
            assert client.get(session["id"])["state"] == "running"
            client.kill(session["id"])
    finally:
        assert stop(second.proc) == 0
