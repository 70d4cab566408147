"""Mesh trust (issue 12): someone who can write to the shared Redis but does not know the mesh
secret plays the attacker with a plain Redis client, against two real daemons. Each attack has
its own test; each of them ran, or broke something, before the mesh signed everything.

Plus the pieces without daemons: what a signature binds, and the inbox's replay memory in the
session store.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio

from trio_bridge.mesh._seal import Rejected, Signer
from trio_bridge.sessions.store import MESH_SEEN_MAX, SCHEMA_VERSION, open_session_store

from .._api import sse_events_sync
from ..conftest import Sandbox
from . import test_mesh
from .test_mesh import Computer, redis_do, start_pair, wait_until

# the fixtures of test_mesh: a redis-server of the test's own, and the daemons it started
redis_server = test_mesh.redis_server
redis_url = test_mesh.redis_url
computers = test_mesh.computers

SECRET = {"TRIO_BRIDGE_MESH_SECRET": "s3cret-shared-by-the-mesh"}


@contextmanager
def api(computer: Computer, timeout: float = 30) -> Iterator[httpx.Client]:
    """A client of the computer's API, over its unix socket."""
    socket_path = Path(computer.env["TRIO_BRIDGE_RUNTIME_DIR"]) / "api.sock"
    transport = httpx.HTTPTransport(uds=str(socket_path))
    with httpx.Client(transport=transport, base_url="http://tb", timeout=timeout) as client:
        yield client


def dropped(computer: Computer, entry: str, reason: str) -> float:
    """The computer's ``trio_bridge_mesh_dropped`` counter for (entry, reason)."""
    with api(computer) as client:
        text = client.get("/metrics").text
    found = re.search(
        rf'^trio_bridge_mesh_dropped_total\{{entry="{entry}",reason="{reason}"\}} (\S+)$', text, re.M
    )
    return float(found[1]) if found else 0.0


def appender(marker: Path) -> list[str]:
    """A command that appends one line to ``marker`` each time it runs."""
    return ["sh", "-c", f"echo ran >> {marker}"]


