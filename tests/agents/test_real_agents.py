"""The real agent CLIs (Claude Code, Codex, Gemini CLI, from npm; ``scripts/install-agents``) run
by a daemon through their default profiles, against fake model APIs on loopback
(``tests/_fake_models.py``): real prompt boxes, real hooks configured per session, Claude Code's
real permission dialog. Each agent gets its own isolated home; every test is bounded.

Without the CLIs installed these tests are skipped, unless ``TRIO_BRIDGE_TEST_REQUIRE_AGENTS`` is
set (``scripts/test``, hence CI, sets it): then their absence is a failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from trio_bridge.agents import DEFAULT_PROFILES
from trio_bridge.agents.state import ScreenPatterns, read_screen

from .._api import Daemon, daemon_and_client, running_daemon
from .._fake_models import FakeModelServer, claude_env, codex_env, gemini_env
from ..conftest import Sandbox

# One worker runs these one after another (scripts/test: --dist loadgroup): each starts Node.js
# CLIs that take a core for seconds, under deadlines of a few seconds; two at once on a loaded
# 2-core machine would be flakier, not faster.
pytestmark = pytest.mark.xdist_group("real-agents")

AGENTS_BIN = Path(
    os.environ.get("TRIO_BRIDGE_TEST_AGENTS_DIR")
    or Path(__file__).parent.parent.parent / ".cache/agents/node_modules/.bin"
)


# read at import: the sandbox fixture removes every TRIO_BRIDGE_ variable before a test runs
REQUIRE_AGENTS = bool(os.environ.get("TRIO_BRIDGE_TEST_REQUIRE_AGENTS"))


def agent_binary(name: str) -> str:
    path = AGENTS_BIN / name
    if not os.access(path, os.X_OK):
        message = f"{path} is not installed (scripts/install-agents installs it)"
        if REQUIRE_AGENTS:
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


@pytest.fixture
def models() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


@asynccontextmanager
async def daemon_with(
    sandbox: Sandbox, name: str, **overrides: Any
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """A daemon whose ``name`` profile runs the installed CLI (else the default profile)."""
    profiles = dict(DEFAULT_PROFILES)
    profiles[name] = dataclasses.replace(profiles[name], binary=agent_binary(name))
    async with daemon_and_client(sandbox, agents=profiles, **overrides) as (daemon, client):
        client.timeout = httpx.Timeout(60)
        yield daemon, client


async def start(client: httpx.AsyncClient, cwd: Path, env: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/sessions", json={"cwd": str(cwd), "env": env, "width": 120, "height": 40, **fields}
    )
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


async def until(client: httpx.AsyncClient, sid: str, *states: str, timeout: float = 40) -> dict[str, Any]:
    response = await client.get(
        f"/v1/sessions/{sid}/wait", params={"until": ",".join(states), "timeout": timeout}
    )
    result: dict[str, Any] = response.json()
    if not result.get("reached"):
        screen = (await client.get(f"/v1/sessions/{sid}/screen")).json()
        pytest.fail(
            f"agent not {states} but {result['session']['agent_state']}; screen:\n{screen['text']}\n"
            + await explain(client, sid)
        )
    return result["session"]


async def explain(client: httpx.AsyncClient, sid: str) -> str:
    """What became of a session: its record and the end of its output (for failure messages)."""
    record = (await client.get(f"/v1/sessions/{sid}")).json()
    output = await client.get(f"/v1/sessions/{sid}/output")
    tail = output.content[-3000:].decode(errors="replace") if output.status_code == 200 else output.text
    return f"record: {json.dumps(record)}\noutput (end):\n{tail}"


async def prompt(client: httpx.AsyncClient, sid: str, text: str) -> None:
    response = await client.post(f"/v1/sessions/{sid}/prompt", json={"text": text})
    if response.status_code != 204:
        pytest.fail(f"prompt refused: {response.status_code} {response.text}\n{await explain(client, sid)}")


async def agent(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    info: dict[str, Any] = (await client.get(f"/v1/sessions/{sid}/agent")).json()
    return info


async def screen_shows(client: httpx.AsyncClient, sid: str, text: str, timeout: float = 30) -> str:
    """Poll the screen until it shows ``text``."""
    shown = ""
    with trio.move_on_after(timeout):
        while True:
            shown = str((await client.get(f"/v1/sessions/{sid}/screen")).json()["text"])
            if text in shown:
                return shown
            await trio.sleep(0.1)
    pytest.fail(f"the screen does not show {text!r}:\n{shown}\n{await explain(client, sid)}")


@pytest.mark.timeout(150)
async def test_claude_code(sandbox: Sandbox, tmp_path: Path, models: FakeModelServer) -> None:
    """Start with a prompt, a long multi-line prompt, the permission dialog, resume."""
    work = tmp_path / "work"
    work.mkdir()
    env = claude_env(tmp_path / "home", models.url, work)
    with trio.fail_after(140):
        async with daemon_with(sandbox, "claude") as (_, client):
            # (a prompt that looks like a flag is still the prompt)
            session = await start(client, work, env, agent="claude", prompt="--hello from the test")
            sid = session["id"]
            done = await until(client, sid, "idle")
            info = await agent(client, sid)
            assert info["last_prompt"] == "--hello from the test"
            assert done["native_id"] and done["transcript_path"], done
            await screen_shows(client, sid, "FAKE-ANSWER: --hello from the test")

            # a long multi-line prompt, verified, arrives whole (the UserPromptSubmit payload)
            text = "\n".join(f"line {n}: {'y' * 70}" for n in range(400))  # ~32 KB
            await prompt(client, sid, text)
            await until(client, sid, "idle")
            assert (await agent(client, sid))["last_prompt"] == text

            # a tool needing permission: waiting_for_input; Enter allows it; then idle again
            await prompt(client, sid, "RUN_TOOL: touch tool-ran.txt")
            await until(client, sid, "waiting_for_input")
            await screen_shows(client, sid, "Do you want to proceed")
            assert (
                await client.post(f"/v1/sessions/{sid}/keys", json={"keys": ["Enter"]})
            ).status_code == 204
            await until(client, sid, "idle")
            assert (work / "tool-ran.txt").exists()
            await screen_shows(client, sid, "TOOL-DONE")

            # Esc mid-answer: Claude fires no Stop, its transcript records the interrupt: idle.
            # (Not before the answer's first words: Claude then puts the prompt back in its box
            # and records nothing, see docs/real-agents.md.)
            paused = models.slow_pauses
            await prompt(client, sid, "SLOW a turn to interrupt")  # its 10 pieces take 2.7 s
            while models.slow_pauses < paused + 3:  # 3 of its pieces sent: Claude has part of it
                await trio.sleep(0.02)
            assert (
                await client.post(f"/v1/sessions/{sid}/keys", json={"keys": ["Escape"]})
            ).status_code == 204
            await until(client, sid, "idle", timeout=10)
            await screen_shows(client, sid, "Interrupted")

            # resume the conversation in a new session, by Claude's own session id
            assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 200
            resumed = (await client.post("/v1/sessions", json={"resume": sid, "env": env})).json()
            assert resumed["command"][resumed["command"].index("--resume") + 1] == done["native_id"]
            await until(client, resumed["id"], "idle")
            assert (await agent(client, resumed["id"]))["native_id"] == done["native_id"]
            await prompt(client, resumed["id"], "again")
            await until(client, resumed["id"], "idle")
            # the resumed conversation carried the earlier turns to the model
            last = models.requests_to("/v1/messages")[-1][2]
            assert "--hello from the test" in str(last["messages"])


@pytest.mark.timeout(120)
async def test_codex(sandbox: Sandbox, tmp_path: Path, models: FakeModelServer) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = codex_env(tmp_path / "home", models.url, work)
    with trio.fail_after(110):
        async with daemon_with(sandbox, "codex") as (_, client):
            session = await start(client, work, env, agent="codex")
            sid = session["id"]
            await screen_shows(client, sid, "Ask Codex")
            await prompt(client, sid, "say hello codex")
            done = await until(client, sid, "idle")
            await screen_shows(client, sid, "FAKE-ANSWER: say hello codex")
            assert any("say hello codex" in str(r[2]) for r in models.requests_to("/v1/responses"))
            # Codex's own id of this conversation (its notify for the title turn, another thread,
            # was not taken): the rollout file named by it holds the prompt
            assert done["native_id"], done
            (rollout,) = (tmp_path / "home/.codex/sessions").rglob(f"*{done['native_id']}*.jsonl")
            assert "say hello codex" in rollout.read_text()
            # a second prompt: working (Codex reports only a turn's end), then idle again
            await prompt(client, sid, "SLOW second one")
            assert (await client.get(f"/v1/sessions/{sid}")).json()["agent_state"] == "working"
            await until(client, sid, "idle")
            await screen_shows(client, sid, "FAKE-ANSWER: SLOW second one")
            # a prompt at start that looks like a flag is still the prompt
            flagged = await start(client, work, env, agent="codex", prompt="--start codex")
            await screen_shows(client, flagged["id"], "FAKE-ANSWER: --start codex")


@pytest.mark.timeout(120)
async def test_gemini_cli(
    sandbox: Sandbox, tmp_path: Path, models: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon (and its tmux server) inherit CI=true, as on a CI machine: Gemini CLI started
    # without a prompt would run headless and exit at once (its profile unsets them).
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    work = tmp_path / "work"
    work.mkdir()
    env = gemini_env(tmp_path / "home", models.url, work)
    with trio.fail_after(110):
        async with daemon_with(sandbox, "gemini") as (_, client):
            session = await start(client, work, env, agent="gemini", prompt="-hello gemini")
            sid = session["id"]
            await until(client, sid, "idle")
            assert (await agent(client, sid))["last_prompt"] == "-hello gemini"
            await screen_shows(client, sid, "FAKE-ANSWER: -hello gemini")
            await prompt(client, sid, "two\nlines")
            await until(client, sid, "idle")
            assert (await agent(client, sid))["last_prompt"] == "two\nlines"
            # a prompt sent the moment the agent was created (Gemini CLI drops a paste that comes
            # before its prompt box is drawn): it waits for the agent to be ready
            fresh = await start(client, work, env, agent="gemini")
            await prompt(client, fresh["id"], "right away")
            await until(client, fresh["id"], "idle")
            assert (await agent(client, fresh["id"]))["last_prompt"] == "right away"
    # the hooks came from the session's own settings file: the user's holds none (Gemini CLI
    # itself rewrites that file, migrating old keys)
    assert "hooks" not in json.loads((tmp_path / "home/.gemini/settings.json").read_text())


# --- the edges (issue 15): each case below failed with the real CLIs before -----------------


async def keys(client: httpx.AsyncClient, sid: str, *names: str) -> None:
    assert (await client.post(f"/v1/sessions/{sid}/keys", json={"keys": list(names)})).status_code == 204


async def state_of(client: httpx.AsyncClient, sid: str) -> str:
    state: str = (await client.get(f"/v1/sessions/{sid}")).json()["agent_state"]
    return state


@pytest.mark.timeout(120)
async def test_codex_ready_at_start_and_resume_working_from_its_prompt_idle_after_esc(
    sandbox: Sandbox, tmp_path: Path, models: FakeModelServer
) -> None:
    """Codex has no start hook and no interrupt notify: its screen says ready and interrupted."""
    work = tmp_path / "work"
    work.mkdir()
    env = codex_env(tmp_path / "home", models.url, work)
    with trio.fail_after(110):
        async with daemon_with(sandbox, "codex") as (_, client):
            # no prompt: idle once its prompt box is up (it was `starting` until the first prompt)
            sid = (await start(client, work, env, agent="codex"))["id"]
            await until(client, sid, "idle", timeout=15)
            assert (await agent(client, sid))["evidence"].startswith("screen: ")
            await prompt(client, sid, "say hello codex")
            done = await until(client, sid, "idle")
            # Esc mid-answer: "■ Conversation interrupted", no notify: idle
            paused = models.slow_pauses
            await prompt(client, sid, "SLOW a turn to interrupt")
            while models.slow_pauses < paused + 3:
                await trio.sleep(0.02)
            assert await state_of(client, sid) == "working"
            await keys(client, sid, "Escape")
            await screen_shows(client, sid, "Conversation interrupted")
            await until(client, sid, "idle", timeout=10)

            # started with a prompt: working from the start (it was `starting` all along), then idle
            late = models.late_requests
            flagged = await start(client, work, env, agent="codex", prompt="LATE start codex")
            assert flagged["agent_state"] == "working"
            while models.late_requests == late:  # the model holds its answer back: a turn runs
                await trio.sleep(0.05)
            assert await state_of(client, flagged["id"]) == "working"
            await until(client, flagged["id"], "idle")
            await screen_shows(client, flagged["id"], "FAKE-ANSWER: LATE start codex")

            # resumed: idle once its prompt box is up
            assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 200
            resumed = (await client.post("/v1/sessions", json={"resume": sid, "env": env})).json()
            assert resumed["command"][resumed["command"].index("resume") + 1] == done["native_id"]
            await until(client, resumed["id"], "idle", timeout=15)


@pytest.mark.timeout(150)
async def test_claude_interrupted_before_its_first_words_and_an_approved_long_tool(
    sandbox: Sandbox, tmp_path: Path, models: FakeModelServer
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = claude_env(tmp_path / "home", models.url, work)
    with trio.fail_after(140):
        async with daemon_with(sandbox, "claude") as (_, client):
            sid = (await start(client, work, env, agent="claude"))["id"]
            await until(client, sid, "idle")
            # Esc before the model's first words: no hook, nothing in the transcript, the prompt
            # put back into the box; the screen says idle
            late = models.late_requests
            await prompt(client, sid, "LATE please F5")
            while models.late_requests == late:
                await trio.sleep(0.05)
            assert await state_of(client, sid) == "working"
            await keys(client, sid, "Escape")
            await until(client, sid, "idle", timeout=10)
            shown = await screen_shows(client, sid, "LATE please F5")
            claude = DEFAULT_PROFILES["claude"]
            patterns = ScreenPatterns.compile((), (), claude.prompt_box, claude.box_placeholders)
            assert read_screen(patterns, shown).box == "LATE please F5", shown  # in its box
            # the next prompt is not merged with the text put back: the box is cleared first
            await prompt(client, sid, "after interrupt F5")
            assert (await agent(client, sid))["last_prompt"] == "after interrupt F5", shown
            await until(client, sid, "idle")
            await screen_shows(client, sid, "FAKE-ANSWER: after interrupt F5")

            # a long tool approved in its dialog: working while it runs, not waiting_for_input
            await prompt(client, sid, "RUN_TOOL: touch long-tool.txt && sleep 12")
            await until(client, sid, "waiting_for_input")
            await screen_shows(client, sid, "Do you want to proceed")
            await keys(client, sid, "Enter")
            await until(client, sid, "working", timeout=5)
            # ... and stays so (Claude's Notification for the dialog comes ~6 s after it)
            for _ in range(16):
                assert await state_of(client, sid) == "working", await agent(client, sid)
                await trio.sleep(0.5)
            assert (work / "long-tool.txt").exists()
            await until(client, sid, "idle", timeout=30)
            await screen_shows(client, sid, "TOOL-DONE")


@pytest.mark.timeout(150)
async def test_turns_that_ended_while_the_daemon_was_down_read_idle_after_it_restarts(
    sandbox: Sandbox, tmp_path: Path, models: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The three agents in one daemon, each mid-turn when it stops; the turns end (their hooks
    find no daemon), a new daemon adopts them: idle, from their screens."""
    monkeypatch.setenv("CI", "true")  # (as on a CI machine: Gemini's profile unsets it)
    envs: dict[str, dict[str, str]] = {}
    for name, make in (("claude", claude_env), ("codex", codex_env), ("gemini", gemini_env)):
        (tmp_path / name).mkdir()
        envs[name] = make(tmp_path / f"home-{name}", models.url, tmp_path / name)
    profiles = dict(DEFAULT_PROFILES)
    for name in envs:
        profiles[name] = dataclasses.replace(profiles[name], binary=agent_binary(name))
    models.late_delay = 15  # each turn outlives the three start-ups (slow under load)
    with trio.fail_after(140):
        sids: dict[str, str] = {}
        async with running_daemon(sandbox, agents=profiles) as daemon, daemon.client() as client:
            client.timeout = httpx.Timeout(60)
            for name, env in envs.items():
                session = await start(
                    client, tmp_path / name, env, agent=name, prompt=f"LATE SLOW {name} turn"
                )
                sids[name] = session["id"]
            for sid in sids.values():
                await until(client, sid, "working")

        # the daemon is down (its sessions live on); the turns end meanwhile

        def capture(name: str) -> subprocess.CompletedProcess[str]:
            return sandbox.tmux("capture-pane", "-p", "-t", name, check=False)

        for name, sid in sids.items():
            shown = ""
            with trio.move_on_after(30):
                busy = re.compile("|".join(profiles[name].busy_patterns))
                while f"FAKE-ANSWER: LATE SLOW {name} turn" not in shown or busy.search(shown):
                    await trio.sleep(0.2)
                    shown = (await trio.to_thread.run_sync(capture, f"tb-{sid}")).stdout
            assert f"FAKE-ANSWER: LATE SLOW {name} turn" in shown, f"{name}:\n{shown}"
        async with daemon_and_client(sandbox, agents=profiles) as (_, client):
            client.timeout = httpx.Timeout(60)
            for name, sid in sids.items():
                assert (await client.get(f"/v1/sessions/{sid}")).json()["state"] == "running", name
            for sid in sids.values():
                await until(client, sid, "idle", timeout=10)


