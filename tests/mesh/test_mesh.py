"""The Redis mesh: scan_keys, computers' heartbeats, discovery and names, with a real redis-server
that each test starts on a free loopback port (and stops, by its PID)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import httpx
import pytest
import trio

from trio_bridge.mesh import open_redis, scan_keys

from ..conftest import REPO, Sandbox, free_port, modules_a_daemon_loads
from ..test_daemon import stop

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


class RedisServer:
    """A redis-server of this test's, on a free loopback port; it can be killed and restarted."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.directory = directory
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory),
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.proc.terminate()
            server.proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


async def test_scan_keys_walks_empty_batches_and_yields_each_key_once(redis_url: str) -> None:
    with trio.fail_after(30):
        async with open_redis(redis_url) as redis:
            for start in range(0, 10_000, 1000):
                await redis.pipeline([("SET", f"other:{n}", n) for n in range(start, start + 1000)])
            wanted = {f"tb:computer:{name}" for name in ("a", "b", "c", "dd", "e-1")}
            await redis.pipeline([("SET", key, "x") for key in wanted])
            calls_before = int(
                (await redis.call("INFO", "commandstats")).get("cmdstat_scan", {}).get("calls", 0)
            )
            async with aclosing(scan_keys(redis, "tb:computer:*", count=10)) as keys:
                found = [key async for key in keys]
            stats = (await redis.call("INFO", "commandstats"))["cmdstat_scan"]
    assert sorted(found) == sorted(wanted)  # each exactly once
    # with COUNT 10 over ~10,005 keys the walk took hundreds of calls, nearly all empty batches
    assert int(stats["calls"]) - calls_before > 500


def test_keys_is_never_called() -> None:
    offenders = []
    for path in (REPO / "trio_bridge").rglob("*.py"):
        text = path.read_text()
        if re.search(r"""["']KEYS["']|\.keys\(\s*["'*]""", text):
            offenders.append(str(path))
    assert offenders == []


class Computer:
    """A daemon process on its own state dir, runtime dir and tmux server, in the mesh."""

    def __init__(self, sandbox: Sandbox, name: str, redis_url: str, **extra: str) -> None:
        root = sandbox.root / name
        root.mkdir(exist_ok=True)
        self.sandbox = sandbox
        self.socket = f"{sandbox.socket_name}-{name}"
        self.env = {
            **sandbox.env,
            "TRIO_BRIDGE_STATE_DIR": str(root / "state"),
            "TRIO_BRIDGE_RUNTIME_DIR": str(root / "run"),
            "TRIO_BRIDGE_TMUX_SOCKET": self.socket,
            "TRIO_BRIDGE_REDIS": redis_url,
            "TRIO_BRIDGE_COMPUTER": name,
            "TRIO_BRIDGE_HEARTBEAT_INTERVAL": "0.2",
            "TRIO_BRIDGE_HEARTBEAT_TTL": "1",
            **extra,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        #: what the daemon wrote to stderr (complete once it stopped)
        self.log = ""

    def start(self) -> str:
        """Start it; return the first stderr line that says ready, or what it said instead."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trio_bridge", "daemon"], env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 15
        seen = ""
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode()
            seen += line
            if "ready" in line or not line:
                break
        self.log += seen
        return seen

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return self.sandbox.cli(*args, env=self.env)

    def open_streams(self) -> int:
        """The streams (SSE, WebSocket) its API serves now, from its metrics."""
        from trio_bridge.config import resolve_settings

        socket_path = str(resolve_settings(self.env).settings.api_socket)
        with httpx.Client(transport=httpx.HTTPTransport(uds=socket_path), timeout=10) as http:
            for line in http.get("http://trio-bridge/metrics").text.splitlines():
                if line.startswith("trio_bridge_api_streams "):
                    return int(float(line.split()[1]))
        raise AssertionError("no trio_bridge_api_streams metric")

    def computers(self) -> dict[str, dict[str, object]]:
        result = self.cli("computers", "--json")
        assert result.returncode == 0, result.stderr.decode()
        return {c["name"]: c for c in json.loads(result.stdout)["computers"]}

    def wait_exit(self) -> int:
        """Wait for it to exit by itself; its exit code."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=20)
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                assert stream is not None
                stream.close()
            self.proc = None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None and self.proc.stderr is not None
        self.proc.send_signal(sig)
        self.log += self.proc.stderr.read().decode()
        code = stop(self.proc, sig)
        self.proc = None
        return code

    def cleanup(self) -> None:
        if self.proc is not None:
            self.stop(signal.SIGKILL)
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"], env=self.env, capture_output=True, check=False
        )


