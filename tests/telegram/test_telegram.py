"""The Telegram front end against a fake Bot API on loopback (tests/_fake_telegram.py), with the
real daemon, real tmux and the fake agent CLI. Every test is bounded by ``trio.fail_after``."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_bridge.agents import AgentState
from trio_bridge.config import ConfigError, resolve_settings
from trio_bridge.sessions import SessionRecord, SessionState
from trio_bridge.telegram import BotApi, TelegramBot
from trio_bridge.telegram._text import split_message, status_text, topic_name, units
from trio_bridge.telegram.keyboard import choices_on_screen, keyboard, parse_callback
from trio_bridge.telegram.lanes import Lanes
from trio_bridge.telegram.store import open_telegram_store

from .._api import Daemon, running_daemon
from .._fake_models import FakeModelServer, claude_env
from .._fake_telegram import FORUM, STRANGER, USER, FakeTelegram, Message, open_fake_telegram, plain_text

# (at import, as test_real_agents reads TRIO_BRIDGE_TEST_REQUIRE_AGENTS before the sandbox drops it)
from ..agents.test_real_agents import agent_binary
from ..conftest import Sandbox, modules_a_daemon_loads
from ..mesh.test_mesh import redis_server, redis_url  # noqa: F401 - fixtures
from ..sessions.test_agent_sessions import agent_sandbox, env_of  # noqa: F401 - a fixture

TOKEN = "123456789:" + "AbC-d_" * 6


@asynccontextmanager
async def started_bot(daemon: Daemon, fake: FakeTelegram) -> AsyncIterator[TelegramBot]:
    """A bot on the daemon's own manager, paced for tests (the chat intervals of real
    Telegram would make each test take minutes)."""
    settings = dataclasses.replace(
        daemon.settings, telegram_token=TOKEN, telegram_chat=FORUM, telegram_users=(USER,),
        telegram_api_url=fake.url,
    )  # fmt: skip
    async with (
        open_telegram_store(settings.state_dir / "telegram.db") as store,
        BotApi(fake.url, TOKEN) as api,
        trio.open_nursery() as nursery,
    ):
        lanes = Lanes(api, group_interval=0.05, private_interval=0.05, global_interval=0.0)
        bot = TelegramBot(settings, daemon.manager, api, store, "testbox", lanes=lanes)
        bot.status_interval = 0.2
        bot.poller.conflict_wait = 0.2
        await nursery.start(bot.run)
        yield bot
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def world(
    sandbox: Sandbox, **overrides: Any
) -> AsyncIterator[tuple[FakeTelegram, Daemon, TelegramBot]]:
    async with (
        open_fake_telegram(TOKEN) as fake,
        running_daemon(sandbox, **overrides) as daemon,
        started_bot(daemon, fake) as bot,
    ):
        try:
            yield fake, daemon, bot
        except BaseException:
            # what the fake saw, for the failure's report
            for call in [c for c in fake.calls if c.method != "getUpdates"][-40:]:
                print(call.method, call.error, {k: v for k, v in call.params.items() if k != "reply_markup"})
            raise
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                for record in await daemon.manager.store.all():
                    if not record.state.ended:
                        await daemon.manager.kill(record.id)
                        await daemon.manager.wait(record.id)


async def topic_of(fake: FakeTelegram, record: SessionRecord, bot: TelegramBot | None = None) -> int:
    """The session's topic, once the fake has it (and the bot has recorded it)."""
    thread: int = await fake.wait_for(lambda: fake.thread_named(record.title))
    while bot is not None and bot.store.topic(record.id) is None:
        await trio.sleep(0.01)
    return thread


def texts(fake: FakeTelegram, thread: int) -> list[str]:
    return [m.text for m in fake.in_topic(FORUM, thread)]


def calls(fake: FakeTelegram, method: str) -> int:
    return sum(1 for c in fake.calls if c.method == method and c.error == 0)