def runs(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def create_on_beta(alpha: Computer, command: list[str]) -> str:
    created = alpha.cli("new", "--computer", "beta", "--", *command)
    assert created.returncode == 0, created.stderr.decode()
    return created.stdout.decode().strip()


def inbox_entries(url: str, computer: str) -> list[tuple[str, dict[str, str]]]:
    (entries,) = redis_do(url, ("XRANGE", f"tb:inbox:{computer}", "-", "+"))
    return [(entry_id, dict(fields)) for entry_id, fields in entries]  # type: ignore[attr-defined]


def the_create_request(url: str) -> dict[str, str]:
    """The forwarded ``POST /v1/sessions`` in beta's inbox (the attacker reads it there)."""
    found = [
        fields
        for _, fields in inbox_entries(url, "beta")
        if json.loads(fields["body"])["method"] == "POST"
        and json.loads(fields["body"])["path"] == "/v1/sessions"
    ]
    assert len(found) == 1
    return found[0]


def settle(url: str, computer: str) -> None:
    """Wait until the computer's inbox has nothing delivered and unacknowledged left."""
    wait_until(lambda: redis_do(url, ("XPENDING", f"tb:inbox:{computer}", "tb"))[0]["pending"] == 0)  # type: ignore[index]


def xadd(url: str, key: str, fields: dict[str, str]) -> None:
    redis_do(url, ("XADD", key, "*", *(item for pair in fields.items() for item in pair)))


# -- the attacks ----------------------------------------------------------------------------


def test_a_request_copied_into_another_inbox_does_not_run(
    sandbox: Sandbox, redis_url: str, computers: list[Computer], tmp_path: Path
) -> None:
    alpha, beta = start_pair(sandbox, redis_url, computers, **SECRET)
    marker = tmp_path / "ran"
    sid = create_on_beta(alpha, appender(marker))
    wait_until(lambda: runs(marker) == 1)
    # signed for beta, added verbatim to alpha's inbox
    xadd(redis_url, "tb:inbox:alpha", the_create_request(redis_url))
    settle(redis_url, "alpha")
    time.sleep(0.5)  # (a command that ran would have appended by now)
    assert runs(marker) == 1
    wait_until(lambda: dropped(alpha, "request", "bad_signature") == 1)
    assert json.loads(alpha.cli("ls", "--json").stdout) == []
    assert [s["id"] for s in json.loads(beta.cli("ls", "--json").stdout)] == [sid]


def test_a_request_replayed_after_its_record_is_deleted_does_not_run_again(
    sandbox: Sandbox, redis_url: str, computers: list[Computer], tmp_path: Path
) -> None:
    alpha, beta = start_pair(sandbox, redis_url, computers, **SECRET)
    marker = tmp_path / "ran"
    create_on_beta(alpha, appender(marker))
    wait_until(lambda: runs(marker) == 1)
    entry = the_create_request(redis_url)
    for restart in (False, True):
        if restart:  # the memory is beta's own, on disk: a restart keeps it
            assert beta.stop() == 0
            assert "ready" in beta.start()
        # the idempotency record in Redis, which the attacker can delete, is gone
        assert redis_do(redis_url, ("DEL", f"tb:done:beta:{entry['id']}")) == [int(not restart)]
        xadd(redis_url, "tb:inbox:beta", entry)
        settle(redis_url, "beta")
        time.sleep(0.5)
        assert runs(marker) == 1
        wait_until(lambda: dropped(beta, "request", "replay") == 1)
    assert len(json.loads(beta.cli("ls", "--json").stdout)) == 1
    assert beta.stop() == 0
    assert "was handled before" in beta.log


def test_a_stale_request_is_refused(
    sandbox: Sandbox, redis_url: str, computers: list[Computer], tmp_path: Path
) -> None:
    # Signed with the secret (as a computer of the mesh would have, long ago), then replayed:
    # older than the accepted skew, it is refused without any memory.
    _, beta = start_pair(sandbox, redis_url, computers, **SECRET)
    marker = tmp_path / "ran"
    signer = Signer(SECRET["TRIO_BRIDGE_MESH_SECRET"])
    data = json.dumps({"command": appender(marker), "cwd": "/"}).encode()
    body = json.dumps({
        "method": "POST", "path": "/v1/sessions", "query": {}, "content_type": "application/json",
        "data_b64": base64.b64encode(data).decode(),
    })  # fmt: skip
    sent_at, sig = signer.seal("request", "alpha", "beta", "old-1", "", body, now=time.time() - 3600)
    fields = {"id": "old-1", "from": "alpha", "session": "", "time": sent_at, "body": body, "sig": sig}
    xadd(redis_url, "tb:inbox:beta", fields)
    settle(redis_url, "beta")
    wait_until(lambda: dropped(beta, "request", "stale") == 1)
    assert runs(marker) == 0
    # the same, fresh: it runs (the test's request is a genuine one)
    sent_at, sig = signer.seal("request", "alpha", "beta", "new-1", "", body)
    xadd(redis_url, "tb:inbox:beta", {**fields, "id": "new-1", "time": sent_at, "sig": sig})
    wait_until(lambda: runs(marker) == 1)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str, str]]:
    """(event, id, data) of an SSE response, as they arrive."""
    for event in sse_events_sync(response.iter_lines()):
        yield event.event, event.id or "", event.data


