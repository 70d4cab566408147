"""With a mesh, the bot's computer shows and drives every computer's sessions: two real daemons
(in this test's loop, each with its own tmux server and state) on a real redis-server started
by the test, with a mesh secret (every request, reply and event signed), and the fake Bot API."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_bridge.agents import AgentState
from trio_bridge.config import resolve_settings
from trio_bridge.sessions import SessionState
from trio_bridge.sessions.manager import AgentStart
from trio_bridge.telegram import BotApi, TelegramBot
from trio_bridge.telegram.lanes import Lanes
from trio_bridge.telegram.remote import RemoteSessions, record_from
from trio_bridge.telegram.store import open_telegram_store

from .._api import Daemon, running_daemon
from .._fake_telegram import FORUM, USER, FakeTelegram, Message, open_fake_telegram
from ..conftest import Sandbox
from ..mesh.test_mesh import redis_server, redis_url  # noqa: F401 - fixtures
from ..sessions.test_agent_sessions import agent_sandbox, env_of  # noqa: F401 - a fixture
from .test_telegram import TOKEN, texts

SECRET = "s" * 40


@asynccontextmanager
async def two_computers(
    sandbox: Sandbox, tmp_path: Path, url: str, **overrides: Any
) -> AsyncIterator[tuple[Daemon, Daemon]]:
    """alpha and beta, one mesh; beta's tmux server is stopped on the way out (the sandbox
    stops alpha's)."""
    mesh = {
        "redis": url, "mesh_secret": SECRET, "heartbeat_interval": 0.2, "heartbeat_ttl": 2.0, **overrides,
    }  # fmt: skip
    beta_socket = f"{sandbox.socket_name}-beta"
    try:
        async with (
            running_daemon(sandbox, computer="alpha", **mesh) as alpha,
            running_daemon(
                sandbox, computer="beta", state_dir=tmp_path / "beta" / "state",
                runtime_dir=tmp_path / "beta" / "run", tmux_socket=beta_socket, **mesh,
            ) as beta,
        ):  # fmt: skip
            try:
                yield alpha, beta
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    for daemon in (alpha, beta):
                        for record in await daemon.manager.store.all():
                            if not record.state.ended:
                                await daemon.manager.kill(record.id)
                                await daemon.manager.wait(record.id)
    finally:
        subprocess.run(
            ["tmux", "-L", beta_socket, "kill-server"], env=sandbox.env, capture_output=True, timeout=10,
            check=False,
        )  # fmt: skip


@asynccontextmanager
async def report_on_failure(fake: FakeTelegram) -> AsyncIterator[None]:
    try:
        yield
    except BaseException:
        for call in [c for c in fake.calls if c.method != "getUpdates"][-40:]:
            print(call.method, call.error, {k: v for k, v in call.params.items() if k != "reply_markup"})
        raise


@asynccontextmanager
async def bot_on(daemon: Daemon, fake: FakeTelegram, url: str) -> AsyncIterator[TelegramBot]:
    """The bot on ``daemon`` (as its lease holder would run it), with the mesh, paced for tests."""
    from trio_bridge.mesh import Mesh, open_redis

    settings = dataclasses.replace(
        daemon.settings, telegram_token=TOKEN, telegram_chat=FORUM, telegram_users=(USER,),
        telegram_api_url=fake.url,
    )  # fmt: skip
    assert settings.computer is not None
    async with (
        open_redis(url) as redis,
        open_telegram_store(settings.state_dir / "telegram.db") as store,
        BotApi(fake.url, TOKEN) as api,
        trio.open_nursery() as nursery,
    ):
        mesh = Mesh(redis, settings, daemon.manager, settings.computer)
        lanes = Lanes(api, group_interval=0.05, private_interval=0.05, global_interval=0.0)
        bot = TelegramBot(
            settings, daemon.manager, api, store, settings.computer, lanes=lanes, remote=RemoteSessions(mesh)
        )
        bot.status_interval = 0.2
        await nursery.start(bot.run)
        yield bot
        nursery.cancel_scope.cancel()


