"""Benchmark: the Telegram front end against the fake Bot API (tests/_fake_telegram.py), with
Telegram's group limit enforced (20 calls a minute: beyond, a 429), the real daemon, real tmux and
the fake agent CLI (tests/fake_agent.py).

* text in a topic -> "prompt taken" reply posted (target p95 <= 2 s), prompts 8 s after the
  previous answer;
* an agent's turn end (its ``idle`` event) -> the final answer posted (target p95 <= 3 s);
* flood control: the forum penalized for 60 s, then /help in a private chat -> its reply
  (target: at most 1 s);
* load: 20 busy sessions (a line every 0.5 s each; 5 with --quick) for 300 s (30 s with
  --quick), once their topics and status messages exist (at 20 calls a minute, 20 new sessions
  take two minutes to appear), with an answer queued every 3 s as a turn's end queues it: 429s
  (target 0), answers lost (target 0), and queued -> posted.

The bot runs on the daemon's own manager with its default pace (a group: 3 calls at once, one
more each 3.5 s).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
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
from trio_bridge.telegram import BotApi, TelegramBot
from trio_bridge.telegram.store import open_telegram_store

from .run_cli import sandbox, summary

REPO = Path(__file__).resolve().parent.parent
TOKEN = "123456789:" + "BenchToken_" * 3


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def _bench(quick: bool, home: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from tests._fake_telegram import FORUM, USER, open_fake_telegram

    rounds = 5 if quick else 20
    load_seconds = 30.0 if quick else 300.0
    agent_args = [str(REPO / "tests" / "fake_agent.py"), "--flavor", "claude", "--busy", "0.3"]
    profiles = parse_profiles(
        {"fake-claude": {"binary": sys.executable, "hooks": "claude", "confirm": "hook", "args": agent_args}}
    )
    settings = dataclasses.replace(
        resolve_settings().settings, agents=profiles, telegram_token=TOKEN, telegram_chat=FORUM,
        telegram_users=(USER,),
    )  # fmt: skip
    results: dict[str, Any] = {}
    async with open_fake_telegram(TOKEN) as fake, trio.open_nursery() as nursery:
        fake.group_limit = (20, 60.0)
        settings = dataclasses.replace(settings, telegram_api_url=fake.url)
        daemon = await nursery.start(serve_daemon, dataclasses.replace(settings, telegram_token=None))
        manager = daemon.manager
        async with (
            open_telegram_store(settings.state_dir / "telegram.db") as store,
            BotApi(fake.url, TOKEN) as api,
        ):
            bot = TelegramBot(settings, manager, api, store, "bench")
            await nursery.start(bot.run)

            # -- prompts and answers ------------------------------------------------------
            idle_at: list[float] = []

            async def watch_idle() -> None:
                async with manager.subscribe() as events:
                    async for event in events:
                        if event.kind is EventKind.AGENT and event.agent is AgentState.IDLE:
                            idle_at.append(trio.current_time())

            nursery.start_soon(watch_idle)
            env = {"HOME": str(home), "TRIO_BRIDGE_API_SOCKET": str(settings.api_socket)}
            record = await manager.create(
                [], cwd=home, env=env, title="bench-agent", agent=AgentStart(profiles["fake-claude"])
            )
            while fake.thread_named("bench-agent") is None or bot.store.topic(record.id) is None:
                await trio.sleep(0.01)
            thread = fake.thread_named("bench-agent")
            await manager.wait_agent(record.id, [AgentState.IDLE])
            taken_ms, answer_ms = [], []
            for i in range(rounds):
                # a person reads the answer before the next prompt (back to back, two urgent
                # messages a turn plus its edits exceed a group's sustained 20 a minute)
                await trio.sleep(8.0)
                confirmations = len([m for m in fake.in_topic(FORUM, thread) if m.text.startswith("✅")])
                start = trio.current_time()
                fake.say(f"question number {i}", thread_id=thread)
                while (
                    len([m for m in fake.in_topic(FORUM, thread) if m.text.startswith("✅")]) == confirmations
                ):
                    await fake.changed.wait()
                taken_ms.append((trio.current_time() - start) * 1000)
                answer = f"ANSWER: question number {i}"
                while answer not in [m.text for m in fake.in_topic(FORUM, thread)]:
                    await fake.changed.wait()
                posted = next(c.at for c in fake.calls if c.error == 0 and c.params.get("text") == answer)
                answer_ms.append((posted - idle_at[-1]) * 1000)
            results["prompt_taken"] = summary(taken_ms) | {"p95_ms": round(_p95(taken_ms), 2)}
            results["answer_posted"] = summary(answer_ms) | {"p95_ms": round(_p95(answer_ms), 2)}
            await manager.kill(record.id)

            # -- one chat penalized ---------------------------------------------------------
            await trio.sleep(4.0)  # the forum's lane settles
            fake.penalize(FORUM, 60)
            private_ms = []
            for _ in range(5):
                replies = len([m for m in fake.messages.values() if m.chat_id == USER])
                start = trio.current_time()
                fake.say("/help", chat_id=USER)
                while len([m for m in fake.messages.values() if m.chat_id == USER]) == replies:
                    await fake.changed.wait()
                private_ms.append((trio.current_time() - start) * 1000)
                await trio.sleep(1.0)  # a private chat's pace
            results["other_chat_during_penalty"] = summary(private_ms)
            results["penalized_chat_429s"] = len(
                [c for c in fake.errors(429) if c.params.get("chat_id") == FORUM]
            )
            # the forum's lane waits the penalty out before the load starts
            while trio.current_time() < fake.penalties[FORUM] + 4:
                await trio.sleep(0.5)

            # -- load ----------------------------------------------------------------------
            script = "i=0; while :; do i=$((i+1)); echo busy line $i; sleep 0.5; done"
            busy = [
                await manager.create(["sh", "-c", script], cwd=home, title=f"busy-{n:02d}")
                for n in range(5 if quick else 20)
            ]
            with trio.move_on_after(300):
                while not all((t := bot.store.topic(b.id)) and t.status_message_id for b in busy):
                    await trio.sleep(0.5)
            before_429 = len(fake.errors(429))
            queued: dict[str, float] = {}
            end = trio.current_time() + load_seconds
            n = 0
            while trio.current_time() < end:
                await trio.sleep(3.0)
                session = random.choice(busy)
                text = f"final answer {n} of {session.id}"
                queued[text] = trio.current_time()
                await bot._enqueue(session.id, text)
                n += 1
            with trio.move_on_after(120):
                while await bot.store.pending(FORUM):
                    await trio.sleep(0.5)
            posted_at = {
                c.params.get("text"): c.at for c in fake.calls if c.error == 0 and c.method == "sendMessage"
            }
            delivered = [t for t in queued if t in posted_at]
            results["load"] = {
                "sessions": len(busy),
                "seconds": load_seconds,
                "answers_queued": len(queued),
                "answers_lost": len(queued) - len(delivered),
                "too_many_requests": len(fake.errors(429)) - before_429,
                "queued_to_posted": summary([(posted_at[t] - queued[t]) * 1000 for t in delivered]),
                "status_edits": len(
                    [c for c in fake.calls if c.method == "editMessageText" and c.error == 0]
                ),
            }
            for session in busy:
                await manager.kill(session.id)
        nursery.cancel_scope.cancel()
    return results


def run(quick: bool) -> dict[str, Any]:
    with sandbox() as env:
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        home = Path(env["XDG_STATE_HOME"]).parent / "home"
        home.mkdir()
        try:
            results = trio.run(_bench, quick, home)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    results["targets"] = {
        "prompt_taken_p95_ms": 2000, "answer_posted_p95_ms": 3000, "other_chat_max_ms": 1000,
        "load_429s": 0, "load_answers_lost": 0,
    }  # fmt: skip
    results["met"] = (
        results["prompt_taken"]["p95_ms"] <= 2000
        and results["answer_posted"]["p95_ms"] <= 3000
        and results["other_chat_during_penalty"]["max_ms"] <= 1000
        and results["load"]["too_many_requests"] == 0
        and results["load"]["answers_lost"] == 0
    )
    return results


def markdown(results: dict[str, Any]) -> str:
    out = ["## Telegram front end (fake Bot API, 20 calls a minute per group enforced)\n"]
    out.append("| measured | n | p50 ms | p95 ms | max ms | target |\n|---|---|---|---|---|---|")
    for name, key, target in (
        ("text in a topic -> prompt taken (reply posted)", "prompt_taken", "p95 <= 2000"),
        ("turn end -> final answer posted", "answer_posted", "p95 <= 3000"),
    ):
        s = results[key]
        out.append(f"| {name} | {s['n']} | {s['median_ms']} | {s['p95_ms']} | {s['max_ms']} | {target} |")
    s = results["other_chat_during_penalty"]
    out.append(
        f"| forum penalized 60 s: a private chat's reply | {s['n']} | {s['median_ms']} | - "
        f"| {s['max_ms']} | max <= 1000 |"
    )
    load = results["load"]
    out.append(
        f"\nLoad: {load['sessions']} busy sessions for {load['seconds']:g} s: "
        f"{load['too_many_requests']} 429s, "
        f"{load['answers_lost']} of {load['answers_queued']} answers lost, queued -> posted p50 "
        f"{load['queued_to_posted']['median_ms']} ms, max {load['queued_to_posted']['max_ms']} ms; "
        f"{load['status_edits']} status edits. Targets met: **{'yes' if results['met'] else 'NO'}**.\n"
    )
    return "\n".join(out)


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
