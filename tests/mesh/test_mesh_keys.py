"""The mesh's protocol in one place: every Redis key is built in mesh/keys.py (with the names the
wire format has always had), and what Redis refuses arrives as a typed error, not as text."""

from __future__ import annotations

import re
import shutil

import pytest
import trio

from trio_bridge.mesh import keys
from trio_bridge.mesh.errors import GroupExistsError, MeshError, NoGroupError, RedisRefusedError

from ..conftest import REPO
from .test_mesh import redis_server, redis_url  # noqa: F401 - fixtures


def test_no_module_but_keys_writes_a_key() -> None:
    # a string literal (or f-string) that starts with "tb:": a key written by hand
    literal = re.compile(r"""\b[fFrRbB]?["']tb:""")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "trio_bridge").rglob("*.py"))
        if path.name != "keys.py" or path.parent.name != "mesh"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line) or re.search(r"""(^|[\s(\[,=])["']tb:""", line)
    ]
    assert offenders == []


def test_the_key_names_are_the_wire_format() -> None:
    # Daemons of different versions share one Redis: these names never change.
    assert keys.REGISTRY == "tb:computers"
    assert keys.heartbeat("alpha") == "tb:computer:alpha" and keys.HEARTBEAT_PATTERN == "tb:computer:*"
    assert keys.heartbeat_owner(keys.heartbeat("a.b-1")) == "a.b-1"
    assert keys.inbox("beta") == "tb:inbox:beta" and keys.INBOX_GROUP == "tb"
    assert keys.reply("alpha", "r1") == "tb:reply:alpha:r1"
    assert keys.done("beta", "r1") == "tb:done:beta:r1"
    assert keys.relay("beta", "s1") == "tb:out:beta:s1"
    assert keys.events("beta") == "tb:events:beta"
    lease = keys.telegram_lease("123:secret-token")
    assert re.fullmatch(r"tb:telegram:poller:[0-9a-f]{16}", lease) and "secret" not in lease


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_what_redis_refuses_is_a_typed_error(redis_url: str) -> None:  # noqa: F811
    from trio_bridge.mesh import open_redis

    with trio.fail_after(20):
        async with open_redis(redis_url) as redis:
            await redis.call("SET", "plain", "x")
            with pytest.raises(RedisRefusedError) as wrong:
                await redis.call("XADD", "plain", "*", "a", "b")
            assert wrong.value.code == "WRONGTYPE" and type(wrong.value) is RedisRefusedError
            assert isinstance(wrong.value, MeshError) and "XADD" in str(wrong.value)
            with pytest.raises(NoGroupError) as lost:
                await redis.call("XREADGROUP", "GROUP", "g", "c", "STREAMS", "nostream", ">")
            assert lost.value.code == "NOGROUP"
            await redis.call("XGROUP", "CREATE", "s", "g", "0", "MKSTREAM")
            with pytest.raises(GroupExistsError):
                await redis.call("XGROUP", "CREATE", "s", "g", "0", "MKSTREAM")
            with pytest.raises(RedisRefusedError) as in_pipeline:
                await redis.pipeline([("GET", "plain"), ("XLEN", "plain")])
            assert in_pipeline.value.code == "WRONGTYPE"
