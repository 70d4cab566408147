"""Benchmark: how soon an agent's state follows what its real CLI does (issue 15).

The real Claude Code, Codex and Gemini CLIs (``scripts/install-agents``; skipped when missing)
run in one daemon (in this process, so its state changes are read from the session manager's
own events) against the tests' fake model APIs on loopback (``tests/_fake_models.py``), one
agent at a time. Measured, per round, from what the user (or the agent) did to the state change:

- prompt -> working: ``POST .../prompt`` sent -> ``working``;
- dialog -> waiting_for_input: Claude's permission dialog first seen on its screen -> the state;
- answer -> working: Enter on that dialog -> ``working`` (the tool runs for 3 s);
- turn end -> idle: the tool turn's answer (``TOOL-DONE``) first seen on the screen -> ``idle``;
- interrupt -> idle: Esc before the first words (``LATE``: the model holds its answer 4 s) ->
  ``idle``, for each CLI (no CLI reports an interrupt: the screen says it);
- daemon ready -> rebuilt state: the daemon stopped while each agent runs a turn, the turns
  end, a new daemon ready -> each agent ``idle``.

Screens are polled every 50 ms, so a "seen on the screen" start is up to 50 ms late (the
figure up to 50 ms short). Target: each p50 under 3 s.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from .run_cli import sandbox, summary

REPO = Path(__file__).resolve().parent.parent
AGENTS_BIN = Path(os.environ.get("TRIO_BRIDGE_TEST_AGENTS_DIR") or REPO / ".cache/agents/node_modules/.bin")
NAMES = ("claude", "codex", "gemini")
TARGET_MS = 3000.0


class _Watch:
    """The manager's agent events, with their arrival times."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, str]] = []  # (time, session id, state)
        self.pulse = trio.Event()

    async def follow(self, manager: Any) -> None:
        from trio_bridge.sessions.manager import EventKind

        async with manager.subscribe() as events:
            async for event in events:
                if event.kind is EventKind.AGENT and event.agent is not None:
                    self.seen.append((time.monotonic(), event.record.id, str(event.agent)))
                    self.pulse.set()
                    self.pulse = trio.Event()

    async def until(self, sid: str, state: str, since: float, timeout: float = 60) -> float:
        """Seconds from ``since`` to ``sid`` reaching ``state`` (an event at or after ``since``)."""
        with trio.fail_after(timeout):
            while True:
                for at, who, what in self.seen:
                    if who == sid and what == state and at >= since:
                        return at - since
                await self.pulse.wait()