@pytest.fixture
def computers(sandbox: Sandbox, redis_url: str) -> Iterator[list[Computer]]:
    made: list[Computer] = []
    yield made
    for computer in made:
        computer.cleanup()


def start_pair(
    sandbox: Sandbox, redis_url: str, computers: list[Computer], **extra: str
) -> tuple[Computer, Computer]:
    """Daemons "alpha" and "beta" in the mesh, both ready (stopped at the test's end)."""
    alpha, beta = (
        Computer(sandbox, "alpha", redis_url, **extra),
        Computer(sandbox, "beta", redis_url, **extra),
    )
    computers += [alpha, beta]
    assert "ready" in alpha.start()
    assert "ready" in beta.start()
    return alpha, beta


def wait_until(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


#: the legitimate mesh works the same without and with a mesh secret (every message signed)
MESH_SECRETS = pytest.mark.parametrize(
    "secret", [{}, {"TRIO_BRIDGE_MESH_SECRET": "s3cret-shared-by-the-mesh"}], ids=["open", "signed"]
)


@MESH_SECRETS
def test_discovery_offline_detection_and_unique_names(
    sandbox: Sandbox, redis_url: str, computers: list[Computer], secret: dict[str, str]
) -> None:
    alpha, beta = start_pair(sandbox, redis_url, computers, **secret)
    seen = alpha.computers()
    assert set(seen) == {"alpha", "beta"} and all(c["online"] for c in seen.values())
    assert seen["alpha"]["local"] and not seen["beta"]["local"]
    assert "sessions" in seen["beta"]["capabilities"]  # type: ignore[operator]
    table = alpha.cli("computers").stdout.decode()
    assert re.search(r"^beta\s+online", table, re.M)

    # the same name, while alpha lives: refused, in one line, and alpha is untouched
    twin = Computer(sandbox, "alpha", redis_url, TRIO_BRIDGE_STATE_DIR=str(sandbox.root / "twin"),
                    TRIO_BRIDGE_RUNTIME_DIR=str(sandbox.root / "twin-run"), **secret)  # fmt: skip
    computers.append(twin)
    said = twin.start()
    assert twin.wait_exit() == 1
    assert "computer name 'alpha' is in use" in said
    assert beta.computers()["alpha"]["online"]

    # a daemon killed outright: offline once its heartbeat's TTL has passed, still listed (not
    # asked right after the kill: a CLI that takes longer than the TTL (1 s) to start, on a
    # loaded machine, finds it offline already; the heartbeat's age says why it went)
    assert beta.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_until(lambda: not alpha.computers()["beta"]["online"], timeout=5)
    assert float(alpha.computers()["beta"]["age"]) >= 0.8  # type: ignore[arg-type]
    # ... and it can come back at once under its name (the holder is a dead process)
    assert "ready" in beta.start()
    assert alpha.computers()["beta"]["online"]
    # a graceful stop goes offline at once
    assert beta.stop() == 0
    assert not alpha.computers()["beta"]["online"]


def test_unreachable_redis_is_one_clear_line(sandbox: Sandbox, computers: list[Computer]) -> None:
    lonely = Computer(sandbox, "lonely", f"redis://127.0.0.1:{free_port()}/0")
    computers.append(lonely)
    said = lonely.start()
    assert lonely.wait_exit() == 1
    last = said.strip().splitlines()[-1]
    assert last.startswith("trio-bridge daemon: Redis at redis://127.0.0.1:") and "Traceback" not in said


def test_without_a_mesh_computers_lists_this_one(sandbox: Sandbox) -> None:
    from ..test_daemon import start_daemon

    daemon = start_daemon(sandbox)
    try:
        result = sandbox.cli("computers", "--json")
        assert result.returncode == 0
        document = json.loads(result.stdout)
        assert document["mesh"] is False and [c["local"] for c in document["computers"]] == [True]
    finally:
        assert stop(daemon) == 0


def test_single_computer_use_never_imports_the_mesh(sandbox: Sandbox) -> None:
    loaded = modules_a_daemon_loads(
        sandbox, "redis", "trio_asyncio", "trio_bridge.mesh", "trio_bridge.sessions"
    )
    # (it sees what the daemon loads: its sessions; not the mesh)
    assert "trio_bridge.sessions" in loaded and all(m.startswith("trio_bridge.sessions") for m in loaded)


def forwarded_create(command: list[str], cwd: str) -> dict[str, object]:
    """The inbox body of a forwarded ``POST /v1/sessions``."""
    data = json.dumps({"command": command, "cwd": cwd}).encode()
    return {
        "method": "POST", "path": "/v1/sessions", "query": {}, "content_type": "application/json",
        "data_b64": base64.b64encode(data).decode(),
    }  # fmt: skip


def redis_do(url: str, *commands: tuple[object, ...]) -> list[object]:
    """Run Redis commands (in order) through trio-bridge's own client."""

    async def run() -> list[object]:
        async with open_redis(url) as redis:
            return [await redis.call(*command) for command in commands]

    return trio.run(run)


def unwrap(raw: object) -> dict[str, object]:
    """The reply inside a reply envelope (``{from, time, sig, reply}``)."""
    assert isinstance(raw, str)
    reply = json.loads(json.loads(raw)["reply"])
    assert isinstance(reply, dict)
    return reply


@MESH_SECRETS
def test_remote_sessions_through_the_cli(
    sandbox: Sandbox, redis_url: str, computers: list[Computer], secret: dict[str, str]
) -> None:
    alpha, beta = start_pair(sandbox, redis_url, computers, **secret)

    def ok(result: subprocess.CompletedProcess[bytes]) -> str:
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    sid = ok(
        alpha.cli("new", "--computer", "beta", "--", "sh", "-c", 'read x; echo "got $x"; exit 6')
    ).strip()
    # it runs on beta, not on alpha
    assert sid in ok(beta.cli("ls")) and sid not in ok(alpha.cli("ls"))
    (record,) = json.loads(ok(alpha.cli("ls", "--computer", "beta", "--json")))
    assert record["computer"] == "beta" and record["state"] == "running"
    local = ok(alpha.cli("new", "--", "sleep", "300")).strip()
    everywhere = json.loads(ok(alpha.cli("ls", "--computer", "*", "--json")))
    assert {(s["computer"], s["id"]) for s in everywhere} == {("beta", sid), ("alpha", local)}
    ok(alpha.cli("send", "--computer", "beta", sid, "there"))
    assert alpha.cli("wait", "--computer", "beta", sid, "--timeout", "15").returncode == 6
    assert ok(alpha.cli("tail", "--computer", "beta", sid)).splitlines()[-1] == "got there"
    assert "got there" in ok(alpha.cli("screen", "--computer", "beta", sid))
    sleeper = ok(alpha.cli("new", "--computer", "beta", "--", "sleep", "300")).strip()
    ok(alpha.cli("keys", "--computer", "beta", sleeper, "C-c"))
    assert alpha.cli("wait", "--computer", "beta", sleeper, "--timeout", "15").returncode == 130
    other = ok(alpha.cli("new", "--computer", "beta", "--", "sleep", "300")).strip()
    assert ok(alpha.cli("kill", "--computer", "beta", other)).split() == [other, "killed"]
    # refusals come back as refusals, naming what was wrong
    refused = alpha.cli("kill", "--computer", "beta", other)
    assert refused.returncode == 1 and "has ended" in refused.stderr.decode()
    unknown = alpha.cli("ls", "--computer", "gamma")
    assert unknown.returncode == 1 and "no computer 'gamma'" in unknown.stderr.decode()
    ok(alpha.cli("kill", local))
    assert beta.stop() == 0
    offline = alpha.cli("ls", "--computer", "beta")
    assert offline.returncode == 1 and "'beta' is offline" in offline.stderr.decode()


def test_a_request_left_unacknowledged_is_handled_after_a_restart_once(
    sandbox: Sandbox, redis_url: str, computers: list[Computer], tmp_path: Path
) -> None:
    beta = Computer(sandbox, "beta", redis_url)
    computers.append(beta)
    assert "ready" in beta.start()  # creates the inbox and its consumer group
    assert beta.stop() == 0
    body = forwarded_create(["sh", "-c", "echo once"], str(tmp_path))
    entry = [
        "id",
        "req-1",
        "from",
        "alpha",
        "session",
        "",
        "time",
        repr(time.time()),
        "body",
        json.dumps(body),
    ]
    # delivered to beta's consumer but never acknowledged: as if beta died while handling it
    delivered = redis_do(
        redis_url,
        ("XADD", "tb:inbox:beta", "*", *entry),
        ("XREADGROUP", "GROUP", "tb", "beta", "COUNT", 10, "STREAMS", "tb:inbox:beta", ">"),
        ("XPENDING", "tb:inbox:beta", "tb"),
    )
    assert delivered[2]["pending"] == 1  # type: ignore[index]
    assert "ready" in beta.start()
    wait_until(lambda: redis_do(redis_url, ("XPENDING", "tb:inbox:beta", "tb"))[0]["pending"] == 0)  # type: ignore[index]
    (reply,) = redis_do(redis_url, ("LRANGE", "tb:reply:alpha:req-1", 0, -1))
    assert len(reply) == 1 and unwrap(reply[0])["status"] == 201  # type: ignore[arg-type,index]
    # the same request again (a requester retrying): answered again, not handled again
    redis_do(redis_url, ("XADD", "tb:inbox:beta", "*", *entry))
    wait_until(lambda: len(redis_do(redis_url, ("LRANGE", "tb:reply:alpha:req-1", 0, -1))[0]) == 2)  # type: ignore[arg-type]
    sessions = json.loads(beta.cli("ls", "--json").stdout)
    assert [s["command"] for s in sessions] == [["sh", "-c", "echo once"]]


def test_with_a_secret_forged_requests_are_refused_and_logged(
    sandbox: Sandbox, redis_url: str, computers: list[Computer], tmp_path: Path
) -> None:
    alpha, beta = start_pair(
        sandbox, redis_url, computers, TRIO_BRIDGE_MESH_SECRET="s3cret-shared-by-the-mesh"
    )
    # signed requests work
    created = alpha.cli("new", "--computer", "beta", "--", "sleep", "300")
    assert created.returncode == 0, created.stderr.decode()
    sid = created.stdout.decode().strip()
    assert alpha.cli("kill", "--computer", "beta", sid).returncode == 0
    body = json.dumps(forwarded_create(["touch", str(tmp_path / "pwned")], "/"))
    now = repr(time.time())
    for fields in (
        ["id", "f-1", "from", "alpha", "session", "", "time", now, "body", body],  # unsigned
        ["id", "f-2", "from", "alpha", "session", "", "time", now, "body", body, "sig", "0" * 64],  # forged
    ):
        redis_do(redis_url, ("XADD", "tb:inbox:beta", "*", *fields))
    wait_until(lambda: redis_do(redis_url, ("XPENDING", "tb:inbox:beta", "tb"))[0]["pending"] == 0)  # type: ignore[index]
    time.sleep(0.3)
    assert not (tmp_path / "pwned").exists()
    assert redis_do(redis_url, ("EXISTS", "tb:reply:alpha:f-1", "tb:reply:alpha:f-2")) == [0]
    assert [s["id"] for s in json.loads(beta.cli("ls", "--json").stdout)] == [sid]
    assert beta.stop() == 0
    assert beta_log_mentions(beta, "refused request 'f-1'") and beta_log_mentions(
        beta, "refused request 'f-2'"
    )


def beta_log_mentions(computer: Computer, text: str) -> bool:
    return text in computer.log


@MESH_SECRETS
def test_a_remote_reader_loses_nothing_when_redis_restarts(
    sandbox: Sandbox, redis_server: RedisServer, computers: list[Computer], secret: dict[str, str]
) -> None:
    alpha, _ = start_pair(sandbox, redis_server.url, computers, **secret)
    printer = "import time\nfor i in range(80):\n    print(f'line {i:03d}', flush=True)\n    time.sleep(0.05)"
    created = alpha.cli("new", "--computer", "beta", "--", sys.executable, "-c", printer)
    assert created.returncode == 0, created.stderr.decode()
    sid = created.stdout.decode().strip()
    reader = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "tail", "-f", "--from", "0", "--computer", "beta", sid],
        env=alpha.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # streaming (a reader still starting when Redis goes is refused: it never had a stream)
        wait_until(lambda: alpha.open_streams() == 1 or reader.poll() is not None, timeout=20)
        redis_server.kill()  # mid-stream
        down = alpha.cli("computers")  # a 503 naming Redis, not a 500
        assert down.returncode == 1 and b"redis" in down.stderr.lower(), down.stderr.decode()
        assert b"internal" not in down.stderr.lower(), down.stderr.decode()
        time.sleep(0.7)
        redis_server.start()  # empty: streams, groups and heartbeats are gone
        out, err = reader.communicate(timeout=45)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert reader.returncode == 0, err.decode()
    assert out.decode().splitlines() == [f"line {i:03d}" for i in range(80)]  # no gap, no duplicate
    # and both daemons are back in the mesh
    wait_until(lambda: all(c["online"] for c in alpha.computers().values()), timeout=10)
    assert set(alpha.computers()) == {"alpha", "beta"}


