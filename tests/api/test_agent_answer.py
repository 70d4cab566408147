"""``GET /v1/sessions/{id}/agent/answer``: an agent's final answers, kept in its session's
directory, served by turn (the mesh's bot fetches other computers' answers this way)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trio_bridge.sessions import ANSWERS_KEPT
from trio_bridge.sessions._answers import MAX_ANSWER_BYTES, read_answer, write_answer

from .._api import assert_error, create, daemon_and_client
from ..conftest import Sandbox
from ..sessions.test_agent_sessions import (  # noqa: F401 - a fixture
    agent_api,
    agent_sandbox,
    env_of,
    start_agent,
    wait_until,
)


def answer_path(sid: str) -> str:
    return f"/v1/sessions/{sid}/agent/answer"


async def stop_hook(client: httpx.AsyncClient, sid: str, answer: str) -> None:
    """A turn-end hook (Claude's Stop) carrying ``answer``, as ``trio-bridge hook Stop`` sends it."""
    response = await client.post(
        f"/v1/sessions/{sid}/hooks",
        json={"event": "Stop", "payload": {"hook_event_name": "Stop", "last_assistant_message": answer}},
    )
    assert response.status_code == 204, response.text


async def get_answer(client: httpx.AsyncClient, sid: str, **params: Any) -> dict[str, Any]:
    response = await client.get(answer_path(sid), params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"turn", "text", "at"}, body
    return body


async def test_a_turns_answer_is_served_by_turn_and_outlives_a_restart(
    agent_sandbox: Sandbox,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with agent_api(agent_sandbox, tmp_path) as (daemon, client):
            session = await start_agent(client, tmp_path, "fake-claude")
            sid = session["id"]
            assert session["agent_answers"] == 0
            await wait_until(client, sid, "idle")
            assert_error(await client.get(answer_path(sid)), 404, "no_answer")
            # a real turn of the fake agent: its Stop hook's answer, kept as turn 1
            response = await client.post(f"/v1/sessions/{sid}/prompt", json={"text": "first question"})
            assert response.status_code == 204, response.text
            record = await wait_until(client, sid, "idle")
            for _ in range(50):  # (the record may say idle a moment before it says the answer)
                record = (await client.get(f"/v1/sessions/{sid}")).json()
                if record["agent_answers"] == 1:
                    break
                await trio.sleep(0.1)
            assert record["agent_answers"] == 1, record
            first = await get_answer(client, sid)
            assert (first["turn"], first["text"]) == (1, "ANSWER: first question")
            assert await get_answer(client, sid, turn=1) == first
            assert_error(await client.get(answer_path(sid), params={"turn": 2}), 404, "no_answer")
            # the file, private
            kept = Path(daemon.settings.state_dir) / "sessions" / sid / "answers" / "1.txt"
            assert kept.read_text() == "ANSWER: first question"
            assert os.stat(kept).st_mode & 0o077 == 0
        # the daemon restarts (the agent lives on): the answer is still served, and the next
        # one is turn 2, not a second turn 1
        async with agent_api(agent_sandbox, tmp_path) as (daemon, client):
            assert (await client.get(f"/v1/sessions/{sid}")).json()["agent_answers"] == 1
            assert await get_answer(client, sid, turn=1) == first
            await stop_hook(client, sid, "the second answer")
            second = await get_answer(client, sid)
            assert (second["turn"], second["text"]) == (2, "the second answer")
            assert (await client.get(f"/v1/sessions/{sid}")).json()["agent_answers"] == 2
            # only the last ANSWERS_KEPT turns are kept
            for n in range(3, ANSWERS_KEPT + 3):
                await stop_hook(client, sid, f"answer {n}")
            last = ANSWERS_KEPT + 2
            assert (await get_answer(client, sid))["turn"] == last
            assert (await get_answer(client, sid, turn=3))["text"] == "answer 3"
            for gone in (1, 2):
                assert_error(await client.get(answer_path(sid), params={"turn": gone}), 404, "no_answer")
            kept_files = sorted((Path(daemon.settings.state_dir) / "sessions" / sid / "answers").iterdir())
            assert len(kept_files) == ANSWERS_KEPT


async def test_an_answer_kept_but_not_counted_before_a_crash_keeps_its_turn(
    agent_sandbox: Sandbox,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """A daemon that stopped between keeping an answer (the file) and counting it (the record):
    after the restart the next answer takes the next turn, and the one left uncounted is
    still served, not overwritten."""
    with trio.fail_after(60):
        async with agent_api(agent_sandbox, tmp_path) as (daemon, client):
            sid = (await start_agent(client, tmp_path, "fake-claude"))["id"]
            await wait_until(client, sid, "idle")
            await stop_hook(client, sid, "answer one")
            assert (await client.get(f"/v1/sessions/{sid}")).json()["agent_answers"] == 1
            directory = Path(daemon.settings.state_dir) / "sessions" / sid
        # (the crash: turn 2's answer is on disk, the record still says 1)
        write_answer(directory, 2, "answer two, never counted")
        async with agent_api(agent_sandbox, tmp_path) as (daemon, client):
            await stop_hook(client, sid, "answer three")
            third = await get_answer(client, sid)
            assert (third["turn"], third["text"]) == (3, "answer three")
            assert (await get_answer(client, sid, turn=2))["text"] == "answer two, never counted"
            assert (await client.get(f"/v1/sessions/{sid}")).json()["agent_answers"] == 3


async def test_the_answer_door_refuses_what_it_cannot_serve(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with daemon_and_client(sandbox, bind="127.0.0.1:0") as (daemon, client):
            plain = await create(client, tmp_path, command=["cat"])
            assert_error(await client.get(answer_path(plain["id"])), 409, "not_an_agent")
            assert_error(await client.get(answer_path("nosuchsession")), 404, "session_not_found")
            for turn in ("0", "-1", "abc", "1.5", str(1 << 53)):
                response = await client.get(answer_path(plain["id"]), params={"turn": turn})
                assert_error(response, 422, "invalid_request")
            assert_error(await client.get(answer_path(plain["id"]), params={"bogus": "1"}), 422)
            # documented: the query, the answer's model
            document = (await client.get("/v1/openapi.json")).json()
            operation = document["paths"]["/v1/sessions/{session_id}/agent/answer"]["get"]
            assert "turn" in [p["name"] for p in operation["parameters"]]
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert schema["title"] == "AnswerOut" and set(schema["required"]) == {"turn", "text", "at"}
            # over TCP: the token, as everywhere
            async with daemon.client(tcp=True, token="wrong-token-wrong-token") as stranger:
                assert (await stranger.get(answer_path(plain["id"]))).status_code == 401
            async with daemon.client(tcp=True) as owner:
                assert_error(await owner.get(answer_path(plain["id"])), 409, "not_an_agent")


def test_answers_on_disk_are_bounded(tmp_path: Path) -> None:
    for turn in range(1, ANSWERS_KEPT + 3):
        write_answer(tmp_path, turn, f"answer {turn}")
    names = sorted(p.name for p in (tmp_path / "answers").iterdir())
    assert names == sorted(f"{t}.txt" for t in range(3, ANSWERS_KEPT + 3))
    assert read_answer(tmp_path, 2) is None and read_answer(tmp_path, 0) is None
    kept = read_answer(tmp_path, 3)
    assert kept is not None and (kept.turn, kept.text) == (3, "answer 3")
    # a long one is cut, and says so; a character is never cut in half
    write_answer(tmp_path, 99, "é" * MAX_ANSWER_BYTES)
    long = read_answer(tmp_path, 99)
    assert long is not None and long.text.endswith("cut: the answer was longer than 1 MiB]")
    assert len(long.text.encode()) <= MAX_ANSWER_BYTES and "\ufffd" not in long.text
    # what is not a kept answer is not served: a link planted in its place
    (tmp_path / "answers" / "100.txt").symlink_to(tmp_path / "answers" / "99.txt")
    with pytest.raises(OSError):
        read_answer(tmp_path, 100)