@asynccontextmanager
async def _daemon(
    env: dict[str, str], profiles: dict[str, Any]
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    from trio_bridge.config import resolve_settings
    from trio_bridge.daemon import serve_daemon

    settings = dataclasses.replace(resolve_settings(env).settings, agents=profiles)
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve_daemon, settings)
        transport = httpx.AsyncHTTPTransport(uds=str(running.api_socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://tb", timeout=60) as client:
            yield running, client
        nursery.cancel_scope.cancel()


async def _screen_shows(
    client: httpx.AsyncClient, sid: str, text: str, after: str = "", timeout: float = 60
) -> float:
    """Poll the screen (every 50 ms) until it shows ``text`` (below the last ``after``); the
    time it was first seen."""
    screen = ""
    with trio.move_on_after(timeout):
        while True:
            screen = str((await client.get(f"/v1/sessions/{sid}/screen")).json()["text"])
            if after in screen and text in screen[screen.rfind(after) if after else 0 :]:
                return time.monotonic()
            await trio.sleep(0.05)
    raise RuntimeError(f"the screen does not show {text!r}:\n{screen}")


async def _tmux_screen(env: dict[str, str], name: str) -> str:
    """A session's screen straight from tmux (the daemon is down)."""
    argv = ["tmux", "-L", env["TRIO_BRIDGE_TMUX_SOCKET"], "capture-pane", "-p", "-t", name]
    from trio_bridge.process import run_process

    done = await run_process(argv, operation="capture a screen", timeout=10, check=False, env=env)
    return done.stdout.decode(errors="replace")


async def _agent_state(client: httpx.AsyncClient, sid: str) -> str:
    return str((await client.get(f"/v1/sessions/{sid}")).json()["agent_state"])


async def _prompt(client: httpx.AsyncClient, sid: str, text: str) -> None:
    response = await client.post(f"/v1/sessions/{sid}/prompt", json={"text": text})
    assert response.status_code == 204, response.text


async def _keys(client: httpx.AsyncClient, sid: str, *keys: str) -> None:
    assert (await client.post(f"/v1/sessions/{sid}/keys", json={"keys": list(keys)})).status_code == 204


async def _measure(rounds: int, env: dict[str, str], tmp: Path) -> dict[str, list[float]]:
    sys.path.insert(0, str(REPO))
    from tests._fake_models import FakeModelServer, claude_env, codex_env, gemini_env
    from trio_bridge.agents import DEFAULT_PROFILES

    figures: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        figures.setdefault(name, []).append(seconds * 1000)

    profiles = dict(DEFAULT_PROFILES)
    for name in NAMES:
        profiles[name] = dataclasses.replace(profiles[name], binary=str(AGENTS_BIN / name))
    with FakeModelServer() as models:
        makers = {"claude": claude_env, "codex": codex_env, "gemini": gemini_env}
        envs = {}
        for name in NAMES:
            (tmp / name).mkdir()
            envs[name] = makers[name](tmp / f"home-{name}", models.url, tmp / name)
        sids: dict[str, str] = {}
        async with _daemon(env, profiles) as (running, client):
            watch = _Watch()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch.follow, running.manager)
                for name in NAMES:
                    body = {"agent": name, "cwd": str(tmp / name), "env": envs[name], "width": 120}
                    body["height"] = 40
                    sids[name] = (await client.post("/v1/sessions", json=body)).json()["id"]
                    await watch.until(sids[name], "idle", 0)
                for index in range(rounds):
                    for name in NAMES:
                        sid = sids[name]
                        started = time.monotonic()
                        late = models.late_requests
                        await _prompt(client, sid, f"LATE {name} round {index}")
                        add(f"prompt -> working ({name})", await watch.until(sid, "working", started))
                        while models.late_requests == late:
                            await trio.sleep(0.02)
                        await trio.sleep(0.5)
                        pressed = time.monotonic()
                        await _keys(client, sid, "Escape")
                        add(f"interrupt -> idle ({name})", await watch.until(sid, "idle", pressed))
                    sid = sids["claude"]
                    await _prompt(client, sid, f"RUN_TOOL: touch tool-{index}.txt && sleep 3")
                    shown = await _screen_shows(client, sid, "Do you want to proceed")
                    waited = await watch.until(sid, "waiting_for_input", shown)
                    add("dialog -> waiting_for_input (claude)", waited)
                    pressed = time.monotonic()
                    await _keys(client, sid, "Enter")
                    add("answer -> working (claude)", await watch.until(sid, "working", pressed))
                    shown = await _screen_shows(client, sid, "TOOL-DONE", after=f"tool-{index}.txt")
                    add("turn end -> idle (claude)", await watch.until(sid, "idle", shown - 0.05))
                nursery.cancel_scope.cancel()
        # restarts: each agent mid-turn when the daemon stops; its turn ends; a new daemon
        models.late_delay = 6.0
        for index in range(rounds):
            async with _daemon(env, profiles) as (running, client):
                for name in NAMES:
                    await _prompt(client, sids[name], f"LATE restart {index}")
            for name in NAMES:  # each turn over: its answer shown, no busy line
                busy = re.compile("|".join(profiles[name].busy_patterns))
                with trio.fail_after(60):
                    while True:
                        screen = await _tmux_screen(env, f"tb-{sids[name]}")
                        if f"FAKE-ANSWER: LATE restart {index}" in screen and not busy.search(screen):
                            break
                        await trio.sleep(0.1)
            async with _daemon(env, profiles) as (running, client):
                ready = time.monotonic()
                for name in NAMES:
                    with trio.fail_after(30):
                        while await _agent_state(client, sids[name]) != "idle":
                            await trio.sleep(0.05)
                    add(f"daemon ready -> rebuilt idle ({name})", time.monotonic() - ready)
        async with _daemon(env, profiles) as (running, client):
            for sid in sids.values():
                await client.delete(f"/v1/sessions/{sid}")
    return figures


def run(quick: bool) -> dict[str, Any]:
    missing = [name for name in NAMES if not os.access(AGENTS_BIN / name, os.X_OK)]
    if missing:
        return {"skipped": f"not installed: {', '.join(missing)} (scripts/install-agents)"}
    rounds = 3 if quick else 5
    with sandbox() as env:
        tmp = Path(env["XDG_STATE_HOME"]).parent / "agents"
        tmp.mkdir(parents=True)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)  # the daemon's tmux server and agents inherit the sandbox's
        os.environ.pop("CI", None)
        try:
            figures = trio.run(_measure, rounds, env, tmp)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    results: dict[str, Any] = {name: summary(values) for name, values in figures.items()}
    results["met"] = all(s["median_ms"] < TARGET_MS for s in results.values() if isinstance(s, dict))
    results["target"] = "every p50 under 3 s"
    return results


def markdown(results: dict[str, Any]) -> str:
    out = ["## Agent state at the edges: real CLIs, action -> state change\n"]
    if "skipped" in results:
        return out[0] + f"\nskipped: {results['skipped']}\n"
    out.append("| transition | n | p50 ms | p90 ms | max ms |\n|---|---|---|---|---|")
    for name, s in results.items():
        if isinstance(s, dict):
            out.append(f"| {name} | {s['n']} | {s['median_ms']} | {s['p90_ms']} | {s['max_ms']} |")
    out.append(f"\nTarget: {results['target']}: **{'met' if results['met'] else 'NOT met'}**.\n")
    return "\n".join(out)