def events_until_exited(response: httpx.Response) -> list[tuple[str, str, str]]:
    """The lifecycle events streamed, as (kind, computer, session id), up to the first exit."""
    seen = []
    event = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            session = json.loads(line[6:])["session"]
            seen.append((event, session["computer"], session["id"]))
            if event == "exited":
                break
    return seen


@MESH_SECRETS
def test_lifecycle_events_of_another_computer(
    sandbox: Sandbox, redis_url: str, computers: list[Computer], secret: dict[str, str]
) -> None:
    alpha, beta = start_pair(sandbox, redis_url, computers, **secret)
    socket_path = Path(alpha.env["TRIO_BRIDGE_RUNTIME_DIR"]) / "api.sock"
    with (
        httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://a", timeout=30
        ) as client,
        client.stream("GET", "/v1/events", params={"computer": "*"}) as response,
    ):
        assert response.status_code == 200
        created = beta.cli("new", "--", "true")
        assert created.returncode == 0
        sid = created.stdout.decode().strip()
        seen = events_until_exited(response)
    assert seen == [(kind, "beta", sid) for kind in ("created", "running", "exited")]


def test_events_of_a_computer_that_joins_later(
    sandbox: Sandbox, redis_url: str, computers: list[Computer]
) -> None:
    """``?computer=*`` follows a computer that joined after the stream began, from that start:
    its first session's events, made before the reader saw it join, are not lost."""
    alpha = Computer(sandbox, "alpha", redis_url)
    beta = Computer(sandbox, "beta", redis_url)
    computers += [alpha, beta]
    assert "ready" in alpha.start()
    socket_path = Path(alpha.env["TRIO_BRIDGE_RUNTIME_DIR"]) / "api.sock"
    with (
        httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://a", timeout=30
        ) as client,
        client.stream("GET", "/v1/events", params={"computer": "*"}) as response,
    ):
        assert response.status_code == 200
        assert "ready" in beta.start()
        created = beta.cli("new", "--", "true")  # (at once: before alpha looks for new computers)
        assert created.returncode == 0
        sid = created.stdout.decode().strip()
        seen = events_until_exited(response)
    assert seen == [(kind, "beta", sid) for kind in ("created", "running", "exited")]


def test_a_redis_password(sandbox: Sandbox, tmp_path: Path, computers: list[Computer]) -> None:
    server = RedisServer(tmp_path, password="pa55-word")
    server.start()
    try:
        wrong = Computer(sandbox, "wrong", server.url.replace("pa55-word", "guess"))
        right = Computer(sandbox, "right", server.url)
        computers += [wrong, right]
        said = wrong.start()
        assert wrong.wait_exit() == 1
        last = said.strip().splitlines()[-1]
        assert (
            last.startswith("trio-bridge daemon: Redis") and "pa55-word" not in said and "guess" not in said
        )
        assert "ready" in right.start()
        assert right.computers()["right"]["online"]
    finally:
        for computer in computers:
            computer.cleanup()
        computers.clear()
        server.kill()
