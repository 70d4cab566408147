"""Benchmark: another computer's agent's final answer -> posted by the bot's computer.

Two real daemons in one process ("alpha" runs the Telegram bot, as its lease holder, at its
default pace; "beta" runs the fake agent CLI, tests/fake_agent.py), one real redis-server, a mesh
secret (every request, reply and event signed), and the fake Bot API enforcing Telegram's 20
calls a minute per group. Each round a prompt is submitted on beta, 8 s after the previous
answer (as tests/../telegram.py paces them: a person reads the answer first); measured: beta's
``agent`` event telling of the new answer -> the fake Bot API took the message with it. The
local figure (``telegram``: turn end -> answer posted) is its counterpart.

Target: p95 <= 3 s (the local answer's target).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from trio_bridge.agents import AgentState
from trio_bridge.agents.profiles import parse_profiles
from trio_bridge.config import resolve_settings
from trio_bridge.daemon import serve_daemon
from trio_bridge.sessions import EventKind
from trio_bridge.sessions.manager import AgentStart

from .mesh import _redis_server
from .run_cli import sandbox, summary
from .telegram import TOKEN, _p95

REPO = Path(__file__).resolve().parent.parent


async def _bench(quick: bool, home: Path, url: str) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from tests._fake_telegram import FORUM, USER, open_fake_telegram

    rounds = 5 if quick else 20
    agent_args = [str(REPO / "tests" / "fake_agent.py"), "--flavor", "claude", "--busy", "0.3"]
    profiles = parse_profiles(
        {"fake-claude": {"binary": sys.executable, "hooks": "claude", "confirm": "hook", "args": agent_args}}
    )
    base = dataclasses.replace(
        resolve_settings().settings, agents=profiles, redis=url, mesh_secret="b" * 40,
        heartbeat_interval=0.5, heartbeat_ttl=3.0,
    )  # fmt: skip
    async with open_fake_telegram(TOKEN) as fake, trio.open_nursery() as nursery:
        fake.group_limit = (20, 60.0)
        alpha_settings = dataclasses.replace(
            base, computer="alpha", telegram_token=TOKEN, telegram_chat=FORUM, telegram_users=(USER,),
            telegram_api_url=fake.url,
        )  # fmt: skip
        beta_settings = dataclasses.replace(
            base, computer="beta", state_dir=home / "beta" / "state", runtime_dir=home / "beta" / "run",
            tmux_socket=f"{base.tmux_socket}-beta",
        )  # fmt: skip
        await nursery.start(serve_daemon, alpha_settings)
        beta = await nursery.start(serve_daemon, beta_settings)
        told: dict[int, float] = {}

        async def watch_beta() -> None:
            async with beta.manager.subscribe() as events:
                async for event in events:
                    if event.kind is EventKind.AGENT and event.record.agent_answers not in told:
                        told[event.record.agent_answers] = trio.current_time()

        nursery.start_soon(watch_beta)
        # alpha's bot looks for new computers every 2 s and follows their events from then on
        await trio.sleep(4.0)
        env = {"HOME": str(home), "TRIO_BRIDGE_API_SOCKET": str(beta_settings.api_socket)}
        record = await beta.manager.create(
            [], cwd=home, env=env, title="bench-remote", agent=AgentStart(profiles["fake-claude"])
        )
        while fake.thread_named("bench-remote") is None:
            await trio.sleep(0.05)
        thread = fake.thread_named("bench-remote")
        await beta.manager.wait_agent(record.id, [AgentState.IDLE])
        posted_ms = []
        for i in range(rounds):
            await trio.sleep(8.0)
            await beta.manager.submit_prompt(record.id, f"remote question {i}")
            answer = f"ANSWER: remote question {i}"
            while answer not in [m.text for m in fake.in_topic(FORUM, thread)]:
                await fake.changed.wait()
            posted = next(c.at for c in fake.calls if c.error == 0 and c.params.get("text") == answer)
            posted_ms.append((posted - told[i + 1]) * 1000)
        answers = [m.text for m in fake.in_topic(FORUM, thread) if m.text.startswith("ANSWER: ")]
        await beta.manager.kill(record.id)
        await beta.manager.wait(record.id)
        nursery.cancel_scope.cancel()
    return {
        "answer_posted": summary(posted_ms) | {"p95_ms": round(_p95(posted_ms), 2)},
        "answers_posted": len(answers),
        "answers_posted_twice": len(answers) - len(set(answers)),
        "too_many_requests": len(fake.errors(429)),
    }


def run(quick: bool) -> dict[str, Any]:
    with sandbox() as env:
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        home = Path(env["XDG_STATE_HOME"]).parent / "home"
        home.mkdir()
        redis, url = _redis_server(home)
        try:
            results = trio.run(_bench, quick, home, url)
        finally:
            redis.kill()
            redis.wait(10)
            beta = ["tmux", "-L", env["TRIO_BRIDGE_TMUX_SOCKET"] + "-beta", "kill-server"]
            subprocess.run(beta, env=env, capture_output=True, check=False)
            os.environ.clear()
            os.environ.update(saved)
    results["target"] = "p95 <= 3000 ms"
    results["met"] = results["answer_posted"]["p95_ms"] <= 3000 and results["answers_posted_twice"] == 0
    return results


def markdown(results: dict[str, Any]) -> str:
    s = results["answer_posted"]
    return (
        "## Telegram with a mesh: another computer's agent's answer (fake Bot API, 20 calls a minute)\n\n"
        "| measured | n | p50 ms | p95 ms | max ms | target |\n|---|---|---|---|---|---|\n"
        f"| beta's answer event -> alpha's bot posted it | {s['n']} | {s['median_ms']} | {s['p95_ms']} "
        f"| {s['max_ms']} | p95 <= 3000 |\n\n"
        f"{results['answers_posted']} answers posted, {results['answers_posted_twice']} twice, "
        f"{results['too_many_requests']} 429s. Target met: **{'yes' if results['met'] else 'NO'}**.\n"
    )


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