def follow_remote_output(
    alpha: Computer, url: str, *, sid: str, inject: list[dict[str, str]]
) -> tuple[str, list[str]]:
    """Alpha's SSE stream of beta's session ``sid`` (which prints ``first``, waits, prints
    ``last`` and ends): once ``first`` arrived, the attacker adds ``inject`` (``{offset}`` is
    replaced with the reader's next offset) to the relay stream. The text read, and the
    events."""
    text, kinds = "", []
    with (
        api(alpha, timeout=60) as client,
        client.stream(
            "GET", f"/v1/sessions/{sid}/stream", params={"computer": "beta", "offset": 0}
        ) as response,
    ):
        assert response.status_code == 200
        injected = False
        for event, event_id, data in sse_events(response):
            kinds.append(event)
            if event == "output":
                text += json.loads(data)["data"]
                if "first" in text and not injected:
                    injected = True
                    for fields in inject:
                        xadd(
                            url,
                            f"tb:out:beta:{sid}",
                            {k: v.replace("{offset}", event_id) for k, v in fields.items()},
                        )
            if event == "end":
                break
    return text, kinds


SLOW = ["sh", "-c", "echo first; sleep 2; echo last"]


def test_forged_output_is_not_delivered(sandbox: Sandbox, redis_url: str, computers: list[Computer]) -> None:
    alpha, _ = start_pair(sandbox, redis_url, computers, **SECRET)
    sid = create_on_beta(alpha, SLOW)
    forged = base64.b64encode(b"\x1b]0;pwned\x07\x1b[2Jpwned\r\n").decode()
    text, kinds = follow_remote_output(
        alpha, redis_url, sid=sid,
        inject=[
            {"offset": "{offset}", "data": forged},  # unsigned
            {"offset": "{offset}", "data": forged, "time": repr(time.time()), "sig": "0" * 64},  # forged
            {"end": "{offset}", "time": repr(time.time()), "sig": "1" * 64},  # a forged end
        ],
    )  # fmt: skip
    assert "pwned" not in text and "\x1b" not in text
    assert text.split() == ["first", "last"] and kinds[-1] == "end"
    assert dropped(alpha, "output", "unsigned") == 1 and dropped(alpha, "output", "bad_signature") == 2


def test_forged_events_are_not_delivered(sandbox: Sandbox, redis_url: str, computers: list[Computer]) -> None:
    alpha, beta = start_pair(sandbox, redis_url, computers, **SECRET)
    seen: list[tuple[str, str]] = []
    with api(alpha) as client, client.stream("GET", "/v1/events", params={"computer": "*"}) as response:
        assert response.status_code == 200
        # a forged "exited" of a session that does not exist, then a genuine session's events
        record = json.dumps({"id": "ghost", "computer": "beta", "state": "exited"})
        xadd(redis_url, "tb:events:beta", {"kind": "exited", "session": record, "time": repr(time.time())})
        xadd(redis_url, "tb:events:beta", {"kind": "exited", "session": record, "time": repr(time.time()),
                                           "sig": "0" * 64})  # fmt: skip
        created = beta.cli("new", "--", "true")
        assert created.returncode == 0
        sid = created.stdout.decode().strip()
        for event, _, data in sse_events(response):
            seen.append((event, json.loads(data)["session"]["id"]))
            if event == "exited":
                break
    assert seen == [(kind, sid) for kind in ("created", "running", "exited")]
    assert dropped(alpha, "event", "unsigned") == 1 and dropped(alpha, "event", "bad_signature") == 1


@pytest.mark.parametrize("secret", [False, True], ids=["open", "signed"])
def test_junk_entries_end_no_stream(
    sandbox: Sandbox, redis_url: str, computers: list[Computer], secret: bool
) -> None:
    alpha, beta = start_pair(sandbox, redis_url, computers, **(SECRET if secret else {}))
    sid = create_on_beta(alpha, SLOW)
    junk = [
        {"offset": "nope", "data": "%%%"},
        {"data": "x"},
        {"end": "later"},
        {"offset": "{offset}", "data": "!"},
    ]
    text, kinds = follow_remote_output(alpha, redis_url, sid=sid, inject=junk)
    assert text.split() == ["first", "last"] and kinds[-1] == "end"
    # (with a secret, junk without a signature is counted as unsigned)
    assert dropped(alpha, "output", "malformed") + dropped(alpha, "output", "unsigned") == 4
    # junk in an events stream: the stream goes on to the genuine events
    with api(alpha) as client, client.stream("GET", "/v1/events", params={"computer": "beta"}) as response:
        for fields in ({"kind": "exited"}, {"kind": "exited", "session": "{not json"}, {"session": "[]"}):
            xadd(redis_url, "tb:events:beta", fields)
        created = beta.cli("new", "--", "true")
        assert created.returncode == 0
        events = []
        for event, _, _ in sse_events(response):
            events.append(event)
            if event == "exited":
                break
    assert events == ["created", "running", "exited"]
    assert dropped(alpha, "event", "malformed") + dropped(alpha, "event", "unsigned") == 3


