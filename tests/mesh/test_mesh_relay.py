"""A session's output between computers as a feed (mesh/relay.py: RelayFeed yields what a local
OutputFeed yields), and the daemon's shutdown order (the mesh outlives the API's graceful window).
Real daemons in this test's loop, each with its own tmux server and state, on a real redis-server
the test starts; a mesh secret signs everything."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_bridge.output import Chunk, Resync

from .._api import Daemon, running_daemon
from ..conftest import Sandbox
from .test_mesh import RedisServer, redis_server, redis_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")

MESH = {"mesh_secret": "s" * 40, "heartbeat_interval": 0.2, "heartbeat_ttl": 2.0}


@asynccontextmanager
async def computer(
    sandbox: Sandbox, tmp_path: Path, url: str, name: str, **overrides: Any
) -> AsyncIterator[Daemon]:
    """The daemon of computer ``name``: its own state, runtime directory and tmux server (that
    server is stopped on the way out, with the sessions left in it)."""
    socket = f"{sandbox.socket_name}-{name}"
    try:
        async with running_daemon(
            sandbox, computer=name, redis=url, state_dir=tmp_path / name / "state",
            runtime_dir=tmp_path / name / "run", tmux_socket=socket, **{**MESH, **overrides},
        ) as daemon:  # fmt: skip
            yield daemon
    finally:
        subprocess.run(
            ["tmux", "-L", socket, "kill-server"],
            env=sandbox.env,
            capture_output=True,
            timeout=10,
            check=False,
        )


@asynccontextmanager
async def reader_on(daemon: Daemon, url: str) -> AsyncIterator[Any]:
    """A Mesh of a computer "reader" (not a daemon: it only asks and reads), with the mesh's
    secret."""
    from trio_bridge.mesh import Mesh, open_redis

    settings = dataclasses.replace(daemon.settings, computer="reader")
    async with open_redis(url) as redis:
        yield Mesh(redis, settings, daemon.manager, "reader")


async def collect(feed: Any, start: int) -> tuple[bytes, list[Resync]]:
    """Everything ``feed.follow(start)`` yields until it ends: the bytes, and the resyncs. Every
    item must follow on from the last one (no gap, no overlap)."""
    data, resyncs, expected = bytearray(), [], start
    async with aclosing(feed.follow(start)) as items:
        async for item in items:
            if isinstance(item, Resync):
                assert item.requested == expected
                resyncs.append(item)
                expected = item.offset
            else:
                assert isinstance(item, Chunk) and item.offset == expected and item.data
                data += item.data
                expected += len(item.data)
    return bytes(data), resyncs


async def test_a_remote_session_is_followed_like_a_local_one(
    sandbox: Sandbox,
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
) -> None:
    with trio.fail_after(60):
        async with computer(sandbox, tmp_path, redis_url, "beta") as beta, reader_on(beta, redis_url) as mesh:
            script = "echo first; sleep 1; seq 1 30000; echo last"
            session = await beta.manager.create(["sh", "-c", script], cwd=tmp_path)
            followed: dict[int, tuple[bytes, list[Resync]]] = {}

            async def follow(start: int) -> None:
                followed[start] = await collect(mesh.relay_feed("beta", session.id), start)

            async with trio.open_nursery() as nursery:  # two readers at once, one mid-line
                nursery.start_soon(follow, 0)
                nursery.start_soon(follow, 3)
            await beta.manager.wait(session.id)
            local = await collect(beta.manager.feed(session.id), 0)
            assert followed[0] == local and followed[3] == (local[0][3:], [])
            # (not "last" at the end: under heavy load the manager may close the feed before the
            # log has the last bytes, bounded by timeouts.tmux; both feeds then end there alike)
            assert local[0].split()[0] == b"first" and len(local[0]) > 150_000
            assert mesh.drops.counts == {}


async def test_a_remote_reader_waits_out_a_redis_restart_and_loses_nothing(
    sandbox: Sandbox,
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811 - the fixture
) -> None:
    with trio.fail_after(60):
        async with (
            computer(sandbox, tmp_path, redis_server.url, "beta") as beta,
            reader_on(beta, redis_server.url) as mesh,
        ):
            script = "echo first; sleep 3; seq 1 2000; echo middle; sleep 2; echo last"
            session = await beta.manager.create(["sh", "-c", script], cwd=tmp_path)
            data = bytearray()
            async with aclosing(mesh.relay_feed("beta", session.id).follow(0)) as items:
                async for item in items:
                    assert isinstance(item, Chunk) and item.offset == len(data)
                    data += item.data
                    if data.startswith(b"first") and redis_server.proc is not None:
                        redis_server.kill()  # streams, groups, heartbeats: all gone
                        await trio.sleep(0.5)
                        redis_server.start()
            local, _ = await collect(beta.manager.feed(session.id), 0)
            assert bytes(data) == local and local.split()[-1] == b"last" and b"middle" in local


async def test_output_the_owner_dropped_is_a_resync_as_it_is_locally(
    sandbox: Sandbox,
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
) -> None:
    with trio.fail_after(60):
        async with (
            computer(sandbox, tmp_path, redis_url, "beta", output_max_bytes=1 << 20) as beta,
            reader_on(beta, redis_url) as mesh,
        ):
            session = await beta.manager.create(["seq", "1", "500000"], cwd=tmp_path)  # 3.4 MB
            await beta.manager.wait(session.id)
            local = await collect(beta.manager.feed(session.id), 0)
            assert [r.requested for r in local[1]] == [0] and local[1][0].offset > 0
            remote = await collect(mesh.relay_feed("beta", session.id), 0)
            assert remote == local


def test_the_first_kept_offset_is_read_from_a_410_old_or_new() -> None:
    from trio_bridge.mesh.relay import _first_kept

    new = {"error": {"code": "offset_dropped", "message": "whatever", "first_offset": 4096}}
    old = {"error": {"code": "offset_dropped", "message": "offset 0 was dropped; the log starts at 2048"}}
    assert _first_kept(json.dumps(new).encode(), 0) == 4096
    assert _first_kept(json.dumps(old).encode(), 0) == 2048
    assert _first_kept(b"not json", 7) == 7 and _first_kept(b"[]", 7) == 7


async def test_a_request_through_the_mesh_is_answered_while_the_daemon_shuts_down(
    sandbox: Sandbox,
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
) -> None:
    """alpha forwards a long poll to beta, then starts stopping; beta answers during alpha's
    graceful window: the answer must still come back through the mesh, and reach the client."""
    from trio_bridge.mesh import keys, open_redis

    with trio.fail_after(60):
        async with (
            computer(sandbox, tmp_path, redis_url, "beta") as beta,
            open_redis(redis_url) as redis,
            trio.open_nursery() as nursery,
        ):
            session = await beta.manager.create(["sleep", "600"], cwd=tmp_path)
            alpha_scope = trio.CancelScope()

            async def run_alpha(*, task_status: trio.TaskStatus[Daemon]) -> None:
                with alpha_scope:
                    # shutdown_timeout 6: a graceful window of 2 s
                    async with computer(sandbox, tmp_path, redis_url, "alpha", shutdown_timeout=6.0) as alpha:
                        task_status.started(alpha)
                        await trio.sleep_forever()

            alpha: Daemon = await nursery.start(run_alpha)
            async with alpha.client() as client:
                answers = []

                async def ask() -> None:
                    path = f"/v1/sessions/{session.id}/wait"
                    answers.append(await client.get(path, params={"computer": "beta", "timeout": 30}))

                nursery.start_soon(ask)
                while (await redis.call("XPENDING", keys.inbox("beta"), keys.INBOX_GROUP))["pending"] != 1:
                    await trio.sleep(0.05)  # beta took the request on: it waits for the session
                # An events stream says when alpha's graceful window has begun (its `shutdown`
                # event): beta then answers at once, with the whole window (2 s) left for the way back.
                async with client.stream("GET", "/v1/events") as events:
                    assert events.status_code == 200
                    alpha_scope.cancel()  # alpha stops (as on SIGTERM): its API's graceful window begins
                    async for line in events.aiter_lines():
                        if line == "event: shutdown":
                            break
                await beta.manager.kill(session.id)
                while not answers:
                    await trio.sleep(0.05)
            assert answers[0].status_code == 200, answers[0].text
            assert answers[0].json()["ended"] is True