async def test_every_computers_sessions_appear_and_are_driven_from_their_topics(
    sandbox: Sandbox,
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
) -> None:
    with trio.fail_after(40):
        async with (
            open_fake_telegram(TOKEN) as fake,
            two_computers(sandbox, tmp_path, redis_url) as (alpha, beta),
        ):
            # a session of beta's from before the bot started, one of alpha's, one of beta's after
            early = await beta.manager.create(["cat"], cwd=tmp_path, title="beta-early")
            async with bot_on(alpha, fake, redis_url) as bot, report_on_failure(fake):
                early_thread = await fake.wait_for(lambda: fake.thread_named("beta-early"))
                assert "beta · shell · beta-early" in fake.topics[(FORUM, early_thread)]
                own = await alpha.manager.create(["cat"], cwd=tmp_path, title="alpha-own")
                await fake.wait_for(lambda: fake.thread_named("alpha · shell · alpha-own"))
                script = "echo ready-b; read line; echo got:$line; sleep 600"
                late = await beta.manager.create(["sh", "-c", script], cwd=tmp_path, title="beta-late")
                thread = await fake.wait_for(lambda: fake.thread_named("beta · shell · beta-late"))
                assert bot.owner(late.id) == "beta" and bot.owner(own.id) is None
                # its status: beta's screen, fetched through the mesh
                await fake.wait_for(lambda: any("ready-b" in t for t in texts(fake, thread)))
                # a line typed in its topic reaches beta's session
                fake.say("from-the-phone", thread_id=thread)
                await fake.wait_for(lambda: any("got:from-the-phone" in t for t in texts(fake, thread)))
                assert "got:from-the-phone" in await beta.manager.screen(late.id)
                # commands, answered from beta: its screen, a key name beta refuses, every computer's list
                fake.say("/screen", thread_id=thread)
                fake.say("/keys Bogus", thread_id=thread)
                fake.say("/ls", thread_id=thread)
                await fake.wait_for(
                    lambda: any(t.startswith("Not done: unknown key 'Bogus'") for t in texts(fake, thread))
                )
                listing = await fake.wait_for(
                    lambda: next((t for t in texts(fake, thread) if f"alpha: {own.id}" in t), None)
                )
                assert f"beta: {late.id}  running  shell  beta-late" in listing
                assert f"beta: {early.id}  running  shell  beta-early" in listing
                # /kill in the topic ends beta's session; its end is posted there
                fake.say("/kill", thread_id=thread)
                await fake.wait_for(
                    lambda: any(t.startswith("Session ended: killed") for t in texts(fake, thread))
                )
                assert (await beta.manager.get(late.id)).state is SessionState.KILLED
                # the topic's name follows the state (beta's event), made once
                await fake.wait_for(lambda: fake.topics[(FORUM, thread)].startswith("✖️"))
                assert sum(1 for c in fake.calls if c.method == "createForumTopic" and c.error == 0) == 3
                assert fake.errors(400) == [] and fake.errors(429) == []


def test_a_remote_record_is_checked() -> None:
    good = {
        "id": "abc", "title": "t", "command": ["cat"], "cwd": "/", "env_keys": [], "created_at": 1.0,
        "state": "running", "origin": "api", "tmux_name": "tb-abc", "computer": "beta",
    }  # fmt: skip
    assert record_from(good).state is SessionState.RUNNING
    bad: list[object] = [
        {**good, "id": 3}, {**good, "state": "sleeping"}, {**good, "command": "cat"}, [], None
    ]  # fmt: skip
    for value in bad:
        with pytest.raises(ValueError):
            record_from(value)


async def test_another_computers_agent_prompt_question_and_tap(
    agent_sandbox: Sandbox,  # noqa: F811 - the fixture
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    agents = resolve_settings(env_of(agent_sandbox, tmp_path)).settings.agents
    with trio.fail_after(45):
        async with (
            open_fake_telegram(TOKEN) as fake,
            two_computers(agent_sandbox, tmp_path, redis_url, agents=agents) as (alpha, beta),
            bot_on(alpha, fake, redis_url) as bot,
            report_on_failure(fake),
        ):
            env = {"TRIO_BRIDGE_API_SOCKET": str(beta.settings.api_socket)}
            record = await beta.manager.create(
                [], cwd=tmp_path, env=env, title="beta-agent", agent=AgentStart(agents["fake-claude"])
            )
            thread = await fake.wait_for(lambda: fake.thread_named("beta · fake-claude · beta-agent"))
            while bot.store.topic(record.id) is None:  # the bot has recorded the topic it made
                await trio.sleep(0.01)
            await beta.manager.wait_agent(record.id, [AgentState.IDLE])
            # a verified prompt on beta, its confirmation told in the topic
            fake.say("please PERMISSION now", thread_id=thread)
            await fake.wait_for(lambda: "✅ The agent took the prompt." in texts(fake, thread))
            # beta's agent asks: its options as buttons (from beta's screen), a tap answers there
            question: Message = await fake.wait_for(
                lambda: next((m for m in fake.in_topic(FORUM, thread) if m.reply_markup), None)
            )
            buttons = [row[0] for row in question.reply_markup["inline_keyboard"]]
            assert [b["text"] for b in buttons] == ["1. Yes", "2. No"]
            fake.tap(question, buttons[0]["callback_data"])
            await fake.wait_for(lambda: fake.callback_answers)
            assert [a["text"] for a in fake.callback_answers] == ["Sent 1."]
            with trio.fail_after(15):
                await beta.manager.wait_agent(record.id, [AgentState.IDLE])
            assert beta.manager.agent(record.id).last_answer == "ANSWER: please PERMISSION now"
            await fake.wait_for(lambda: question.text == "Answered: 1" and question.reply_markup is None)