@pytest.mark.timeout(150)
async def test_gemini_takes_a_prompt_given_while_busy_and_says_queued_when_it_has_not_yet(
    sandbox: Sandbox, tmp_path: Path, models: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gemini CLI queues a prompt given while it works ("Queued (press ↑ to edit)") and runs it
    when its turn ends: confirmed then, or answered "queued" (202), never "not confirmed"."""
    monkeypatch.setenv("CI", "true")
    work = tmp_path / "work"
    work.mkdir()
    env = gemini_env(tmp_path / "home", models.url, work)

    def asked(text: str) -> int:
        return sum(text in json.dumps(r[2]) for r in models.requests_to(":streamGenerateContent"))

    with trio.fail_after(140):
        async with daemon_with(sandbox, "gemini") as (daemon, client):
            sid = (await start(client, work, env, agent="gemini"))["id"]
            await until(client, sid, "idle")
            # a turn longer than the two confirmation windows (5 s each) of before
            models.late_delay = 14
            late = models.late_requests
            await prompt(client, sid, "LATE gemini long turn")
            while models.late_requests == late:
                await trio.sleep(0.05)
            # queued, then taken when the turn ends: confirmed then (was: 409 after ~11 s)
            await prompt(client, sid, "queued second")
            assert (await agent(client, sid))["last_prompt"] == "queued second"
            await until(client, sid, "idle")
            await screen_shows(client, sid, "FAKE-ANSWER: queued second")
            assert asked("queued second") == 1

            # not taken within the wait: "queued" (it runs later, once)
            daemon.manager.tuning = attrs.evolve(daemon.manager.tuning, prompt_queue_wait=0.5)
            late = models.late_requests
            await prompt(client, sid, "LATE gemini another long turn")
            while models.late_requests == late:
                await trio.sleep(0.05)
            response = await client.post(f"/v1/sessions/{sid}/prompt", json={"text": "queued third"})
            assert response.status_code == 202, response.text
            assert response.json()["queued"] is True and "queued" in response.json()["message"]
            assert await state_of(client, sid) == "working"
            await screen_shows(client, sid, "FAKE-ANSWER: queued third")
            await until(client, sid, "idle")
            assert (await agent(client, sid))["last_prompt"] == "queued third"
            assert asked("queued third") == 1
