"""Agent sessions end to end: a daemon, real tmux, and the fake agent CLI (tests/fake_agent.py)
started through agent profiles, whose hooks call the real ``hook.py`` configured per session
exactly as for the real CLIs (Claude's ``--settings``, Codex's ``-c notify``, Gemini's system
settings file). Every test is bounded by ``trio.fail_after``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from .._api import Daemon, daemon_and_client, metric
from ..conftest import Sandbox

FAKE_AGENT = Path(__file__).parent.parent / "fake_agent.py"
#: an "agent" that writes into its Gemini session home, and (as the user's own Gemini would)
#: into the user's ~/.gemini meanwhile
GEMINI_WRITER = """
g="$GEMINI_CLI_HOME/.gemini"
echo remembered > "$g/GEMINI.md"
mkdir "$g/history" && echo h > "$g/history/work"
echo theirs > "$HOME/.gemini/state.json"
echo sessions > "$g/state.json"
"""


def fake_profiles(extra: str = "") -> str:
    """Config file text: one fake profile per flavor, configured as the real ones are."""
    python = json.dumps(sys.executable)
    script = json.dumps(str(FAKE_AGENT))
    return f"""
[agents.fake-claude]
binary = {python}
args = [{script}, "--flavor", "claude", "--busy", "0.3"]
hooks = "claude"
confirm = "hook"
waiting_patterns = ["Do you want to proceed\\\\?"]

[agents.fake-codex]
binary = {python}
args = [{script}, "--flavor", "codex", "--busy", "0.3"]
hooks = "codex"
confirm = "output"

[agents.fake-gemini]
binary = {python}
args = [{script}, "--flavor", "gemini", "--busy", "0.3"]
hooks = "gemini"
confirm = "hook"
{extra}
"""


@pytest.fixture
def agent_sandbox(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    config = tmp_path / "config.toml"
    config.write_text(
        fake_profiles(
            f"""
[agents.fake-lossy]
binary = {json.dumps(sys.executable)}
args = [{json.dumps(str(FAKE_AGENT))}, "--flavor", "claude", "--busy", "0.3", "--drop-enters", "1"]
hooks = "claude"
confirm = "hook"

[agents.fake-hookless]
binary = {json.dumps(sys.executable)}
args = [{json.dumps(str(FAKE_AGENT))}, "--flavor", "claude", "--busy", "0.5"]
hooks = "none"

[agents.fake-quitter]
binary = "sh"
args = ["-c", "stty raw -echo; head -c 1 >/dev/null; exit 3", "sh"]
hooks = "none"

[agents.fake-gemini-writer]
binary = "sh"
args = ["-c", {json.dumps(GEMINI_WRITER)}, "sh"]
hooks = "gemini"

[agents.fake-boxed]
binary = {json.dumps(sys.executable)}
args = [{json.dumps(str(FAKE_AGENT))}, "--flavor", "claude", "--busy", "0.3"]
hooks = "claude"
confirm = "hook"
prompt_box = '^> (?P<text>.*)$'

[agents.fake-deaf]
binary = {json.dumps(sys.executable)}
args = [{json.dumps(str(FAKE_AGENT))}, "--flavor", "claude", "--drop-enters", "99"]
hooks = "claude"
confirm = "hook"
"""
        )
    )
    monkeypatch.setenv("TRIO_BRIDGE_CONFIG", str(config))
    # the sandbox's env copies os.environ minus TRIO_BRIDGE_*: put the config back explicitly
    (tmp_path / "home").mkdir()
    return sandbox


def env_of(sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    return {**sandbox.env, "TRIO_BRIDGE_CONFIG": str(tmp_path / "config.toml")}


@asynccontextmanager
async def agent_api(sandbox: Sandbox, tmp_path: Path) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    from trio_bridge.config import resolve_settings

    settings = resolve_settings(env_of(sandbox, tmp_path)).settings
    async with daemon_and_client(sandbox, agents=settings.agents) as (daemon, client):
        yield daemon, client


async def start_agent(client: httpx.AsyncClient, tmp_path: Path, agent: str, **fields: Any) -> dict[str, Any]:
    body = {"agent": agent, "cwd": str(tmp_path), "env": {"HOME": str(tmp_path / "home")}, **fields}
    response = await client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    assert session["agent"] == agent and session["agent_state"] == "starting"
    return session


async def wait_until(
    client: httpx.AsyncClient, sid: str, *states: str, timeout: float = 15
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/sessions/{sid}/wait", params={"until": ",".join(states), "timeout": timeout}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert result["reached"], (states, result, (await client.get(f"/v1/sessions/{sid}/screen")).text)
    return result["session"]


async def agent_info(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    result: dict[str, Any] = (await client.get(f"/v1/sessions/{sid}/agent")).json()
    return result


def transcript(session: dict[str, Any]) -> list[dict[str, Any]]:
    """The fake agent's transcript events, to its last newline (it may be writing the next)."""
    path = Path(session["transcript_path"])
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]