def test_bad_heartbeats_leave_the_listing_working_and_nothing_prints_raw(
    sandbox: Sandbox, redis_url: str, computers: list[Computer]
) -> None:
    alpha, _ = start_pair(sandbox, redis_url, computers)  # open mesh: nothing is signed
    now = time.time()
    redis_do(
        redis_url,
        ("SET", "tb:computer:ghost", json.dumps({"name": "ghost", "sessions": "notint", "time": now})),
        ("SET", "tb:computer:junk", "{not json"),
        ("HSET", "tb:computers", "bad-time", json.dumps({"name": "bad-time", "time": "x"})),
        ("HSET", "tb:computers", "evil\x1b[31m", json.dumps({"name": "evil\x1b[31m", "time": now})),
        # well-formed, but its fields drive a terminal
        (
            "HSET",
            "tb:computers",
            "gamma",
            json.dumps(
                {
                    "name": "gamma",
                    "time": now,
                    "version": "1\x1b[2J",
                    "host": "h\x1b]0;pwned\x07",
                    "sessions": 1,
                }
            ),
        ),
    )
    with api(alpha) as client:
        listed = client.get("/v1/computers")
    assert listed.status_code == 200
    document = listed.json()
    assert {c["name"] for c in document["computers"]} == {"alpha", "beta", "gamma"}
    assert document["signed"] is False
    table = alpha.cli("computers")
    assert table.returncode == 0
    out = table.stdout.decode()
    assert "\x1b" not in out and "\x07" not in out
    assert re.search(r"^gamma\s+offline\s+\S+\s+1\s+1\\x1b\[2J\s+h\\x1b\]0;pwned\\x07$", out, re.M), out
    assert dropped(alpha, "heartbeat", "malformed") >= 4


def test_an_open_mesh_warns_at_start_and_says_so(
    sandbox: Sandbox, redis_url: str, computers: list[Computer]
) -> None:
    open_one = Computer(sandbox, "open", redis_url)
    computers.append(open_one)
    said = open_one.start()
    assert "ready" in said
    assert "anyone who can write to this Redis can run commands here" in said
    assert "NOT signed" in open_one.cli("computers").stderr.decode()
    assert open_one.stop() == 0
    signed = Computer(sandbox, "signed", redis_url, **SECRET)
    computers.append(signed)
    said = signed.start()
    assert "ready" in said and "anyone who can write" not in said
    listing = signed.cli("computers")
    assert "mesh: signed" in listing.stderr.decode()
    # the open computer's (unsigned) heartbeat is not listed by a signed one
    assert set(signed.computers()) == {"signed"}


