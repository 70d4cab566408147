"""With a mesh, the bot's computer posts the final answers of the other computers' agents: two
real daemons (alpha runs the bot, beta the agent: the fake agent CLI) on a real redis-server
started by the test, with a mesh secret, and the fake Bot API. Beta keeps each answer and says
so in its signed agent event; the bot fetches it through the mesh and queues it in its outbox
with its turn, once."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio

from trio_bridge.agents import AgentState
from trio_bridge.config import resolve_settings
from trio_bridge.sessions import EventKind, SessionRecord
from trio_bridge.sessions._answers import write_answer
from trio_bridge.sessions.manager import AgentStart
from trio_bridge.telegram.store import open_telegram_store

from .._fake_telegram import FORUM, FakeTelegram, open_fake_telegram
from ..conftest import Sandbox
from ..mesh.test_mesh import redis_server, redis_url  # noqa: F401 - fixtures
from ..sessions.test_agent_sessions import agent_sandbox, env_of  # noqa: F401 - a fixture
from .test_telegram import TOKEN, texts
from .test_telegram_mesh import bot_on, report_on_failure, two_computers


async def answered(fake: FakeTelegram, thread: int, answer: str) -> float:
    """Wait until ``answer`` is in the topic; when the fake Bot API took it."""
    await fake.wait_for(lambda: answer in texts(fake, thread))
    return next(c.at for c in fake.calls if c.error == 0 and c.params.get("text") == answer)


async def test_another_computers_agent_answers_are_posted_once_also_across_a_bot_restart(
    agent_sandbox: Sandbox,  # noqa: F811 - the fixture
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    agents = resolve_settings(env_of(agent_sandbox, tmp_path)).settings.agents
    with trio.fail_after(40):
        async with (
            open_fake_telegram(TOKEN) as fake,
            two_computers(agent_sandbox, tmp_path, redis_url, agents=agents) as (alpha, beta),
            report_on_failure(fake),
            trio.open_nursery() as nursery,
        ):
            # when beta's manager told of each answer (its agent event with the new count)
            told: dict[int, float] = {}

            async def watch_beta() -> None:
                async with beta.manager.subscribe() as events:
                    async for event in events:
                        if event.kind is EventKind.AGENT and event.record.agent_answers not in told:
                            told[event.record.agent_answers] = trio.current_time()

            nursery.start_soon(watch_beta)
            env = {"TRIO_BRIDGE_API_SOCKET": str(beta.settings.api_socket)}
            record = await beta.manager.create(
                [], cwd=tmp_path, env=env, title="beta-agent", agent=AgentStart(agents["fake-claude"])
            )
            latencies: list[float] = []
            async with bot_on(alpha, fake, redis_url) as bot:
                thread = await fake.wait_for(lambda: fake.thread_named("beta · fake-claude · beta-agent"))
                await fake.wait_for(lambda: bot.store.topic(record.id))  # (the bot knows it is this one's)
                await beta.manager.wait_agent(record.id, [AgentState.IDLE])
                # a prompt from the topic, answered on beta: its answer in the topic
                fake.say("the first question", thread_id=thread)
                latencies.append(await answered(fake, thread, "ANSWER: the first question") - told[1])
                # one given on beta directly (no one on alpha asked for it)
                await beta.manager.submit_prompt(record.id, "the second question")
                latencies.append(await answered(fake, thread, "ANSWER: the second question") - told[2])
                # the same event again (a replay, a second look): nothing more is queued
                current = await beta.manager.get(record.id)
                assert current.agent_answers == 2
                while await bot.store.pending(FORUM):  # (taken by Telegram; being noted)
                    await trio.sleep(0.01)
                await bot._on_remote_event(str(EventKind.AGENT), current)
                await bot._on_remote_event(str(EventKind.AGENT), current)
                assert await bot.store.pending(FORUM) == []
            # the bot stops; meanwhile beta's agent answers twice
            for n in (3, 4):
                await beta.manager.submit_prompt(record.id, f"question {n} while the bot is away")
                await beta.manager.wait_agent(record.id, [AgentState.IDLE])
                with trio.fail_after(10):
                    while (await beta.manager.get(record.id)).agent_answers < n:
                        await trio.sleep(0.05)
            # the bot starts again: the answers it missed are posted, in order, none twice
            async with bot_on(alpha, fake, redis_url):
                third = await answered(fake, thread, "ANSWER: question 3 while the bot is away")
                fourth = await answered(fake, thread, "ANSWER: question 4 while the bot is away")
                assert third <= fourth
                await beta.manager.submit_prompt(record.id, "the fifth question")
                latencies.append(await answered(fake, thread, "ANSWER: the fifth question") - told[5])
                # the end of the session comes after its last answer
                await beta.manager.kill(record.id)
                await fake.wait_for(lambda: any(t.startswith("Session ended") for t in texts(fake, thread)))
            shown = texts(fake, thread)
            answers = [t for t in shown if t.startswith("ANSWER: ")]
            assert answers == [
                "ANSWER: the first question", "ANSWER: the second question",
                "ANSWER: question 3 while the bot is away", "ANSWER: question 4 while the bot is away",
                "ANSWER: the fifth question",
            ]  # fmt: skip
            print("beta's answer event -> alpha's bot posted it (ms):", [round(s * 1000) for s in latencies])
            nursery.cancel_scope.cancel()


async def test_a_session_first_seen_at_the_bots_start_posts_no_old_answers(
    agent_sandbox: Sandbox,  # noqa: F811 - the fixture
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Answers given before the bot ever saw the session were for whoever was there then."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    agents = resolve_settings(env_of(agent_sandbox, tmp_path)).settings.agents
    with trio.fail_after(60):
        async with (
            open_fake_telegram(TOKEN) as fake,
            two_computers(agent_sandbox, tmp_path, redis_url, agents=agents) as (alpha, beta),
            report_on_failure(fake),
        ):
            env = {"TRIO_BRIDGE_API_SOCKET": str(beta.settings.api_socket)}
            record = await beta.manager.create(
                [], cwd=tmp_path, env=env, title="beta-old", agent=AgentStart(agents["fake-claude"])
            )
            await beta.manager.wait_agent(record.id, [AgentState.IDLE])
            await beta.manager.submit_prompt(record.id, "asked before any bot")
            with trio.fail_after(10):
                while (await beta.manager.get(record.id)).agent_answers < 1:
                    await trio.sleep(0.05)
            async with bot_on(alpha, fake, redis_url) as bot:
                thread = await fake.wait_for(lambda: fake.thread_named("beta · fake-claude · beta-old"))
                assert bot.store.answered(record.id) == 1
                await beta.manager.submit_prompt(record.id, "asked with the bot")
                await answered(fake, thread, "ANSWER: asked with the bot")
                # an answer whose event was lost (beta kept it and counted it, no event went):
                # the session's status, fetched from beta, tells of it
                directory = beta.manager.session_dir(record.id)
                await trio.to_thread.run_sync(write_answer, directory, 3, "an answer told by no event")
                await beta.manager.update_record(record.id, lambda r: attrs.evolve(r, agent_answers=3))
                await answered(fake, thread, "an answer told by no event")
                assert bot.store.answered(record.id) == 3
            assert "ANSWER: asked before any bot" not in texts(fake, thread)


async def test_an_answer_and_its_turn_are_queued_once(tmp_path: Path) -> None:
    """The outbox and the turn noted in one transaction: a turn queued again, or an older one,
    queues nothing; passing a turn over queues nothing and counts as noted."""
    with trio.fail_after(10):
        async with open_telegram_store(tmp_path / "telegram.db") as store:
            assert store.answered("s1") is None
            assert await store.enqueue_answer(FORUM, "s1", 0, None)
            assert await store.enqueue_answer(FORUM, "s1", 1, "one")
            assert not await store.enqueue_answer(FORUM, "s1", 1, "one")
            assert await store.enqueue_answer(FORUM, "s1", 2, None)  # not kept any more: passed over
            assert not await store.enqueue_answer(FORUM, "s1", 2, "two")
            assert await store.enqueue_answer(FORUM, "s1", 3, "three")
            assert [e.text for e in await store.pending(FORUM)] == ["one", "three"]
        async with open_telegram_store(tmp_path / "telegram.db") as store:
            assert store.answered("s1") == 3
            assert not await store.enqueue_answer(FORUM, "s1", 3, "three")
            await store.forget_topics(set())
            assert store.answered("s1") is None


def test_a_remote_records_answer_count_is_checked() -> None:
    from trio_bridge.telegram.remote import record_from

    good = {
        "id": "abc", "title": "t", "command": ["cat"], "cwd": "/", "env_keys": [], "created_at": 1.0,
        "state": "running", "origin": "api", "tmux_name": "tb-abc", "computer": "beta",
    }  # fmt: skip
    assert record_from(good).agent_answers == 0
    assert record_from({**good, "agent_answers": 7}).agent_answers == 7
    for bad in (-1, "3", True, 1.5, 1 << 60):
        with pytest.raises(ValueError):
            record_from({**good, "agent_answers": bad})
    assert isinstance(record_from(good), SessionRecord)
