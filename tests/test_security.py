"""The local doors, tried as an attacker would: a web page (DNS rebinding, cross-origin), another
local user, hostile hook requests, a flood of connections. Each test fails on commit cf64982.

Everything runs against a real daemon on loopback or its unix socket; "another user" is the
real ``nobody`` (through ``setpriv``), where the test runs as root.
"""

from __future__ import annotations

import gc
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_bridge.agents.payload import safe_path
from trio_bridge.cli._text import printable

from ._api import (
    API_RESTARTS,
    Daemon,
    assert_error,
    create,
    metric,
    running_daemon,
    session_ids,
    wait_ended,
    websocket_client_leak,
    ws_handshake,
)  # fmt: skip
from ._api import daemon_and_client as api
from .conftest import Sandbox
from .sessions.test_agent_sessions import agent_sandbox  # noqa: F401  (a fixture)
from .test_daemon import start_daemon, stop

SESSIONS_RESTARTS = 'trio_bridge_supervisor_restarts_total{service="sessions"}'

as_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (another real user)"
)


def tcp_parts(daemon: Daemon) -> tuple[str, int]:
    assert daemon.running.api_url is not None
    host, port = daemon.running.api_url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[bytes]:
    nobody = pwd.getpwnam("nobody")
    return subprocess.run(
        ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", *argv],
        capture_output=True,
        timeout=10,
    )


def open_to_others(sandbox: Sandbox) -> None:
    """Make every directory above the state dir traversable, so that only trio-bridge's own
    modes stand between another user and the files (as under a real home directory)."""
    for path in (sandbox.root, sandbox.root / "state"):
        path.mkdir(exist_ok=True)
        os.chmod(path, 0o755)


# -- TCP: token, Host, Origin -----------------------------------------------------------------


async def test_dns_rebinding_and_tokenless_tcp_are_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    """No token configured: the TCP listener still needs one (made into a 0600 file); a request
    naming another host is 421 even with it; nothing runs."""
    with trio.fail_after(30):
        async with api(sandbox, bind="127.0.0.1:0") as (daemon, client):
            host, port = tcp_parts(daemon)
            token_file = daemon.settings.token_path
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            token = token_file.read_text().strip()
            assert len(token) >= 32
            body = {"command": ["touch", str(tmp_path / "pwned")]}
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as tcp:
                # the attack as a page on evil.example rebound to 127.0.0.1 sends it: no token
                evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
                assert (await tcp.post("/v1/sessions", json=body, headers=evil)).status_code in (401, 421)
                assert_error(await tcp.post("/v1/sessions", json=body), 401, "unauthorized")
                assert_error(await tcp.get("/v1/sessions"), 401, "unauthorized")
                auth = {"Authorization": f"Bearer {token}"}
                for bad_host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}",
                                 f"127.0.0.1:{port + 1}", "", "a b"):  # fmt: skip
                    response = await tcp.get("/v1/sessions", headers={**auth, "Host": bad_host})
                    assert_error(response, 421, "misdirected_request")
                    response = await tcp.post("/v1/sessions", json=body, headers={**auth, "Host": bad_host})
                    assert_error(response, 421, "misdirected_request")
                for good_host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
                    response = await tcp.get("/v1/health", headers={**auth, "Host": good_host})
                    assert response.status_code == 200, (good_host, response.text)
            assert await session_ids(client) == []
            assert not (tmp_path / "pwned").exists()
            # the owner's CLI finds the token by itself; other users cannot read it
            result = await trio.to_thread.run_sync(
                lambda: sandbox.cli("--url", f"http://{host}:{port}", "ls", "--json")
            )
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout) == []


async def test_an_allowed_host_name_is_admitted(sandbox: Sandbox) -> None:
    with trio.fail_after(30):
        async with api(sandbox, bind="127.0.0.1:0", allowed_hosts=("my-box.lan",)) as (daemon, _):
            _, port = tcp_parts(daemon)
            async with daemon.client(tcp=True) as tcp:
                assert (
                    await tcp.get("/v1/health", headers={"Host": f"my-box.lan:{port}"})
                ).status_code == 200
                response = await tcp.get("/v1/health", headers={"Host": f"other-box.lan:{port}"})
                assert_error(response, 421, "misdirected_request")