def test_with_a_secret_a_forged_heartbeat_is_left_out(
    sandbox: Sandbox, redis_url: str, computers: list[Computer]
) -> None:
    alpha, beta = start_pair(sandbox, redis_url, computers, **SECRET)
    (genuine,) = redis_do(redis_url, ("GET", "tb:computer:beta"))
    value = json.loads(genuine)  # type: ignore[arg-type]
    redis_do(
        redis_url,
        # beta's own heartbeat, copied under another name; and one with a changed field
        ("SET", "tb:computer:mallory", json.dumps({**value, "name": "mallory"}), "EX", 60),
        ("HSET", "tb:computers", "beta2", json.dumps({**value, "name": "beta2"})),
        ("SET", "tb:computer:delta", json.dumps({**value, "name": "delta", "sig": "0" * 64}), "EX", 60),
    )
    assert set(alpha.computers()) == {"alpha", "beta"}
    assert dropped(alpha, "heartbeat", "bad_signature") >= 3
    # a genuine heartbeat recorded long ago, replayed into a live key: listed, but offline
    from trio_bridge.mesh.computers import seal_heartbeat

    old = {**value, "name": "gone", "time": time.time() - 3600}
    del old["sig"]
    replayed = seal_heartbeat(Signer(SECRET["TRIO_BRIDGE_MESH_SECRET"]), old)
    redis_do(redis_url, ("SET", "tb:computer:gone", replayed, "EX", 60))
    listed = alpha.computers()
    assert set(listed) == {"alpha", "beta", "gone"} and not listed["gone"]["online"]
    assert beta.computers()["alpha"]["online"]


