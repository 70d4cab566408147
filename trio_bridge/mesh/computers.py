"""Computers of a mesh: each daemon's membership (:class:`Mesh`), its heartbeat, its claim on its
name, and discovery.

Redis keys (built in :mod:`.keys`):

- ``tb:computer:<name>``: JSON ``{name, version, capabilities, sessions, started_at, time, host,
  pid, instance}``, written every ``heartbeat_interval`` with a TTL of ``heartbeat_ttl``: it
  exists exactly while the computer is online. Written only by the daemon whose ``instance``
  it holds (a Lua script compares and sets), which is how two daemons cannot share a name.
- ``tb:computers``: a hash name -> the last heartbeat, without TTL, so a computer that went
  offline is still listed (with its age) and its sessions show as unreachable, not gone.

Discovery walks ``tb:computer:*`` with :func:`scan_keys` and fetches every value plus the hash
in one pipelined round trip. Every heartbeat is validated where it is read: with a mesh secret
it carries ``sig`` (kind ``heartbeat``, from its name, over the rest of the value in canonical
JSON); one that does not verify or parse, or whose name differs from its key, is left out of the
listing, counted and logged (never an error for the whole listing).

A member also writes its sessions' lifecycle events (:mod:`.events`) and relays their output to
readers on other computers (:mod:`.relay`); both are signed, each entry bound to its stream.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any

import attrs
import trio

from .._backoff import Backoff
from .._version import __version__
from ..config import Settings, default_computer_name
from ..output import OutputFeed
from ..sessions import SessionManager, SessionState
from . import keys, rpc
from ._redis import Redis, open_redis, scan_keys
from ._seal import MAX_SKEW, Drops, Rejected, Signer
from .errors import DuplicateComputerError, RedisUnavailableError
from .events import EventStreams, json_object, open_event
from .relay import RELAY_IDLE, RelayFeed, open_relay_entry, write_relay

__all__ = [
    "API_CAPABILITIES", "Computer", "DuplicateComputerError", "EventStreams", "Mesh",
    "RelayFeed", "open_event", "open_mesh", "open_relay_entry",
]  # fmt: skip

log = logging.getLogger(__name__)

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


#: a computer's name, as the ``computer`` setting allows it (config.py), checked again where
#: names are read back from Redis
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Rejected("malformed", f"{value!r} is not a number")
    return float(value)


def _text(value: object, limit: int = 256) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise Rejected("malformed", "a field is not a short string")
    return value


def canonical(value: Mapping[str, Any]) -> str:
    """The signed form of a heartbeat: its JSON without ``sig``, keys sorted, no spaces."""
    return json.dumps({k: v for k, v in value.items() if k != "sig"}, sort_keys=True, separators=(",", ":"))


def seal_heartbeat(signer: Signer, value: dict[str, Any]) -> str:
    """The heartbeat as written to Redis (with ``sig`` when there is a secret)."""
    sig = signer.mac(
        "heartbeat", value["name"], keys.REGISTRY, value["instance"], repr(value["time"]), canonical(value)
    )
    return json.dumps({**value, "sig": sig} if sig else value)


def open_heartbeat(signer: Signer, raw: object, name: str, online: bool, now: float) -> Computer:
    """The computer a heartbeat read under ``name`` describes.

    Raises:
        Rejected: it does not parse, is not genuine, or names another computer.
    """
    value = json_object(raw if isinstance(raw, str) else None)
    if value is None:
        raise Rejected("malformed", "not a JSON object")
    if value.get("name") != name or not _NAME.match(name):
        raise Rejected("malformed", f"the heartbeat of {name!r} names {str(value.get('name'))[:80]!r}")
    sent_at = _number(value.get("time"))
    fields = {"time": repr(value.get("time")), "sig": str(value.get("sig", ""))}
    signer.check(
        fields, "heartbeat", name, keys.REGISTRY, str(value.get("instance")), canonical(value), fresh=False
    )
    capabilities = value.get("capabilities", [])
    if not isinstance(capabilities, list) or len(capabilities) > 64:
        raise Rejected("malformed", "capabilities is not a list")
    sessions = value.get("sessions", 0)
    if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 0:
        raise Rejected("malformed", "sessions is not a count")
    return Computer(
        name=name, online=online, age=round(max(0.0, now - sent_at), 3),
        version=_text(value.get("version", "?")),
        capabilities=tuple(_text(c, 64) for c in capabilities), sessions=sessions,
        started_at=_number(value.get("started_at", 0)), host=_text(value.get("host", "?")),
    )  # fmt: skip


class Mesh:
    """This daemon's membership of the mesh (see the module docstring). Get one from
    :func:`open_mesh`; a Mesh made directly can ask and list (:meth:`request`,
    :meth:`computers`) but relays output only inside :meth:`joined`."""

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
        #: signs what we write to Redis, checks what we read
        self.signer = Signer(settings.mesh_secret)
        #: what this daemon's readers dropped (``trio_bridge_mesh_dropped``)
        self.drops = Drops()

    @property
    def signed(self) -> bool:
        """Whether the mesh's messages are signed (a mesh secret is set)."""
        return self.signer.signed

    @property
    def key(self) -> str:
        return keys.heartbeat(self.name)

    async def _value(self) -> str:
        running = await self._manager.store.all([SessionState.STARTING, SessionState.RUNNING])
        return seal_heartbeat(
            self.signer,
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
            },
        )

    async def beat(self) -> None:
        """Write the heartbeat (claiming the name).

        Raises:
            DuplicateComputerError: another live daemon holds the name.
            RedisUnavailableError: Redis cannot be reached.
        """
        for _ in range(3):
            value = await self._value()
            ttl_ms = int(self._settings.heartbeat_ttl * 1000)
            holder = await self.redis.call(
                "EVAL", _CLAIM, 2, self.key, keys.REGISTRY, value, self.instance, ttl_ms, self.name
            )
            if holder is None:
                self._last_value = value
                return
            other = json_object(holder) or {}
            try:
                open_heartbeat(self.signer, holder, self.name, True, time.time())
            except Rejected as exc:
                # Not a daemon of this mesh (forged, or junk): it cannot hold our name.
                self.drops.drop("heartbeat", exc.reason, f"replacing the heartbeat under our name: {exc}")
            else:
                if other.get("host") != socket.gethostname() or _alive(other.get("pid")):
                    break
                # Ours from before a crash: that daemon is gone, its heartbeat not yet expired.
                log.warning(
                    "taking over computer name %r from a dead daemon (pid %s)", self.name, other.get("pid")
                )
            await self.redis.call("EVAL", _RELEASE, 1, self.key, holder)
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
        """Every computer the mesh knows, online ones first, by name. A heartbeat that does not
        verify or parse is left out (counted, logged)."""
        async with aclosing(scan_keys(self.redis, keys.HEARTBEAT_PATTERN)) as found_keys:
            names = [key async for key in found_keys]
        commands: list[tuple[Any, ...]] = [("HGETALL", keys.REGISTRY)]
        if names:
            commands.append(("MGET", *names))
        replies = await self.redis.pipeline(commands)
        now = time.time()
        found: dict[str, Computer] = {}
        registry = replies[0] if isinstance(replies[0], dict) else {}
        values = replies[1] if names else []
        heartbeats = [(keys.heartbeat_owner(key), raw, True) for key, raw in zip(names, values, strict=True)]
        for name, raw, online in [*heartbeats, *((n, raw, False) for n, raw in registry.items())]:
            if name in found or (online and raw is None):  # (expired between SCAN and MGET)
                continue
            try:
                computer = open_heartbeat(self.signer, raw, name, online, now)
                if online and computer.age > MAX_SKEW + self._settings.heartbeat_ttl:
                    # A live key with an old beat: a replayed heartbeat (or a clock far off).
                    computer = attrs.evolve(computer, online=False)
                found[name] = computer
            except Rejected as exc:
                self.drops.drop("heartbeat", exc.reason, f"computer {name[:80]!r} left out: {exc}")
        return sorted(found.values(), key=lambda c: (not c.online, c.name))

    async def request(
        self, computer: str, body: dict[str, Any], *, session: str = "", limit: float = 15.0
    ) -> dict[str, Any]:
        """Have ``computer`` handle ``body``; its reply (see :func:`trio_bridge.mesh.rpc.request`)."""
        return await rpc.request(
            self.redis, sender=self.name, computer=computer, body=body, session=session, limit=limit,
            signer=self.signer, drops=self.drops,
        )  # fmt: skip

    async def serve_inbox(
        self, handler: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Handle requests addressed to this computer until cancelled (see :class:`rpc.Inbox`)."""
        # The store remembers the requests taken on: replay protection that survives a restart
        # and that nobody with access to Redis can erase.
        inbox = rpc.Inbox(self.redis, self.name, handler, self._manager.store, self.signer, self.drops)
        await inbox.serve(task_status=task_status)

    # -- output relay ----------------------------------------------------------------

    def ensure_relay(self, session_id: str, offset: int) -> None:
        """Relay the session's output from ``offset`` into ``tb:out:<computer>:<session>`` (if no
        relay runs yet), for another RELAY_IDLE seconds: readers renew it while they read. The
        relay runs in our nursery (:meth:`joined`).

        Raises:
            UnknownSessionError: no such session.
            RuntimeError: this Mesh has not joined (a Mesh made without :func:`open_mesh`).
        """
        feed = self._manager.feed(session_id)  # raises for an unknown session
        scope = self._relays.get(session_id)
        if scope is not None:
            scope.deadline = trio.current_time() + RELAY_IDLE
            return
        if self._nursery is None:
            raise RuntimeError("this computer relays output only while it has joined the mesh")
        scope = trio.CancelScope(deadline=trio.current_time() + RELAY_IDLE)
        self._relays[session_id] = scope
        self._nursery.start_soon(self._relay, session_id, feed, offset, scope)

    async def _relay(self, session_id: str, feed: OutputFeed, start: int, scope: trio.CancelScope) -> None:
        try:
            with scope:
                await write_relay(self.redis, self.signer, self.name, session_id, feed, start)
        finally:
            self._relays.pop(session_id, None)

    def relay_feed(self, computer: str, session_id: str) -> RelayFeed:
        """The output of ``computer``'s session ``session_id``, as a feed (see :class:`RelayFeed`)."""
        return RelayFeed(self, computer, session_id)

    # -- membership ------------------------------------------------------------------

    async def serve_events(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay this computer's session lifecycle events into ``tb:events:<computer>``."""
        task_status.started()
        key = keys.events(self.name)
        while True:
            subscription = self._manager.subscribe()
            async with subscription:
                async for event in subscription:
                    record = json.dumps({**attrs.asdict(event.record), "computer": self.name})
                    kind = str(event.kind)
                    sent_at, sig = self.signer.seal(kind, self.name, key, event.record.id, record)
                    await self.redis.call_until_done(
                        "XADD", key, "MAXLEN", "~", keys.EVENTS_MAXLEN, "*",
                        "kind", kind, "session", record, "time", sent_at, "sig", sig,
                    )  # fmt: skip
            # The manager restarted (or cut us off for being slow): subscribe again.
            await trio.sleep(0.5)

    async def serve_heartbeat(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Beat every ``heartbeat_interval`` until cancelled. Redis outages are logged and
        retried with a backoff that resets after a success; they never end the daemon."""
        task_status.started()
        interval = self._settings.heartbeat_interval
        backoff = Backoff(min(0.2, interval), interval)
        delay = interval
        while True:
            await trio.sleep(delay)
            try:
                await self.beat()
                backoff.reset()
                delay = interval
            except RedisUnavailableError as exc:
                delay = backoff.next()
                log.warning("heartbeat failed (retrying in %.1f s): %s", delay, exc)

    @asynccontextmanager
    async def joined(self) -> AsyncIterator[Mesh]:
        """Be a member until exit: claim the name (a first heartbeat), then beat, publish the
        sessions' events and run the output relays, all in a nursery owned here; on exit remove
        our heartbeat (shielded, bounded: it would expire anyway).

        Raises:
            DuplicateComputerError: a live daemon already uses this computer name.
            RedisUnavailableError: Redis cannot be reached for the first heartbeat.
        """
        await self.beat()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await nursery.start(self.serve_heartbeat)
                    await nursery.start(self.serve_events)
                    yield self
                finally:
                    self._nursery = None
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await self.release()
                except RedisUnavailableError:
                    pass  # the heartbeat expires by itself


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
    """Join the mesh at ``settings.redis`` as ``settings.computer`` (default: the host name);
    leave it on exit.

    Owns the Redis client (its connections stay usable until exit, also while our caller's
    scope is being cancelled: open it outside the tasks that use it) and the membership
    (:meth:`Mesh.joined`).

    Raises:
        DuplicateComputerError: a live daemon already uses this computer name.
        RedisUnavailableError: Redis cannot be reached at start-up.
    """
    assert settings.redis is not None
    async with open_redis(settings.redis) as redis:
        mesh = Mesh(redis, settings, manager, settings.computer or default_computer_name())
        if not mesh.signed:
            log.warning(
                "the mesh at %s has no mesh_secret: anyone who can write to this Redis can run "
                "commands here (set the same --mesh-secret on every computer)",
                redis.url,
            )
        async with mesh.joined():
            log.info("joined the mesh at %s as %r", redis.url, mesh.name)
            yield mesh