async def test_prompt_at_start_reports_working_then_idle_with_its_conversation_id(
    agent_sandbox: Sandbox, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with agent_api(agent_sandbox, tmp_path) as (_, client):
            events: list[dict[str, Any]] = []

            async def collect() -> None:
                from contextlib import aclosing

                from .._api import sse_events

                async with client.stream("GET", "/v1/events") as stream, aclosing(sse_events(stream)) as sse:
                    async for event in sse:
                        if event.event == "agent":
                            events.append(event.json())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect)
                # subscribed (an event before it would be missed)
                while metric((await client.get("/metrics")).text, "trio_bridge_api_streams") < 1:
                    await trio.sleep(0.02)
                session = await start_agent(
                    client, tmp_path, "fake-claude", prompt="hello there", model="m-1"
                )
                sid = session["id"]
                assert "--settings" in session["command"] and session["command"][-1] == "hello there"
                assert session["command"][-3:-1] == ["--model", "m-1"]
                final = await wait_until(client, sid, "idle")
                nursery.cancel_scope.cancel()
            assert final["native_id"] and final["transcript_path"], final
            info = await agent_info(client, sid)
            assert info["last_prompt"] == "hello there" and info["state"] == "idle"
            # SessionStart made it idle, the prompt working, Stop idle again: in this order
            states = [e["agent"] for e in events if e["session"]["id"] == sid]
            assert states[-2:] == ["working", "idle"], states
            # `ls` shows the agent's state
            # (a process: the daemon runs in this test's event loop, which must not block)
            listed = await trio.run_process(
                [sys.executable, "-m", "trio_bridge", "ls"], env=env_of(agent_sandbox, tmp_path),
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert listed.returncode == 0, listed.stderr
            assert "fake-claude:idle" in listed.stdout.decode(), listed.stdout


async def test_a_long_multiline_prompt_arrives_whole(agent_sandbox: Sandbox, tmp_path: Path) -> None:
    lines = [f"line {n}: " + "x" * 90 for n in range(1000)]  # ~100 KB
    text = "\n".join(lines)
    with trio.fail_after(40):
        async with agent_api(agent_sandbox, tmp_path) as (_, client):
            session = await start_agent(client, tmp_path, "fake-claude")
            sid = session["id"]
            await wait_until(client, sid, "idle")
            response = await client.post(f"/v1/sessions/{sid}/prompt", json={"text": text}, timeout=40)
            assert response.status_code == 204, response.text
            await wait_until(client, sid, "idle")
            info = await agent_info(client, sid)
            assert info["last_prompt"] == text  # what the agent's own hook reported, byte for byte
            record = (await client.get(f"/v1/sessions/{sid}")).json()
            prompts = [e["prompt"] for e in transcript(record) if e["type"] == "user"]
            assert prompts == [text]


async def test_a_dropped_enter_is_detected_and_retried_once(agent_sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with agent_api(agent_sandbox, tmp_path) as (daemon, client):
            daemon.manager.tuning = attrs.evolve(daemon.manager.tuning, prompt_confirm_timeout=2.0)
            session = await start_agent(client, tmp_path, "fake-lossy")
            sid = session["id"]
            await wait_until(client, sid, "idle")
            response = await client.post(f"/v1/sessions/{sid}/prompt", json={"text": "two\nlines"})
            assert response.status_code == 204, response.text
            await wait_until(client, sid, "idle")
            record = (await client.get(f"/v1/sessions/{sid}")).json()
            entries = transcript(record)
            assert [e["prompt"] for e in entries if e["type"] == "user"] == ["two\nlines"]  # once
            assert [e["reason"] for e in entries if e["type"] == "enter-dropped"] == ["drop-enters"]


async def test_an_enter_never_taken_is_a_clear_error(agent_sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with agent_api(agent_sandbox, tmp_path) as (daemon, client):
            daemon.manager.tuning = attrs.evolve(daemon.manager.tuning, prompt_confirm_timeout=1.0)
            session = await start_agent(client, tmp_path, "fake-deaf")
            sid = session["id"]
            await wait_until(client, sid, "idle")
            started = time.monotonic()
            response = await client.post(f"/v1/sessions/{sid}/prompt", json={"text": "hello"})
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["code"] == "prompt_not_confirmed"
            assert "may not have been submitted" in error["message"]
            assert time.monotonic() - started < 15  # bounded: two attempts, not a hang
            record = (await client.get(f"/v1/sessions/{sid}")).json()

            def dropped() -> int:
                return len([e for e in transcript(record) if e["type"] == "enter-dropped"])

            while dropped() < 2:  # (the agent may log the second Enter after the daemon gave up)
                await trio.sleep(0.05)
            assert dropped() == 2


async def test_an_agent_ending_during_a_prompt_is_a_session_ended_refusal(
    agent_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The agent exits on the paste's first byte: tmux then knows no such window when Enter is
    pressed. That is the session's end (409), not a tmux failure (it was a 500)."""
    with trio.fail_after(40):
        async with agent_api(agent_sandbox, tmp_path) as (_, client):
            session = await start_agent(client, tmp_path, "fake-quitter")
            response = await client.post(f"/v1/sessions/{session['id']}/prompt", json={"text": "bye"})
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "session_ended"
            record = (await client.get(f"/v1/sessions/{session['id']}")).json()
            assert (record["state"], record["exit_code"], record["agent_state"]) == ("exited", 3, "exited")


async def test_what_gemini_creates_in_its_session_home_stays_in_the_users(
    agent_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The session home holds links to the user's ~/.gemini entries of its start; entries the
    agent creates meanwhile move to the user's at the end (theirs win), not deleted with it."""
    user = tmp_path / "home" / ".gemini"
    user.mkdir()
    (user / "settings.json").write_text('{"ui": {"theme": "x"}}')
    with trio.fail_after(30):
        async with agent_api(agent_sandbox, tmp_path) as (_, client):
            session = await start_agent(client, tmp_path, "fake-gemini-writer")
            ended = (await client.get(f"/v1/sessions/{session['id']}/wait", params={"timeout": 15})).json()
            assert ended["ended"] and ended["session"]["exit_code"] == 0, ended
    assert (user / "GEMINI.md").read_text() == "remembered\n"
    assert (user / "history" / "work").read_text() == "h\n"
    assert (user / "state.json").read_text() == "theirs\n"  # the user's, written meanwhile
    assert json.loads((user / "settings.json").read_text()) == {"ui": {"theme": "x"}}  # no hooks


async def test_a_permission_question_waits_for_input_and_answering_resumes(
    agent_sandbox: Sandbox, tmp_path: Path
) -> None:
    with trio.fail_after(40):
        async with agent_api(agent_sandbox, tmp_path) as (_, client):
            session = await start_agent(client, tmp_path, "fake-claude")
            sid = session["id"]
            await wait_until(client, sid, "idle")
            response = await client.post(f"/v1/sessions/{sid}/prompt", json={"text": "needs PERMISSION now"})
            assert response.status_code == 204, response.text
            await wait_until(client, sid, "waiting_for_input")
            assert (
                "Do you want to proceed?" in (await client.get(f"/v1/sessions/{sid}/screen")).json()["text"]
            )
            assert (
                await client.post(f"/v1/sessions/{sid}/keys", json={"keys": ["Enter"]})
            ).status_code == 204
            await wait_until(client, sid, "working", "idle")
            await wait_until(client, sid, "idle")
            assert (await agent_info(client, sid))["last_event"] == "Stop"


async def test_silence_while_working_is_stuck(agent_sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with agent_api(agent_sandbox, tmp_path) as (daemon, client):
            daemon.manager.tuning = attrs.evolve(daemon.manager.tuning, agent_stuck_after=1.5)
            session = await start_agent(client, tmp_path, "fake-claude")
            sid = session["id"]
            await wait_until(client, sid, "idle")
            assert (await client.post(f"/v1/sessions/{sid}/prompt", json={"text": "HANG"})).status_code == 204
            await wait_until(client, sid, "working", "stuck")
            stuck = await wait_until(client, sid, "stuck")
            assert stuck["agent_state"] == "stuck"
            # Ctrl-C interrupts the fake agent: output again, so it is working, no longer stuck
            await client.post(f"/v1/sessions/{sid}/keys", json={"keys": ["C-c"]})
            await wait_until(client, sid, "working")


async def test_codex_notify_and_gemini_settings_hooks(agent_sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with agent_api(agent_sandbox, tmp_path) as (_, client):
            codex = await start_agent(client, tmp_path, "fake-codex")
            assert any(arg.startswith("notify=[") for arg in codex["command"])
            gemini = await start_agent(client, tmp_path, "fake-gemini", prompt="first question")
            gemini_done = await wait_until(client, gemini["id"], "idle")
            assert (await agent_info(client, gemini["id"]))["last_prompt"] == "first question"
            assert gemini_done["native_id"]
            # Codex has no prompt hook: the prompt is confirmed by output; its notify says idle
            response = await client.post(f"/v1/sessions/{codex['id']}/prompt", json={"text": "say hi"})
            assert response.status_code == 204, response.text
            done = await wait_until(client, codex["id"], "idle")
            assert done["native_id"]
            # the user's own Gemini settings were not touched: the hooks are in the session's home
            assert not (tmp_path / "home" / ".gemini" / "settings.json").exists()


async def test_resume_by_native_id_after_the_daemon_restarted(agent_sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with agent_api(agent_sandbox, tmp_path) as (_, client):
            first = await start_agent(client, tmp_path, "fake-claude", prompt="remember EXIT")
            with trio.fail_after(15):
                ended = (await client.get(f"/v1/sessions/{first['id']}/wait", params={"timeout": 15})).json()
            assert ended["ended"] and ended["session"]["agent_state"] == "exited"
            native = ended["session"]["native_id"]
            assert native
        # a new daemon: what the record kept is enough to resume
        async with agent_api(agent_sandbox, tmp_path) as (_, client):
            response = await client.post(
                "/v1/sessions", json={"resume": first["id"], "env": {"HOME": str(tmp_path / "home")}}
            )
            assert response.status_code == 201, response.text
            resumed = response.json()
            command = resumed["command"]
            assert resumed["agent"] == "fake-claude" and command[command.index("--resume") + 1] == native
            assert resumed["cwd"] == str(tmp_path)
            await wait_until(client, resumed["id"], "idle")
            assert (await agent_info(client, resumed["id"]))["native_id"] == native
            while (
                f"resumed {native}".encode()
                not in (await client.get(f"/v1/sessions/{resumed['id']}/output")).content
            ):  # its banner (drawn after its SessionStart hook); bounded by fail_after
                await trio.sleep(0.05)
            # a plain session cannot be resumed; an unknown agent is refused with the known ones
            plain = (await client.post("/v1/sessions", json={"command": ["true"]})).json()
            refused = await client.post("/v1/sessions", json={"resume": plain["id"]})
            assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_an_agent"
            unknown = await client.post("/v1/sessions", json={"agent": "nope"})
            assert unknown.status_code == 422 and "fake-claude" in unknown.json()["error"]["message"]


def test_cli_new_prompt_and_wait_until(agent_sandbox: Sandbox, tmp_path: Path) -> None:
    """The CLI against a daemon process: new --agent, prompt, wait --until, ls."""
    env = {**env_of(agent_sandbox, tmp_path), "HOME": str(tmp_path / "home")}
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "daemon"], env=env, stderr=log, stdout=subprocess.DEVNULL
    )
    try:

        def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "trio_bridge", *args], env=env, capture_output=True, text=True,
                timeout=timeout, cwd=tmp_path,
            )  # fmt: skip

        deadline = time.monotonic() + 15
        while cli("status").returncode != 0:
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.1)
        new = cli("new", "--agent", "fake-claude")
        assert new.returncode == 0, new.stderr
        sid = new.stdout.strip()
        assert cli("wait", sid, "--until", "idle", "--timeout", "20").stdout.strip() == "idle"
        prompted = cli("prompt", sid, "what", "is", "this")
        assert prompted.returncode == 0, prompted.stderr
        assert cli("wait", sid, "--until", "idle", "--timeout", "20").returncode == 0
        slow = cli("wait", sid, "--until", "waiting_for_input", "--timeout", "0.5")
        assert slow.returncode == 124 and "not waiting_for_input yet" in slow.stderr
        bad = cli("wait", sid, "--until", "sleeping", "--timeout", "1")
        assert bad.returncode == 1 and "unknown agent state" in bad.stderr
        unknown = cli("new", "--agent", "nope")
        assert unknown.returncode == 1 and "no agent profile 'nope'" in unknown.stderr
        run = cli("run", "--agent", "nope")
        assert run.returncode == 125 and "no agent profile 'nope'" in run.stderr
        assert cli("kill", sid).returncode == 0
        # run --agent without a terminal: the agent's output streamed, its exit code returned
        ran = cli("run", "--agent", "fake-claude", "--prompt", "say bye then EXIT")
        assert ran.returncode == 0, ran.stderr
        assert "ANSWER: say bye then EXIT" in ran.stdout
        # run --agent in a terminal (a pane of the test's tmux server): attached to the agent,
        # what the user types reaches it, Ctrl-] detaches and leaves it running
        done = tmp_path / "run.status"
        command = (
            f"env TRIO_BRIDGE_CONFIG={tmp_path / 'config.toml'} HOME={tmp_path / 'home'} {sys.executable} "
            f"-m trio_bridge run --agent fake-claude; echo $? > {done}; sleep 30"
        )
        agent_sandbox.tmux(
            "new-session", "-d", "-s", "user", "-x", "100", "-y", "30", "-c", str(tmp_path), command
        )

        def screen_has(text: str) -> None:
            deadline = time.monotonic() + 15
            while text not in agent_sandbox.tmux("capture-pane", "-p", "-t", "=user:").stdout:
                assert time.monotonic() < deadline, text
                time.sleep(0.05)

        screen_has("FAKE-AGENT claude ready")
        agent_sandbox.tmux("send-keys", "-t", "=user:", "-l", "typed by hand")
        screen_has("> typed by hand")
        agent_sandbox.tmux("send-keys", "-t", "=user:", "Enter")
        screen_has("ANSWER: typed by hand")
        agent_sandbox.tmux("send-keys", "-t", "=user:", "C-]")
        deadline = time.monotonic() + 15
        while not (done.exists() and done.read_text().strip()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert done.read_text().strip() == "0"
        listed = cli("ls")
        assert "fake-claude:idle" in listed.stdout, listed.stdout
        agent_sandbox.tmux("kill-session", "-t", "=user")
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
        log.close()


async def test_review_regressions(agent_sandbox: Sandbox, tmp_path: Path) -> None:
    """Found by a review: each of these was wrong once."""
    with trio.fail_after(60):
        async with agent_api(agent_sandbox, tmp_path) as (daemon, client):
            daemon.manager.tuning = attrs.evolve(daemon.manager.tuning, prompt_confirm_timeout=1.0)
            outer = await start_agent(client, tmp_path, "fake-claude")
            await wait_until(client, outer["id"], "idle")
            # a session's identity comes from the daemon, not from the caller's environment
            inner = await start_agent(
                client, tmp_path, "fake-claude", env={"HOME": str(tmp_path / "home"),
                "TRIO_BRIDGE_SESSION_ID": outer["id"], "TRIO_BRIDGE_API_SOCKET": "/nowhere"},
            )  # fmt: skip
            inner_done = await wait_until(client, inner["id"], "idle")
            outer_now = (await client.get(f"/v1/sessions/{outer['id']}")).json()
            assert inner_done["native_id"] != outer_now["native_id"]

            # a prompt is confirmed by its own prompt hook, not by any hook: one typed into a
            # busy agent (the fake ignores Enter mid-turn) is not taken, and says so
            busy = await client.post(f"/v1/sessions/{outer['id']}/prompt", json={"text": "SLOW PERMISSION"})
            assert busy.status_code == 204
            refused = await client.post(f"/v1/sessions/{outer['id']}/prompt", json={"text": "while asking"})
            assert refused.status_code == 409 and refused.json()["error"]["code"] == "prompt_not_confirmed"

            # without hooks: working once a prompt is taken, idle after the output went quiet
            hookless = await start_agent(client, tmp_path, "fake-hookless")
            await wait_until(client, hookless["id"], "idle")
            taken = await client.post(f"/v1/sessions/{hookless['id']}/prompt", json={"text": "no hooks here"})
            assert taken.status_code == 204, taken.text
            assert (await client.get(f"/v1/sessions/{hookless['id']}")).json()["agent_state"] == "working"
            await wait_until(client, hookless["id"], "idle")

            # waiting for an agent state of an ended session answers at once
            await client.delete(f"/v1/sessions/{hookless['id']}")
            started = time.monotonic()
            over = await client.get(
                f"/v1/sessions/{hookless['id']}/wait", params={"until": "idle", "timeout": 20}
            )
            assert over.json()["reached"] is False and over.json()["ended"] is True
            assert time.monotonic() - started < 5

            # refused clearly: a prompt to a plain session, NUL bytes on resume, a huge start prompt
            plain = (await client.post("/v1/sessions", json={"command": ["sleep", "30"]})).json()
            assert (
                await client.post(f"/v1/sessions/{plain['id']}/prompt", json={"text": "x"})
            ).status_code == 409
            nul = await client.post("/v1/sessions", json={"resume": outer["id"], "prompt": "a\u0000b"})
            assert nul.status_code == 422, nul.text
            huge = await client.post("/v1/sessions", json={"agent": "fake-claude", "prompt": "x" * 200_000})
            assert huge.status_code == 413, huge.text


async def test_text_left_in_the_prompt_box_is_cleared_never_merged(
    agent_sandbox: Sandbox, tmp_path: Path
) -> None:
    """A draft in the box (or a prompt an agent put back after an interrupt) is cleared with the
    profile's clear keys before the paste; one that cannot be cleared refuses the prompt."""
    with trio.fail_after(60):
        async with agent_api(agent_sandbox, tmp_path) as (_, client):
            sid = (await start_agent(client, tmp_path, "fake-boxed"))["id"]
            await wait_until(client, sid, "idle")
            typed = await client.post(f"/v1/sessions/{sid}/input", json={"text": "a draft"})
            assert typed.status_code == 204, typed.text
            while "> a draft" not in (await client.get(f"/v1/sessions/{sid}/screen")).json()["text"]:
                await trio.sleep(0.05)
            response = await client.post(f"/v1/sessions/{sid}/prompt", json={"text": "the prompt"})
            assert response.status_code == 204, response.text
            assert (await agent_info(client, sid))["last_prompt"] == "the prompt"  # not merged
            await wait_until(client, sid, "idle")
            # more than 10 rounds of 20 BSpace can clear (this fake ignores C-u): refused, unsent
            long_draft = "x" * 70
            for _ in range(4):
                await client.post(f"/v1/sessions/{sid}/input", json={"text": long_draft})
            while "> xxxx" not in (await client.get(f"/v1/sessions/{sid}/screen")).json()["text"]:
                await trio.sleep(0.05)
            refused = await client.post(f"/v1/sessions/{sid}/prompt", json={"text": "not this"})
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"]["code"] == "prompt_box_not_empty"
            assert (await agent_info(client, sid))["last_prompt"] == "the prompt"