async def test_shell_session_gets_a_topic_a_status_edited_in_place_input_and_its_end(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    script = "echo hello-tg; read line; echo got:$line; read line; exit 3"
    with trio.fail_after(30):
        async with world(sandbox) as (fake, daemon, bot):
            record = await daemon.manager.create(["sh", "-c", script], cwd=tmp_path, title="shell-one")
            thread = await topic_of(fake, record, bot)
            assert fake.topics[(FORUM, thread)].startswith("▶️ testbox · shell · shell-one")
            status: Message = await fake.wait_for(
                lambda: next((m for m in fake.in_topic(FORUM, thread) if "hello-tg" in m.text), None)
            )
            assert status.text.startswith("▶️ <b>running</b>\n<pre>") and status.text.endswith("</pre>")
            # nothing changes on the screen: nothing is sent (the status is compared, not re-sent)
            edits = calls(fake, "editMessageText")
            await trio.sleep(1.0)
            assert calls(fake, "editMessageText") == edits
            fake.say("a <b> & c", thread_id=thread)
            await fake.wait_for(lambda: "got:a &lt;b&gt; &amp; c" in status.text)
            fake.say("bye", thread_id=thread)
            ended = "Session ended: exited with code 3."
            await fake.wait_for(lambda: ended in texts(fake, thread))
            await fake.wait_for(lambda: "🏁" in status.text and fake.topics[(FORUM, thread)].startswith("🏁"))
            # one topic, one status message edited in place
            assert calls(fake, "createForumTopic") == 1
            statuses = [m for m in fake.in_topic(FORUM, thread) if m.text.startswith(("▶️", "🏁"))]
            assert statuses == [status] and len(status.history) >= 3
            assert fake.errors(400) == []


async def test_agent_from_a_phone_start_prompt_approve_answer_kill(
    agent_sandbox: Sandbox,  # noqa: F811 - the fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    agents = resolve_settings(env_of(agent_sandbox, tmp_path)).settings.agents
    with trio.fail_after(45):
        async with world(agent_sandbox, agents=agents) as (fake, daemon, bot):
            fake.say(f"/new@bridge_bot fake-claude cwd={tmp_path}")
            started = await fake.wait_for(
                lambda: next((m for m in fake.messages.values() if m.text.startswith("Started ")), None)
            )
            assert started.thread_id is None  # answered in General
            (record,) = await daemon.manager.store.all()
            assert record.agent == "fake-claude" and record.origin == "telegram"
            thread = await topic_of(fake, record, bot)
            fake.say("please PERMISSION now", thread_id=thread)
            await fake.wait_for(lambda: "✅ The agent took the prompt." in texts(fake, thread))
            question: Message = await fake.wait_for(
                lambda: next((m for m in fake.in_topic(FORUM, thread) if m.reply_markup), None)
            )
            buttons = [row[0] for row in question.reply_markup["inline_keyboard"]]
            assert [b["text"] for b in buttons] == ["1. Yes", "2. No"]
            # a stranger's tap and text are ignored
            fake.tap(question, buttons[0]["callback_data"], user=STRANGER)
            fake.say("rm -rf", thread_id=thread, user=STRANGER)
            await fake.wait_for(lambda: bot.ignored == 2)
            fake.tap(question, buttons[0]["callback_data"])
            await fake.wait_for(lambda: fake.callback_answers)
            assert [a["text"] for a in fake.callback_answers] == ["Sent 1."]
            await fake.wait_for(lambda: "ANSWER: please PERMISSION now" in texts(fake, thread))
            assert question.text == "Answered: 1" and question.reply_markup is None
            fake.tap(question, buttons[1]["callback_data"])  # a second tap, on a closed question
            await fake.wait_for(lambda: len(fake.callback_answers) == 2)
            assert fake.callback_answers[1]["text"] == "This question is no longer open."
            fake.say("/kill", thread_id=thread)
            await fake.wait_for(lambda: "Session ended: killed." in texts(fake, thread))
            # the answer went once, the stranger got nothing
            assert texts(fake, thread).count("ANSWER: please PERMISSION now") == 1
            assert not [m for m in fake.messages.values() if "rm -rf" in m.text]


async def test_long_answers_split_on_lines_and_very_long_ones_go_as_a_file(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    line = "ünïcode 🙂 line of an answer, numbered {:05d}\n"
    answer = "".join(line.format(i) for i in range(200))  # about 2.4 messages
    huge = "".join(line.format(i) for i in range(2000))
    assert all(units(p) <= 4096 for p in split_message(answer)) and "".join(split_message(answer)) == answer
    assert split_message("x" * 5000) == ["x" * 4096, "x" * 904]
    with trio.fail_after(30):
        async with world(sandbox) as (fake, daemon, bot):
            record = await daemon.manager.create(["sleep", "60"], cwd=tmp_path, title="answers")
            await bot._enqueue(record.id, answer)
            await bot._enqueue(record.id, huge)
            thread = await topic_of(fake, record)
            document: Message = await fake.wait_for(
                lambda: next((m for m in fake.in_topic(FORUM, thread) if m.document), None)
            )
            parts = [t for t in texts(fake, thread) if "numbered" in t]
            assert len(parts) == 3 and "".join(parts) == answer
            assert all(p.endswith("\n") for p in parts)  # cut where lines end
            assert document.document == huge.encode() and document.caption is not None
            while await bot.store.pending(FORUM):  # removed once Telegram took it
                await trio.sleep(0.05)


async def test_screen_keys_and_commands_in_a_topic(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with world(sandbox) as (fake, daemon, bot):
            record = await daemon.manager.create(["cat"], cwd=tmp_path, title="commands")
            thread = await topic_of(fake, record, bot)
            fake.say("typed <here>", thread_id=thread)
            fake.say("/screen", thread_id=thread)
            screen: Message = await fake.wait_for(
                lambda: next(
                    (m for m in fake.in_topic(FORUM, thread) if m.text.count("typed &lt;here&gt;") == 2), None
                )
            )
            assert screen.text.startswith("▶️ <b>running</b>\n<pre>")
            fake.say("/keys Bogus", thread_id=thread)
            await fake.wait_for(
                lambda: any(t.startswith("Not done: unknown key 'Bogus'") for t in texts(fake, thread))
            )
            fake.say("/ls", thread_id=thread)
            await fake.wait_for(
                lambda: any(
                    t.startswith(f"{record.id}  running  shell  commands") for t in texts(fake, thread)
                )
            )
            fake.say("/screen")  # in General: no session there
            await fake.wait_for(
                lambda: any("works in a session's topic" in m.text for m in fake.messages.values())
            )
            fake.say("/keys C-d", thread_id=thread)
            await fake.wait_for(lambda: "Session ended: exited with code 0." in texts(fake, thread))


async def test_an_undelivered_answer_waits_on_disk_and_goes_once_after_a_restart(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with open_fake_telegram(TOKEN) as fake, running_daemon(sandbox) as daemon:
            record = await daemon.manager.create(["sleep", "60"], cwd=tmp_path, title="kept")
            async with started_bot(daemon, fake) as bot:
                thread = await topic_of(fake, record, bot)
                await fake.wait_for(lambda: fake.in_topic(FORUM, thread))  # its status
                fake.penalize(FORUM, 600)  # flood control: nothing goes for ten minutes
                await bot._enqueue(record.id, "the kept answer")
                await fake.wait_for(lambda: fake.errors(429))
                assert [e.text for e in await bot.store.pending(FORUM)] == ["the kept answer"]
            fake.penalties.clear()
            async with started_bot(daemon, fake) as bot:
                await fake.wait_for(lambda: "the kept answer" in texts(fake, thread))
                while await bot.store.pending(FORUM):
                    await trio.sleep(0.05)
            assert texts(fake, thread).count("the kept answer") == 1
            await daemon.manager.kill(record.id)


async def test_an_answer_cut_short_by_flood_control_sends_only_its_rest_after_a_restart(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    answer = "".join(
        f"line {i:05d} of a long answer, long enough to need three messages\n" for i in range(180)
    )
    parts = split_message(answer)
    assert len(parts) == 3
    with trio.fail_after(30):
        async with open_fake_telegram(TOKEN) as fake, running_daemon(sandbox) as daemon:
            record = await daemon.manager.create(["sleep", "60"], cwd=tmp_path, title="cut")
            async with started_bot(daemon, fake) as bot:
                thread = await topic_of(fake, record, bot)
                await fake.wait_for(lambda: fake.in_topic(FORUM, thread))  # its status
                fake.flood_after(FORUM, 1, 600)  # the first part goes, then flood control
                await bot._enqueue(record.id, answer)
                await fake.wait_for(lambda: fake.errors(429))
                while [e.text for e in await bot.store.pending(FORUM)] != ["".join(parts[1:])]:
                    await trio.sleep(0.02)
            fake.penalties.clear()
            async with started_bot(daemon, fake):
                await fake.wait_for(lambda: parts[2] in texts(fake, thread))
            sent = [t for t in texts(fake, thread) if t.startswith("line ")]
            assert sent == parts  # each once, in order
            await daemon.manager.kill(record.id)


async def test_a_group_without_topics_is_one_log_line_not_a_storm(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trio_bridge.telegram")
    with trio.fail_after(30):
        async with world(sandbox) as (fake, daemon, bot):
            fake.forums.clear()  # the user forgot to turn Topics on
            record = await daemon.manager.create(["sleep", "60"], cwd=tmp_path, title="no-forum")
            await fake.wait_for(lambda: fake.errors(400))
            for n in range(150):
                fake.say(f"spam {n}", user=STRANGER)
            await fake.wait_for(lambda: bot.ignored == 150)
            await bot._enqueue(record.id, "an answer that waits for its topic")
            await fake.wait_for(lambda: len(fake.errors(400)) >= 2)  # the answer's try
            await trio.sleep(1.0)  # ten status intervals
            assert [c.method for c in fake.errors(400)] == ["createForumTopic"] * 2  # status, answer
            assert [e.text for e in await bot.store.pending(FORUM)] == ["an answer that waits for its topic"]
            lines = [r.getMessage() for r in caplog.records]
            assert [line for line in lines if "status not shown" in line] == [
                f"session {record.id}: status not shown: "
                "createForumTopic: 400 Bad Request: the chat is not a forum"
            ]
            assert len([line for line in lines if f"from user {STRANGER}" in line]) == 2  # the 1st, the 101st


async def test_a_429_pauses_only_its_own_chat_for_retry_after(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with world(sandbox) as (fake, daemon, bot):
            record = await daemon.manager.create(["sleep", "60"], cwd=tmp_path, title="penalized")
            thread = await topic_of(fake, record)
            fake.penalize(FORUM, 5)
            penalty_ends = fake.penalties[FORUM]
            await bot._enqueue(record.id, "the final answer")
            fake.say("/help", chat_id=USER)  # a private chat: its own lane
            reply: Message = await fake.wait_for(
                lambda: next((m for m in fake.messages.values() if m.chat_id == USER), None)
            )
            answered_at = next(c.at for c in fake.calls if c.error == 0 and c.params.get("chat_id") == USER)
            assert answered_at < penalty_ends and reply.text.startswith("trio-bridge")
            await fake.wait_for(lambda: "the final answer" in texts(fake, thread))
            sent_at = next(
                c.at for c in fake.calls if c.error == 0 and c.params.get("text") == "the final answer"
            )
            assert sent_at >= penalty_ends
            # the forum's calls waited out retry_after: one 429 each (the answer, maybe a status edit)
            refused = [c for c in fake.errors(429) if c.params.get("chat_id") == FORUM]
            assert 1 <= len(refused) <= 2, refused


async def test_a_deleted_topic_is_made_again_once(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with world(sandbox) as (fake, daemon, bot):
            record = await daemon.manager.create(["cat"], cwd=tmp_path, title="deleted")
            first = await topic_of(fake, record)
            await fake.wait_for(lambda: fake.in_topic(FORUM, first))
            fake.delete_topic(FORUM, first)
            await daemon.manager.send_text(record.id, "again-1", enter=True)
            second = await fake.wait_for(lambda: fake.thread_named("deleted"))
            await fake.wait_for(lambda: any("again-1" in t for t in texts(fake, second)))
            assert second != first and calls(fake, "createForumTopic") == 2
            fake.delete_topic(FORUM, second)
            await daemon.manager.send_text(record.id, "again-2", enter=True)
            await fake.wait_for(lambda: bot.store.topic(record.id).thread_id is None)  # type: ignore[union-attr]
            await trio.sleep(0.5)
            assert calls(fake, "createForumTopic") == 2 and fake.thread_named("deleted") is None


async def test_a_second_poller_is_one_log_line_and_polling_resumes(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trio_bridge.telegram")
    with trio.fail_after(30):
        async with world(sandbox) as (fake, _, bot), BotApi(fake.url, TOKEN) as rival:

            async def poll_as_rival() -> None:
                while True:
                    try:
                        await rival.call("getUpdates", {"timeout": 1}, read_timeout=5)
                    except Exception:
                        await trio.sleep(0.05)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(poll_as_rival)
                await fake.wait_for(lambda: bot.poller.conflicts >= 3)
                nursery.cancel_scope.cancel()
            fake.say("/help")
            await fake.wait_for(lambda: any(m.text.startswith("trio-bridge") for m in fake.messages.values()))
    lines = [r.getMessage() for r in caplog.records if "another process is polling" in r.getMessage()]
    assert len(lines) == 1 and "409" in lines[0]
    assert any(r.getMessage() == "polling Telegram again" for r in caplog.records)
    assert TOKEN not in caplog.text


async def test_updates_are_handled_once_across_restarts_and_the_status_is_not_sent_again(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with open_fake_telegram(TOKEN) as fake, running_daemon(sandbox) as daemon:
            record = await daemon.manager.create(["sleep", "60"], cwd=tmp_path, title="restart")
            async with started_bot(daemon, fake):
                thread = await topic_of(fake, record)
                await fake.wait_for(lambda: fake.in_topic(FORUM, thread))
                fake.say("/ls")
                await fake.wait_for(lambda: any("restart" in m.text for m in fake.messages.values()))
            restarted = len(fake.calls)
            async with started_bot(daemon, fake) as bot:
                fake.say("/help")
                await fake.wait_for(
                    lambda: any(m.text.startswith("trio-bridge") for m in fake.messages.values())
                )
                await fake.wait_for(lambda: bot.poller.updates >= 1)
                await trio.sleep(0.5)  # the status is looked at again
            # /ls was not answered twice; the status and the topic's name, unchanged, were not sent
            # again (the store kept what they say)
            assert sum("restart" in m.text for m in fake.messages.values() if m.thread_id is None) == 1
            assert len(fake.in_topic(FORUM, thread)) == 1 and calls(fake, "createForumTopic") == 1
            assert [c.method for c in fake.calls[restarted:] if c.method.startswith("edit")] == []
            assert fake.errors(400) == []
            await daemon.manager.kill(record.id)


async def test_the_daemon_runs_the_bot_only_with_a_token(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_fake_telegram(TOKEN) as fake:
            overrides = dict(telegram_token=TOKEN, telegram_chat=FORUM, telegram_users=(USER,),
                             telegram_api_url=fake.url)  # fmt: skip
            async with running_daemon(sandbox, **overrides) as daemon:
                record = await daemon.manager.create(["sleep", "60"], cwd=tmp_path, title="from-daemon")
                thread = await topic_of(fake, record)
                await fake.wait_for(lambda: fake.in_topic(FORUM, thread))
                await daemon.manager.kill(record.id)


def test_a_daemon_without_a_token_never_loads_telegram(sandbox: Sandbox) -> None:
    assert modules_a_daemon_loads(sandbox, "trio_bridge.telegram") == []


def test_telegram_settings(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "TRIO_BRIDGE_TELEGRAM_CHAT": "-100123",
        "TRIO_BRIDGE_TELEGRAM_USERS": "1, 22",
    }
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    resolved = resolve_settings({**env, "TRIO_BRIDGE_TELEGRAM_TOKEN_FILE": str(token_file)})
    s = resolved.settings
    assert (s.telegram_token, s.telegram_chat, s.telegram_users) == (TOKEN, -100123, (1, 22))
    assert s.telegram_api_url == "https://api.telegram.org" and TOKEN not in repr(s)
    assert resolved.sources["telegram_token"] == "env TRIO_BRIDGE_TELEGRAM_TOKEN_FILE"
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        resolve_settings({**env, "TRIO_BRIDGE_TELEGRAM_TOKEN_FILE": str(token_file)})
    with pytest.raises(ConfigError, match="telegram_chat"):
        resolve_settings({"HOME": str(tmp_path), "TRIO_BRIDGE_TELEGRAM_TOKEN": TOKEN})
    for bad in ("http://api.example.org", "ftp://x"):
        with pytest.raises(ConfigError, match="TELEGRAM_API_URL"):
            resolve_settings({**env, "TRIO_BRIDGE_TELEGRAM_API_URL": bad})
    assert resolve_settings(
        {**env, "TRIO_BRIDGE_TELEGRAM_API_URL": "http://127.0.0.1:81/"}
    ).settings.telegram_api_url == ("http://127.0.0.1:81")
    with pytest.raises(ConfigError, match="TELEGRAM_USERS"):
        resolve_settings({**env, "TRIO_BRIDGE_TELEGRAM_USERS": "1,-2"})


def test_config_command_hides_the_telegram_token(sandbox: Sandbox) -> None:
    env = {**sandbox.env, "TRIO_BRIDGE_TELEGRAM_TOKEN": TOKEN, "TRIO_BRIDGE_TELEGRAM_CHAT": "-100123"}
    result = sandbox.cli("config", env=env)
    assert result.returncode == 0, result.stderr
    assert TOKEN.encode() not in result.stdout and b"telegram_token " in result.stdout
    assert b"(set, hidden)" in result.stdout
    assert os.environ.get("TRIO_BRIDGE_TELEGRAM_TOKEN") is None


async def test_with_a_mesh_one_computer_runs_the_bot_and_another_takes_over(
    sandbox: Sandbox,
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
    caplog: pytest.LogCaptureFixture,
) -> None:
    from trio_bridge.mesh import Mesh, open_redis, scan_keys
    from trio_bridge.telegram import serve_telegram

    caplog.set_level(logging.INFO, "trio_bridge.telegram")
    with trio.fail_after(40):
        async with (
            open_fake_telegram(TOKEN) as fake,
            running_daemon(sandbox) as daemon,
            open_redis(redis_url) as redis,
            trio.open_nursery() as nursery,
        ):
            base = dataclasses.replace(
                daemon.settings, telegram_token=TOKEN, telegram_chat=FORUM, telegram_users=(USER,),
                telegram_api_url=fake.url, heartbeat_ttl=1.5,
            )  # fmt: skip
            members = {}
            for name in ("alpha", "beta"):
                (tmp_path / name).mkdir()
                settings = dataclasses.replace(base, state_dir=tmp_path / name)
                member = Mesh(redis, settings, daemon.manager, name)
                member.instance = "i"
                members[name] = (settings, member)
            alpha = trio.CancelScope()

            async def run_alpha() -> None:
                with alpha:
                    await serve_telegram(members["alpha"][0], daemon.manager, "alpha", members["alpha"][1])

            nursery.start_soon(run_alpha)
            await fake.wait_for(lambda: calls(fake, "getUpdates"))
            nursery.start_soon(serve_telegram, members["beta"][0], daemon.manager, "beta", members["beta"][1])
            while "the Telegram bot runs elsewhere (alpha/i)" not in caplog.text:
                await trio.sleep(0.05)
            await trio.sleep(2.0)  # beta tries for the lease every 0.5 s meanwhile; alpha renews it
            assert fake.errors(409) == []  # one poller
            alpha.cancel()  # alpha stops (and gives the lease up)
            fake.say("/help")
            await fake.wait_for(lambda: any(m.text.startswith("trio-bridge") for m in fake.messages.values()))
            assert fake.errors(409) == [] and TOKEN not in caplog.text
            (key,) = [k async for k in scan_keys(redis, "tb:telegram:poller:*")]
            assert await redis.call("GET", key) == "beta/i"
            nursery.cancel_scope.cancel()


@given(st.text(alphabet=st.sampled_from("ab\n🙂é "), max_size=400), st.integers(min_value=2, max_value=50))
def test_split_message_keeps_everything_within_the_limit(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    assert "".join(parts) == text
    assert all(units(p) <= limit for p in parts)
    # a part ends where a line ends, unless its line alone was too long
    for part, after in itertools.pairwise(parts):
        line = part.rsplit("\n", 1)[-1] + after.split("\n", 1)[0] + ("\n" if "\n" in after else "")
        assert part.endswith("\n") or units(line) > limit


def test_question_buttons_from_the_screen_and_what_a_tap_may_say() -> None:
    claude = (
        "Bash command\n  rm -rf build\n\nDo you want to proceed?\n"
        "\u276f 1. Yes\n  2. Yes, and don't ask again for rm commands in /very/long/path/of/the/project\n"
        "  3. No, and tell Claude what to do differently (esc)\n"
    )
    assert [(c.key, c.label) for c in choices_on_screen(claude)] == [
        ("1", "1. Yes"),
        ("2", "2. Yes, and don't ask again for rm command…"),
        ("3", "3. No, and tell Claude what to do differen…"),
    ]
    assert [c.key for c in choices_on_screen("Continue? (press enter)")] == ["Enter", "Escape"]
    markup = keyboard("0123456789ab", choices_on_screen(claude))
    datas = [row[0]["callback_data"] for row in markup["inline_keyboard"]]
    assert all(len(d.encode()) <= 64 for d in datas)
    assert [parse_callback(d) for d in datas] == [("0123456789ab", k) for k in "123"]
    for bad in ("k:0123456789AB:1", "k:0123456789ab:0", "k:0123456789ab:C-c", "k:0123456789ab:1;x", None, 7):
        assert parse_callback(bad) is None


def test_status_and_topic_name_fit_telegram(tmp_path: Path) -> None:
    record = SessionRecord(
        id="0123456789ab", title="🙂" * 200, command=("sh",), cwd=str(tmp_path), env_keys=(), created_at=0.0,
        state=SessionState.RUNNING, origin="telegram", tmux_name="tb-0123456789ab",
    )  # fmt: skip
    name = topic_name(record, "box")
    assert units(name) <= 128 and name.startswith("▶️ box · shell · 🙂")
    screen = "\n".join(f"{i:03d} " + "<&>" * 60 for i in range(300))
    text = status_text(record, screen)
    shown = plain_text(text, "HTML")  # what Telegram counts; raises on broken HTML
    assert units(shown) <= 4096 and shown.rstrip().endswith("299 " + "<&>" * 60)


@pytest.mark.timeout(150)
@pytest.mark.xdist_group("real-agents")  # with the others that run a real agent CLI
async def test_real_claude_code_from_a_phone(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real Claude Code against the fake model API: started with /new, a prompt typed in its
    topic, its permission dialog as buttons, a tap, the tool runs, the final answer arrives."""
    from trio_bridge.agents import DEFAULT_PROFILES

    profiles = dict(DEFAULT_PROFILES)
    profiles["claude"] = dataclasses.replace(profiles["claude"], binary=agent_binary("claude"))
    work = tmp_path / "work"
    work.mkdir()
    with FakeModelServer() as models:
        # the daemon's environment is the sessions' (a /new names no environment)
        for name, value in claude_env(tmp_path / "home", models.url, work).items():
            monkeypatch.setenv(name, value)
        with trio.fail_after(140):
            async with world(sandbox, agents=profiles) as (fake, daemon, bot):
                fake.say(f"/new claude cwd={work}")
                while not (records := await daemon.manager.store.all()):
                    await trio.sleep(0.05)
                thread = await topic_of(fake, records[0], bot)
                await daemon.manager.wait_agent(records[0].id, [AgentState.IDLE])
                fake.say("RUN_TOOL: touch tool-ran.txt", thread_id=thread)
                await fake.wait_for(lambda: "✅ The agent took the prompt." in texts(fake, thread))
                question: Message = await fake.wait_for(
                    lambda: next((m for m in fake.in_topic(FORUM, thread) if m.reply_markup), None)
                )
                buttons = [row[0] for row in question.reply_markup["inline_keyboard"]]
                assert buttons[0]["text"].startswith("1. Yes"), buttons
                fake.tap(question, buttons[0]["callback_data"])
                await fake.wait_for(lambda: "TOOL-DONE" in texts(fake, thread))  # the answer, alone
                assert (work / "tool-ran.txt").exists()
                assert [a["text"] for a in fake.callback_answers] == ["Sent 1."]


def test_a_daemon_whose_telegram_is_unreachable_serves_and_stops_cleanly(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    env = {
        **sandbox.env, "TRIO_BRIDGE_TELEGRAM_TOKEN_FILE": str(token_file),
        "TRIO_BRIDGE_TELEGRAM_CHAT": str(FORUM),
        "TRIO_BRIDGE_TELEGRAM_API_URL": "http://127.0.0.1:9",  # nothing listens there: refused
    }  # fmt: skip
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        daemon = subprocess.Popen([sys.executable, "-m", "trio_bridge", "daemon"], env=env, stderr=log_file)
        try:
            deadline = time.monotonic() + 15
            while b"ready" not in log_path.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert b"ready" in log_path.read_bytes()
            assert sandbox.cli("ls").returncode == 0  # the API serves meanwhile
            time.sleep(2.5)  # getUpdates fails, backing off: 1 s, 2 s
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=15) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    text = log_path.read_text()
    assert text.count("getUpdates failed") == 1, text  # one line, however often it failed
    assert "crashed" not in text and TOKEN not in text and TOKEN.split(":")[1] not in text


async def test_a_store_from_before_the_status_columns_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "telegram.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE topics (session_id TEXT PRIMARY KEY, chat_id INTEGER NOT NULL, thread_id INTEGER,"
        " status_message_id INTEGER, recreated INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO topics VALUES ('abc', -100, 7, 9, 0);"
    )
    db.commit()
    db.close()
    with trio.fail_after(10):
        async with open_telegram_store(path) as store:
            topic = store.topic("abc")
            assert topic is not None and (topic.thread_id, topic.status_message_id) == (7, 9)
            assert (topic.status_text, topic.name) == (None, None)
            await store.put_topic(attrs.evolve(topic, status_text="shown", name="▶️ x"))
        async with open_telegram_store(path) as store:
            kept = store.topic("abc")
            assert kept is not None and (kept.status_text, kept.name) == ("shown", "▶️ x")