@websocket_client_leak
async def test_cross_origin_requests_are_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    """A page of another site, even one the attacker made Host agree with, is refused: HTTP and
    WebSocket; the daemon's own origin and listed origins are admitted."""
    with trio.fail_after(30):
        overrides: dict[str, Any] = {"bind": "127.0.0.1:0", "allowed_origins": ("https://dash.example",)}
        async with api(sandbox, **overrides) as (daemon, client):
            host, port = tcp_parts(daemon)
            session = await create(client, tmp_path, command=["cat"])
            sid = session["id"]
            async with daemon.client(tcp=True) as tcp:
                evil = f"http://evil.example:{port}"
                lookalike = f"http://127.0.0.1:{port}.evil.example"
                for origin in (
                    "http://evil.example",
                    evil,
                    "null",
                    lookalike,
                    f"http://127.0.0.1:{port + 1}",
                ):
                    response = await tcp.post(
                        "/v1/sessions", json={"command": ["true"]}, headers={"Origin": origin}
                    )
                    assert_error(response, 403, "cross_origin")
                    response = await tcp.post(
                        f"/v1/sessions/{sid}/input", json={"text": "x"}, headers={"Origin": origin}
                    )
                    assert_error(response, 403, "cross_origin")
                for origin in (
                    f"http://127.0.0.1:{port}",
                    f"http://localhost:{port}",
                    "https://dash.example",
                ):
                    response = await tcp.get("/v1/sessions", headers={"Origin": origin})
                    assert response.status_code == 200, (origin, response.text)
            assert await session_ids(client) == [sid]
            # the WebSocket: an attacker's Host and Origin agreeing is no pass
            path = f"/v1/sessions/{sid}/ws"
            evil_origin = f"http://evil.example:{port}"
            async with daemon.client(tcp=True) as tcp, daemon.client(tcp=True, token="") as anonymous:
                refused = await ws_handshake(tcp, path, Origin=evil_origin)
                assert_error(refused, 403, "cross_origin")
                refused = await ws_handshake(tcp, path, Origin=evil_origin, Host=f"evil.example:{port}")
                assert_error(refused, 421, "misdirected_request")
                assert_error(await ws_handshake(anonymous, path), 401, "unauthorized")
            url = f"ws://{host}:{port}{path}"
            auth = [(b"Authorization", f"Bearer {daemon.tcp_token}".encode())]
            own = [(b"Origin", f"http://127.0.0.1:{port}".encode())]
            async with trio_websocket.open_websocket_url(url, extra_headers=auth + own) as ws:
                assert json.loads(await ws.get_message())["type"] == "hello"
    gc.collect()


# -- hooks ------------------------------------------------------------------------------------


async def agent_session(client: httpx.AsyncClient, tmp_path: Path) -> str:
    # a session whose hooks are accepted: any session takes hooks; a fake agent is not needed
    return str((await create(client, tmp_path, command=["sleep", "300"]))["id"])


