"""Computers of a mesh: each daemon's heartbeat, its claim on its name, and discovery.

Redis keys:

- ``tb:computer:<name>``: JSON ``{name, version, capabilities, sessions, started_at, time, host,
  pid, instance}``, written every ``heartbeat_interval`` with a TTL of ``heartbeat_ttl``: it
  exists exactly while the computer is online. Written only by the daemon whose ``instance``
  it holds (a Lua script compares and sets), which is how two daemons cannot share a name.
- ``tb:computers``: a hash name -> the last heartbeat, without TTL, so a computer that went
  offline is still listed (with its age) and its sessions show as unreachable, not gone.

Discovery walks ``tb:computer:*`` with :func:`scan_keys` and fetches every value plus the hash
in one pipelined round trip.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import attrs
import trio

from .._version import __version__
from ..config import Settings
from ..sessions import SessionManager, SessionState
from ._redis import Redis, RedisUnavailableError, open_redis, scan_keys

__all__ = ["API_CAPABILITIES", "Computer", "DuplicateComputerError", "Mesh", "open_mesh"]

log = logging.getLogger(__name__)

KEY_PREFIX = "tb:computer:"
#: a session's output relay: entries {offset, data (base64)}, then {end}
RELAY_MAXLEN = 1000
#: seconds a relay runs without a reader renewing it; seconds its stream is kept after the end
RELAY_IDLE = 60.0
RELAY_KEEP = 300


#: entries kept in a computer's lifecycle event stream
EVENTS_MAXLEN = 1000


def events_key(computer: str) -> str:
    """A computer's session lifecycle events: entries {kind, session (JSON record)}."""
    return f"tb:events:{computer}"


def relay_key(computer: str, session_id: str) -> str:
    return f"tb:out:{computer}:{session_id}"


REGISTRY = "tb:computers"
#: what this daemon's API can do, announced in its heartbeat
API_CAPABILITIES = ("sessions", "input", "keys", "screen", "output", "wait", "stream", "events")

# KEYS[1] = the heartbeat key, KEYS[2] = the registry hash; ARGV = value, instance, ttl ms, name.
# Sets the heartbeat unless another instance holds it; returns nil, or the holder's value.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, holder = pcall(cjson.decode, current)
  if not ok or holder.instance ~= ARGV[2] then return current end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[1])