async def test_a_forged_or_misdirected_reply_is_ignored(redis_url: str) -> None:
    from trio_bridge.mesh import open_redis
    from trio_bridge.mesh._seal import Drops
    from trio_bridge.mesh.rpc import request, seal_reply

    signer, drops = Signer(SECRET["TRIO_BRIDGE_MESH_SECRET"]), Drops()
    answer: dict[str, object] = {}
    with trio.fail_after(30):
        async with open_redis(redis_url) as redis:
            await redis.pipeline([("HSET", "tb:computers", "beta", "{}"), ("SET", "tb:computer:beta", "{}")])

            async def ask() -> None:
                answer.update(
                    await request(redis, sender="alpha", computer="beta", body={}, signer=signer, drops=drops)
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                while not (entries := await redis.call("XRANGE", "tb:inbox:beta", "-", "+")):
                    await trio.sleep(0.01)
                rid = entries[0][1]["id"]

                def reply(text: str) -> str:
                    return json.dumps({"status": 200, "body": text})

                for forged in (
                    "not json",
                    json.dumps({"reply": reply("unsigned"), "from": "beta", "time": repr(time.time())}),
                    seal_reply(Signer("a guess"), "reply", "beta", "alpha", rid, reply("wrong key")),
                    seal_reply(signer, "reply", "gamma", "alpha", rid, reply("from another computer")),
                    seal_reply(signer, "reply", "beta", "alpha", "another-id", reply("for another request")),
                    seal_reply(signer, "done", "beta", "alpha", rid, reply("another kind")),
                    seal_reply(signer, "reply", "beta", "alpha", rid, "[]"),  # genuine, but no reply
                ):
                    await redis.call("RPUSH", f"tb:reply:alpha:{rid}", forged)
                await redis.call(
                    "RPUSH",
                    f"tb:reply:alpha:{rid}",
                    seal_reply(signer, "reply", "beta", "alpha", rid, reply("ok")),
                )
    assert answer == {"status": 200, "body": "ok"}
    assert sum(drops.counts.values()) == 7


# -- the pieces ------------------------------------------------------------------------------


def test_a_signature_binds_kind_sender_target_id_time_and_body() -> None:
    signer = Signer("k")
    parts = ("request", "alpha", "beta", "id-1")
    sent_at, sig = signer.seal(*parts, "session", "body")
    fields = {"time": sent_at, "sig": sig}
    assert signer.check(fields, *parts, "session", "body") == float(sent_at)
    changed = [
        ("reply", "alpha", "beta", "id-1", "session", "body"),
        ("request", "gamma", "beta", "id-1", "session", "body"),
        ("request", "alpha", "alpha", "id-1", "session", "body"),
        ("request", "alpha", "beta", "id-2", "session", "body"),
        ("request", "alpha", "beta", "id-1", "other", "body"),
        ("request", "alpha", "beta", "id-1", "session", "bodz"),
        ("request", "alpha", "beta", "id-1", "sessionb", "ody"),  # parts cannot slide
    ]
    for other in changed:
        with pytest.raises(Rejected) as refused:
            signer.check(fields, *other)
        assert refused.value.reason == "bad_signature", other
    with pytest.raises(Rejected) as refused:
        signer.check({**fields, "time": repr(float(sent_at) + 1)}, *parts, "session", "body")
    assert refused.value.reason == "bad_signature"
    with pytest.raises(Rejected) as refused:
        Signer("other key").check(fields, *parts, "session", "body")
    assert refused.value.reason == "bad_signature"
    for bad in ({"time": sent_at}, {"time": sent_at, "sig": ""}):
        with pytest.raises(Rejected) as refused:
            signer.check(bad, *parts, "session", "body")
        assert refused.value.reason == "unsigned"
    for bad in ({"sig": sig}, {"time": "nan", "sig": sig}, {"time": "soon", "sig": sig}):
        with pytest.raises(Rejected) as refused:
            signer.check(bad, *parts, "session", "body")
        assert refused.value.reason == "malformed"
    old_time, old_sig = signer.seal(*parts, "b", now=time.time() - 301)
    with pytest.raises(Rejected) as refused:
        signer.check({"time": old_time, "sig": old_sig}, *parts, "b")
    assert refused.value.reason == "stale"
    assert signer.check({"time": old_time, "sig": old_sig}, *parts, "b", fresh=False) == float(old_time)
    # without a secret: the shape and the time are still checked
    assert Signer(None).seal(*parts, "b")[1] == ""
    with pytest.raises(Rejected):
        Signer(None).check({"time": old_time}, *parts, "b")


def test_the_replay_memory_is_kept_on_disk_bounded_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    # a schema-2 database (before the memory): opened, it gains the table
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, title TEXT NOT NULL, command TEXT NOT NULL, "
               "cwd TEXT NOT NULL, env_keys TEXT NOT NULL, created_at REAL NOT NULL, ended_at REAL, "
               "state TEXT NOT NULL, exit_code INTEGER, exit_signal INTEGER, origin TEXT NOT NULL, "
               "tmux_name TEXT NOT NULL UNIQUE, agent TEXT, agent_state TEXT, native_id TEXT, "
               "transcript_path TEXT)")  # fmt: skip
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()

    async def main() -> None:
        with trio.fail_after(30):
            async with open_session_store(path) as store:
                assert await store.remember("a", expires_at=200.0, now=100.0)
                assert not await store.remember("a", expires_at=300.0, now=150.0)
                assert await store.remember("b", expires_at=400.0, now=150.0)
            async with open_session_store(path) as store:  # a restart remembers
                assert not await store.remember("b", expires_at=400.0, now=160.0)
                # past its expiry an id is forgotten (its request is stale by then anyway)
                assert await store.remember("a", expires_at=500.0, now=250.0)

    trio.run(main)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # (3 brought the memory)
    assert sorted(row[0] for row in db.execute("SELECT id FROM mesh_seen")) == ["a", "b"]
    db.close()
    assert MESH_SEEN_MAX >= 10_000  # bounded, but far beyond 16 requests at a time for the skew


def test_the_replay_memory_forgets_the_oldest_beyond_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trio_bridge.sessions import store as store_module

    monkeypatch.setattr(store_module, "MESH_SEEN_MAX", 5)

    async def main() -> list[str]:
        with trio.fail_after(30):
            async with open_session_store(tmp_path / "s.db") as store:
                for n in range(8):
                    assert await store.remember(f"id-{n}", expires_at=1e12, now=0.0)
                assert not await store.remember("id-7", expires_at=1e12, now=0.0)
        db = sqlite3.connect(tmp_path / "s.db")
        try:
            return sorted(row[0] for row in db.execute("SELECT id FROM mesh_seen"))
        finally:
            db.close()

    assert trio.run(main) == [f"id-{n}" for n in range(3, 8)]