async def test_hostile_hooks_are_refused_and_never_stop_the_daemon(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with api(sandbox) as (_, client):
            sid = await agent_session(client, tmp_path)
            hooks = f"/v1/sessions/{sid}/hooks"
            deep: Any = "x"
            for _ in range(100):
                deep = {"a": deep}
            hostile = [
                {"event": "SessionStart", "payload": {"transcript_path": "/x\u0000"}},
                {"event": "SessionStart", "payload": {"transcript_path": "relative/path"}},
                {"event": "SessionStart", "payload": {"transcript_path": "/x\x1b[2J"}},
                {"event": "SessionStart", "payload": {"transcript_path": 7}},
                {"event": "SessionStart", "payload": {"session_id": "x" * 500}},
                {"event": "Stop", "payload": {"anything": {"deep": ["\ud800"]}}},
                {"event": "UserPromptSubmit", "payload": {"prompt": "\ud800"}},
                {"event": "UserPromptSubmit", "payload": {"prompt": "a\u0000b"}},
                {"event": "Stop\u0000", "payload": {}},
                {"event": "Stop", "payload": deep},
            ]
            for body in hostile:
                raw = json.dumps(body)  # \ud800 travels as JSON's own escape, as an attacker sends it
                response = await client.post(hooks, content=raw, headers={"Content-Type": "application/json"})
                # 400: nested too deep to be parsed at all; 422: parsed, and refused
                assert_error(response, 400 if body["payload"] is deep else 422)
            # never forwarded to another computer
            response = await client.post(hooks, params={"computer": "other"}, json={"event": "Stop"})
            assert_error(response, 422, "invalid_computer")
            agent = await client.get(f"/v1/sessions/{sid}/agent")
            assert agent.status_code == 200 and agent.json()["transcript_path"] is None
            # a good hook still works
            good = {"event": "SessionStart", "payload": {"transcript_path": str(tmp_path / "t.jsonl")}}
            assert (await client.post(hooks, json=good)).status_code == 204
            await trio.sleep(1.5)  # the agents watcher looks once a second
            text = (await client.get("/metrics")).text
            assert metric(text, SESSIONS_RESTARTS) == 0
            assert (await client.get(f"/v1/sessions/{sid}")).json()["state"] == "running"


async def test_a_bad_stored_agent_value_never_crash_loops_a_restart(sandbox: Sandbox, tmp_path: Path) -> None:
    """What an older daemon kept (a transcript path with NUL, an unknown state) is read back with
    care: the restarted daemon serves, its sessions service does not restart."""
    with trio.fail_after(40):
        async with api(sandbox) as (daemon, client):
            sid = await agent_session(client, tmp_path)
            record = await daemon.manager.store.get(sid)
            spoiled = attrs.evolve(record, agent="claude", agent_state="bogus", transcript_path="/x\u0000y")
            await daemon.manager.store.update(spoiled)
        async with api(sandbox) as (daemon, client):
            agent = await client.get(f"/v1/sessions/{sid}/agent")
            assert agent.status_code == 200, agent.text
            await trio.sleep(1.5)
            assert metric((await client.get("/metrics")).text, SESSIONS_RESTARTS) == 0
            assert (await client.get("/v1/health")).status_code == 200


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=20,
)
_hook_fields = st.fixed_dictionaries(
    {},
    optional={
        key: _json_values | st.text(alphabet=st.characters(), max_size=60)
        for key in (
            "transcript_path",
            "session_id",
            "thread-id",
            "prompt",
            "type",
            "cwd",
            "notification_type",
            "input-messages",
        )
    },
)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_fuzzed_hook_payloads_get_no_5xx(sandbox: Sandbox, tmp_path: Path) -> None:
    bodies: list[dict[str, Any]] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        event=st.sampled_from(["SessionStart", "Stop", "UserPromptSubmit"]) | st.text(max_size=9),
        payload=_hook_fields,
    )  # fmt: skip
    def collect(event: str, payload: dict[str, Any]) -> None:
        bodies.append({"event": event, "payload": payload})

    collect()
    statuses: dict[int, int] = {}
    with trio.fail_after(100):
        async with api(sandbox) as (_, client):
            sid = await agent_session(client, tmp_path)
            for body in bodies:
                raw = json.dumps(body)
                response = await client.post(
                    f"/v1/sessions/{sid}/hooks", content=raw, headers={"Content-Type": "application/json"}
                )
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert response.status_code < 500, (body, response.text)
                assert (await client.get(f"/v1/sessions/{sid}/agent")).status_code == 200
            await trio.sleep(1.5)
            assert metric((await client.get("/metrics")).text, SESSIONS_RESTARTS) == 0
    assert statuses.get(204) and statuses.get(422), statuses  # both kinds were tried


# -- secrets ----------------------------------------------------------------------------------


def test_secrets_never_reach_sessions_or_the_process_table(sandbox: Sandbox, tmp_path: Path) -> None:
    token, secret = "tok-" + "a" * 30, "mesh-" + "b" * 30
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    env = {**sandbox.env, "TRIO_BRIDGE_MESH_SECRET": secret, "TRIO_BRIDGE_TOKEN_FILE": str(token_file)}
    out = tmp_path / "env.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "daemon"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        while b"ready" not in (line := proc.stderr.readline()):
            assert line, "the daemon did not start"
        client_env = {**sandbox.env, "TRIO_BRIDGE_TOKEN": token}
        created = sandbox.cli("new", "--", "sh", "-c", f"env > {out}", env=client_env)
        assert created.returncode == 0, created.stderr
        assert sandbox.cli("wait", created.stdout.decode().strip(), env=client_env).returncode == 0
        seen = out.read_text()
        assert "TRIO_BRIDGE_SESSION_ID" in seen  # the session's own variables are there
        assert token not in seen and secret not in seen
        assert "TRIO_BRIDGE_TOKEN=" not in seen and "TRIO_BRIDGE_MESH_SECRET=" not in seen
        tmux_env = sandbox.tmux("show-environment", "-g").stdout
        assert token not in tmux_env and secret not in tmux_env
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert token.encode() not in f.read()
        with open(f"/proc/{proc.pid}/environ", "rb") as f:
            environ = f.read()  # (the initial environment: what the kernel keeps from exec)
        assert token.encode() not in environ
        # the embedded run, from a shell holding the secrets, does not pass them on either
        ran = sandbox.cli("run", "--embedded", "--", "env", env={**env, "TRIO_BRIDGE_TOKEN": token})
        assert ran.returncode == 0 and b"PATH=" in ran.stdout
        assert token.encode() not in ran.stdout and secret.encode() not in ran.stdout
    finally:
        assert stop(proc) == 0