return false
"""
# Deletes the heartbeat key only if it holds ``expected`` (ARGV[1]).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class DuplicateComputerError(Exception):
    """Another daemon runs under this computer name (one line, saying where)."""


@attrs.frozen
class Computer:
    name: str
    online: bool
    #: seconds since its last heartbeat
    age: float
    version: str
    capabilities: tuple[str, ...]
    sessions: int
    started_at: float
    host: str


def default_name() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def _computer(value: dict[str, Any], online: bool, now: float) -> Computer:
    return Computer(
        name=str(value.get("name", "?")), online=online,
        age=round(max(0.0, now - float(value.get("time", 0))), 3),
        version=str(value.get("version", "?")), capabilities=tuple(value.get("capabilities", ())),
        sessions=int(value.get("sessions", 0)), started_at=float(value.get("started_at", 0)),
        host=str(value.get("host", "?")),
    )  # fmt: skip


def _parse(raw: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Mesh:
    """This daemon's membership of the mesh (see the module docstring). Get one from
    :func:`open_mesh`."""

    def __init__(self, redis: Redis, settings: Settings, manager: SessionManager, name: str) -> None:
        self.redis = redis
        self.name = name
        self.instance = uuid.uuid4().hex
        self._settings = settings
        self._manager = manager
        self._started_at = time.time()
        self._last_value: str | None = None
        self._nursery: trio.Nursery | None = None
        self._relays: dict[str, trio.CancelScope] = {}  # session id -> its relay's scope

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.name

    async def _value(self) -> str:
        running = await self._manager.store.all([SessionState.STARTING, SessionState.RUNNING])
        return json.dumps(
            {
                "name": self.name,
                "version": __version__,
                "capabilities": list(API_CAPABILITIES),
                "sessions": len(running),
                "started_at": self._started_at,
                "time": time.time(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "instance": self.instance,
            }
        )

    async def beat(self) -> None:
        """Write the heartbeat (claiming the name).

        Raises:
            DuplicateComputerError: another live daemon holds the name.
            RedisUnavailableError: Redis cannot be reached.
        """
        value = await self._value()
        ttl_ms = int(self._settings.heartbeat_ttl * 1000)
        holder = await self.redis.call(
            "EVAL", _CLAIM, 2, self.key, REGISTRY, value, self.instance, ttl_ms, self.name
        )
        if holder is None:
            self._last_value = value
            return
        other = _parse(holder) or {}
        if other.get("host") == socket.gethostname() and not _alive(other.get("pid")):
            # Ours from before a crash: that daemon is gone, its heartbeat not yet expired.
            log.warning(
                "taking over computer name %r from a dead daemon (pid %s)", self.name, other.get("pid")
            )
            await self.redis.call("EVAL", _RELEASE, 1, self.key, holder)
            await self.beat()
            return
        raise DuplicateComputerError(
            f"computer name {self.name!r} is in use by a running daemon on {other.get('host', '?')} "
            f"(pid {other.get('pid', '?')}); choose another with --computer, or stop that one"
        )

    async def release(self) -> None:
        """Remove our heartbeat (we go offline at once; the registry remembers us)."""
        if self._last_value is not None:
            # Only what we last wrote: the Lua compare leaves another daemon's claim alone.
            value = self._last_value
            self._last_value = None
            await self.redis.call("EVAL", _RELEASE, 1, self.key, value)

    async def computers(self) -> list[Computer]:
        """Every computer the mesh knows, online ones first, by name."""
        async with aclosing(scan_keys(self.redis, KEY_PREFIX + "*")) as keys:
            names = [key async for key in keys]
        commands: list[tuple[Any, ...]] = [("HGETALL", REGISTRY)]
        if names:
            commands.append(("MGET", *names))
        replies = await self.redis.pipeline(commands)
        now = time.time()
        online = {}
        for raw in replies[1] if names else []:
            value = _parse(raw)
            if value is not None:
                online[str(value.get("name"))] = _computer(value, True, now)
        found = dict(online)
        for name, raw in (replies[0] or {}).items():
            value = _parse(raw)
            if name not in found and value is not None:
                found[name] = _computer(value, False, now)
        return sorted(found.values(), key=lambda c: (not c.online, c.name))

    async def request(
        self, computer: str, body: dict[str, Any], *, session: str = "", limit: float = 15.0
    ) -> dict[str, Any]:
        """Have ``computer`` handle ``body``; its reply (see :func:`trio_bridge.mesh.rpc.request`)."""
        from .rpc import Signer, request

        return await request(
            self.redis, sender=self.name, computer=computer, body=body, session=session, limit=limit,
            signer=Signer(self._settings.mesh_secret),
        )  # fmt: skip

    async def serve_inbox(
        self, handler: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Handle requests addressed to this computer until cancelled (see :class:`rpc.Inbox`)."""
        from .rpc import Inbox, Signer

        await Inbox(self.redis, self.name, handler, Signer(self._settings.mesh_secret)).serve(
            task_status=task_status
        )

    # -- output relay ----------------------------------------------------------------

    def ensure_relay(self, session_id: str, offset: int) -> None:
        """Relay the session's output from ``offset`` into ``tb:out:<computer>:<session>`` (if no
        relay runs yet), for another RELAY_IDLE seconds: readers renew it while they read.

        Raises:
            UnknownSessionError: no such session.
        """
        feed = self._manager.feed(session_id)  # raises for an unknown session
        scope = self._relays.get(session_id)
        if scope is not None:
            scope.deadline = trio.current_time() + RELAY_IDLE
            return
        assert self._nursery is not None
        scope = trio.CancelScope(deadline=trio.current_time() + RELAY_IDLE)
        self._relays[session_id] = scope
        self._nursery.start_soon(self._relay, session_id, feed, offset, scope)

    async def _relay(self, session_id: str, feed: Any, start: int, scope: trio.CancelScope) -> None:
        from ..output import Chunk

        key = relay_key(self.name, session_id)
        end = start
        try:
            with scope:
                async with aclosing(feed.follow(start)) as chunks:
                    async for item in chunks:
                        if not isinstance(item, Chunk):
                            continue  # dropped by retention: readers find out by offset
                        fields = ("offset", item.offset, "data", base64.b64encode(item.data).decode())
                        await self._retrying(("XADD", key, "MAXLEN", "~", RELAY_MAXLEN, "*", *fields))
                        end = item.offset + len(item.data)
                await self._retrying(("XADD", key, "MAXLEN", "~", RELAY_MAXLEN, "*", "end", end))
                await self._retrying(("EXPIRE", key, RELAY_KEEP))
        finally:
            self._relays.pop(session_id, None)

    async def _retrying(self, command: tuple[Any, ...]) -> None:
        """A relay write survives Redis going away (readers fill any gap by offset)."""
        backoff = 0.1
        while True:
            try:
                await self.redis.call(*command)
                return
            except RedisUnavailableError:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def serve_events(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay this computer's session lifecycle events into ``tb:events:<computer>``."""
        task_status.started()
        while True:
            subscription = self._manager.subscribe()
            async with subscription:
                async for event in subscription:
                    record = json.dumps({**attrs.asdict(event.record), "computer": self.name})
                    await self._retrying(
                        ("XADD", events_key(self.name), "MAXLEN", "~", EVENTS_MAXLEN, "*",
                         "kind", str(event.kind), "session", record)
                    )  # fmt: skip
            # The manager restarted (or cut us off for being slow): subscribe again.
            await trio.sleep(0.5)

    async def serve_heartbeat(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Beat every ``heartbeat_interval`` until cancelled. Redis outages are logged and
        retried with a backoff that resets after a success; they never end the daemon."""
        task_status.started()
        backoff = 0.1
        while True:
            await trio.sleep(self._settings.heartbeat_interval if backoff == 0.1 else backoff)
            try:
                await self.beat()
                backoff = 0.1
            except RedisUnavailableError as exc:
                backoff = min(max(backoff * 2, 0.2), self._settings.heartbeat_interval)
                log.warning("heartbeat failed (retrying in %.1f s): %s", backoff, exc)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@asynccontextmanager
async def open_mesh(settings: Settings, manager: SessionManager) -> AsyncIterator[Mesh]:
    """Join the mesh at ``settings.redis`` as ``settings.computer``; leave it on exit.

    Owns the Redis client and the heartbeat task.

    Raises:
        DuplicateComputerError: a live daemon already uses this computer name.
        RedisUnavailableError: Redis cannot be reached at start-up.
    """
    assert settings.redis is not None
    async with open_redis(settings.redis) as redis:
        mesh = Mesh(redis, settings, manager, settings.computer or default_name())
        await mesh.beat()
        try:
            async with trio.open_nursery() as nursery:
                mesh._nursery = nursery
                await nursery.start(mesh.serve_heartbeat)
                await nursery.start(mesh.serve_events)
                log.info("joined the mesh at %s as %r", redis.url, mesh.name)
                yield mesh
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await mesh.release()
                except RedisUnavailableError:
                    pass  # the heartbeat expires by itself