def test_secret_files_must_be_private_and_config_hides_them(sandbox: Sandbox, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-" + "x" * 20 + "\n")
    os.chmod(token_file, 0o644)
    shown = sandbox.cli("--token-file", str(token_file), "config")
    assert shown.returncode == 2 and b"readable by others" in shown.stderr
    os.chmod(token_file, 0o600)
    shown = sandbox.cli("--token-file", str(token_file), "config", "--json")
    assert shown.returncode == 0, shown.stderr
    settings_ = json.loads(shown.stdout)["settings"]
    assert settings_["token"]["value"] == "(set, hidden)"
    assert "flag --token-file" in settings_["token"]["source"]
    assert b"s3cret" not in shown.stdout


# -- files and directories --------------------------------------------------------------------


@as_root
def test_state_is_private_under_umask_022(sandbox: Sandbox, tmp_path: Path) -> None:
    open_to_others(sandbox)
    os.chmod(tmp_path, 0o755)
    old = os.umask(0o022)
    try:
        proc = start_daemon(sandbox, "--bind", "127.0.0.1:0")
    finally:
        os.umask(old)
    try:
        created = sandbox.cli(
            "new", "--cwd", str(tmp_path), "--", "sh", "-c", "echo private-output; sleep 300"
        )
        assert created.returncode == 0, created.stderr
        sid = created.stdout.decode().strip()
        assert sandbox.cli("kill", sid).returncode == 0
    finally:
        assert stop(proc) == 0
    state = sandbox.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = [p for p in state.rglob("*") if p.is_file() and not p.is_symlink()]
    logs = [p for p in files if p.name.startswith("seg.")]
    assert logs and any(p.name == "screen.txt" for p in files) and any(p.name == "sessions.db" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    for path in [p for p in state.rglob("*") if p.is_dir()]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert b"private-output" in b"".join(p.read_bytes() for p in logs)
    # another user reads nothing: not the output, not the database, not the token
    for path in (logs[0], state / "sessions.db", state / "api.token"):
        refused = as_nobody("cat", str(path))
        assert refused.returncode != 0 and b"Permission denied" in refused.stderr, path


@as_root
def test_older_files_are_made_private_at_start(sandbox: Sandbox) -> None:
    open_to_others(sandbox)
    state = sandbox.state_dir
    state.mkdir(parents=True)
    os.chmod(state, 0o755)
    leftover = state / "sessions" / "old" / "screen.txt"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("old screen")
    os.chmod(leftover, 0o644)
    proc = start_daemon(sandbox)
    try:
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE(leftover.stat().st_mode) == 0o600
    finally:
        assert stop(proc) == 0


@as_root
@pytest.mark.parametrize("which", ["state", "runtime"])
def test_a_directory_of_another_user_is_refused(sandbox: Sandbox, tmp_path: Path, which: str) -> None:
    """Pre-created by another user, with a link trap in it: refused with one line; the link's
    target untouched, no socket placed there."""
    open_to_others(sandbox)
    nobody = pwd.getpwnam("nobody").pw_uid
    foreign = tmp_path / f"foreign-{which}"
    foreign.mkdir()
    os.chmod(tmp_path, 0o755)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (foreign / "daemon.lock").symlink_to(victim)
    os.lchown(foreign / "daemon.lock", nobody, nobody)
    os.chown(foreign, nobody, nobody)
    flag = "--state-dir" if which == "state" else "--runtime-dir"
    result = sandbox.cli("daemon", flag, str(foreign), timeout=20)
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "belongs to user" in lines[0], lines
    assert victim.read_text() == "precious\n"
    assert not (foreign / "api.sock").exists()
    # writable by others, even if ours: refused too
    os.chown(foreign, 0, 0)
    os.chmod(foreign, 0o777)
    result = sandbox.cli("daemon", flag, str(foreign), timeout=20)
    assert result.returncode == 1 and b"can be written by others" in result.stderr


# -- connections ------------------------------------------------------------------------------


async def test_a_flood_of_unauthenticated_connections_does_not_lock_out_the_owner(sandbox: Sandbox) -> None:
    """300 clients each send the headers of a POST and one byte of its body: every one gets its
    refusal and is closed; meanwhile the owner's unix socket answers, and afterwards TCP too."""
    attackers = 300
    with trio.fail_after(60):
        async with running_daemon(sandbox, bind="127.0.0.1:0", max_connections=100) as daemon:
            host, port = tcp_parts(daemon)
            closed = 0
            answered = 0

            async def attack() -> None:
                nonlocal closed, answered
                try:
                    stream = await trio.open_tcp_stream(host, port)
                except OSError:
                    closed += 1  # refused at once is fine too
                    return
                async with stream:
                    head = (
                        f"POST /v1/sessions HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
                    )
                    try:
                        await stream.send_all(head.encode())
                        data = b""
                        with trio.move_on_after(10):
                            while chunk := await stream.receive_some():
                                data += chunk
                            closed += 1
                        answered += data.startswith(b"HTTP/1.1 401")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        closed += 1

            async with trio.open_nursery() as nursery, daemon.client() as owner:
                for _ in range(attackers):
                    nursery.start_soon(attack)
                await trio.sleep(0.5)
                with trio.fail_after(5):
                    assert (await owner.get("/v1/health")).status_code == 200
            assert closed == attackers, (closed, answered)
            assert answered >= 100  # those admitted got their 401 (the rest were closed at once)
            async with daemon.client(tcp=True) as tcp:
                assert (await tcp.get("/v1/health")).status_code == 200


# -- terminal injection -----------------------------------------------------------------------


def test_printable_escapes_control_and_format_characters() -> None:
    assert printable("plain title é 日本") == "plain title é 日本"
    assert printable("\x1b]0;PWNED\x07\x1b[2J") == "\\x1b]0;PWNED\\x07\\x1b[2J"
    assert printable("a\u202eb\x9bc\ud800") == "a\\u202eb\\x9bc\\ud800"
    assert "\x1b" not in printable("".join(map(chr, range(0x20))))


async def test_ls_prints_no_terminal_escapes(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with api(sandbox) as (daemon, client):
            sid = (await create(client, tmp_path, command=["sleep", "300"]))["id"]
            record = await daemon.manager.store.get(sid)
            await daemon.manager.store.update(attrs.evolve(record, title="\x1b]0;PWNED\x07\x1b[2J"))
            result = await trio.to_thread.run_sync(lambda: sandbox.cli("ls"))
            assert result.returncode == 0, result.stderr
            assert b"\x1b" not in result.stdout and b"\x07" not in result.stdout
            assert b"\\x1b]0;PWNED" in result.stdout
            await client.delete(f"/v1/sessions/{sid}")
            await wait_ended(client, sid)


def test_safe_path() -> None:
    assert safe_path("/home/u/.claude/t.jsonl") == "/home/u/.claude/t.jsonl"
    for bad in ("rel", "/x\x00", "/x\ud800", "/x\n", 5, None, "/" + "a" * 5000):
        assert safe_path(bad) is None


async def test_metrics_and_restarts_untouched_by_refusals(sandbox: Sandbox) -> None:
    """Refusals are answers, not crashes: the API's supervisor saw none."""
    with trio.fail_after(30):
        async with api(sandbox, bind="127.0.0.1:0") as (daemon, client):
            host, port = tcp_parts(daemon)
            async with await trio.open_tcp_stream(host, port) as raw:
                await raw.send_all(b"GET /v1/health HTTP/1.1\r\nHost: evil.example\r\n\r\n")
                assert (await raw.receive_some(100)).startswith(b"HTTP/1.1 421")
            assert metric((await client.get("/metrics")).text, API_RESTARTS) == 0


async def test_one_agents_failing_watch_is_contained(agent_sandbox: Sandbox, tmp_path: Path) -> None:  # noqa: F811
    """A failure injected into one agent's tracking: that agent reads `unknown` (the error logged),
    the other agent's states go on, the sessions service is never restarted."""
    from .sessions.test_agent_sessions import agent_api, agent_info, start_agent, wait_until

    with trio.fail_after(40):
        async with agent_api(agent_sandbox, tmp_path) as (daemon, client):
            broken = (await start_agent(client, tmp_path, "fake-claude"))["id"]
            healthy = (await start_agent(client, tmp_path, "fake-claude"))["id"]
            await wait_until(client, broken, "idle")
            await wait_until(client, healthy, "idle")
            tracker = daemon.manager.agent(broken)
            assert tracker is not None

            def fail(*args: object) -> None:
                raise RuntimeError("injected")

            tracker.check = fail  # type: ignore[method-assign]
            await wait_until(client, broken, "unknown", timeout=5)
            assert "injected" in (await agent_info(client, broken))["evidence"]
            # the other agent is still watched: a prompt makes it work, then idle again
            response = await client.post(f"/v1/sessions/{healthy}/prompt", json={"text": "go on"})
            assert response.status_code == 204, response.text
            await wait_until(client, healthy, "idle")
            assert metric((await client.get("/metrics")).text, SESSIONS_RESTARTS) == 0
