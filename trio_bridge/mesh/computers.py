"""Computers of a mesh: each daemon's heartbeat, its claim on its name, and discovery.

Redis keys:

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

The output relay and the lifecycle events are signed too, each entry bound to the stream it is
written to (so it cannot be copied to another computer's or session's stream): relay entries
``{offset, data, time, sig}`` (kind ``output``, id the offset) and ``{end, time, sig}`` (kind
``end``), events ``{kind, session, time, sig}`` (id the session's id).
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import logging
import math
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any

import attrs
import trio

from .._version import __version__
from ..config import Settings
from ..sessions import SessionManager, SessionState
from ._redis import Redis, RedisUnavailableError, open_redis, scan_keys
from ._seal import MAX_SKEW, Drops, Rejected, Signer

__all__ = ["API_CAPABILITIES", "Computer", "DuplicateComputerError", "EventStreams", "Mesh", "open_mesh"]

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


def _parse(raw: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def canonical(value: Mapping[str, Any]) -> str:
    """The signed form of a heartbeat: its JSON without ``sig``, keys sorted, no spaces."""
    return json.dumps({k: v for k, v in value.items() if k != "sig"}, sort_keys=True, separators=(",", ":"))


def seal_heartbeat(signer: Signer, value: dict[str, Any]) -> str:
    """The heartbeat as written to Redis (with ``sig`` when there is a secret)."""
    sig = signer.mac(
        "heartbeat", value["name"], REGISTRY, value["instance"], repr(value["time"]), canonical(value)
    )
    return json.dumps({**value, "sig": sig} if sig else value)


def open_heartbeat(signer: Signer, raw: object, name: str, online: bool, now: float) -> Computer:
    """The computer a heartbeat read under ``name`` describes.

    Raises:
        Rejected: it does not parse, is not genuine, or names another computer.
    """
    value = _parse(raw if isinstance(raw, str) else None)
    if value is None:
        raise Rejected("malformed", "not a JSON object")
    if value.get("name") != name or not _NAME.match(name):
        raise Rejected("malformed", f"the heartbeat of {name!r} names {str(value.get('name'))[:80]!r}")
    sent_at = _number(value.get("time"))
    fields = {"time": repr(value.get("time")), "sig": str(value.get("sig", ""))}
    signer.check(
        fields, "heartbeat", name, REGISTRY, str(value.get("instance")), canonical(value), fresh=False
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
        return KEY_PREFIX + self.name

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
                "EVAL", _CLAIM, 2, self.key, REGISTRY, value, self.instance, ttl_ms, self.name
            )
            if holder is None:
                self._last_value = value
                return
            other = _parse(holder) or {}
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
        async with aclosing(scan_keys(self.redis, KEY_PREFIX + "*")) as keys:
            names = [key async for key in keys]
        commands: list[tuple[Any, ...]] = [("HGETALL", REGISTRY)]
        if names:
            commands.append(("MGET", *names))
        replies = await self.redis.pipeline(commands)
        now = time.time()
        found: dict[str, Computer] = {}
        registry = replies[0] if isinstance(replies[0], dict) else {}
        values = replies[1] if names else []
        heartbeats = [
            (key.removeprefix(KEY_PREFIX), raw, True) for key, raw in zip(names, values, strict=True)
        ]
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
        from .rpc import request

        return await request(
            self.redis, sender=self.name, computer=computer, body=body, session=session, limit=limit,
            signer=self.signer, drops=self.drops,
        )  # fmt: skip

    async def serve_inbox(
        self, handler: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Handle requests addressed to this computer until cancelled (see :class:`rpc.Inbox`)."""
        from .rpc import Inbox

        # The store remembers the requests taken on: replay protection that survives a restart
        # and that nobody with access to Redis can erase.
        inbox = Inbox(self.redis, self.name, handler, self._manager.store, self.signer, self.drops)
        await inbox.serve(task_status=task_status)

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
                        data = base64.b64encode(item.data).decode()
                        sent_at, sig = self.signer.seal("output", self.name, key, str(item.offset), data)
                        fields = ("offset", item.offset, "data", data, "time", sent_at, "sig", sig)
                        await self._retrying(("XADD", key, "MAXLEN", "~", RELAY_MAXLEN, "*", *fields))
                        end = item.offset + len(item.data)
                sent_at, sig = self.signer.seal("end", self.name, key, str(end))
                await self._retrying(
                    ("XADD", key, "MAXLEN", "~", RELAY_MAXLEN, "*", "end", end, "time", sent_at, "sig", sig)
                )
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
                    key, kind = events_key(self.name), str(event.kind)
                    sent_at, sig = self.signer.seal(kind, self.name, key, event.record.id, record)
                    await self._retrying(
                        ("XADD", key, "MAXLEN", "~", EVENTS_MAXLEN, "*",
                         "kind", kind, "session", record, "time", sent_at, "sig", sig)
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
        if not mesh.signed:
            log.warning(
                "the mesh at %s has no mesh_secret: anyone who can write to this Redis can run "
                "commands here (set the same --mesh-secret on every computer)",
                redis.url,
            )
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


def open_relay_entry(
    signer: Signer, computer: str, session_id: str, fields: Mapping[str, str]
) -> tuple[int, bytes] | int:
    """A relay entry read from ``tb:out:<computer>:<session>``: ``(offset, data)``, or the end
    offset (an int) for the last entry. Not checked for staleness: bytes are placed by offset,
    and those of one session at one offset never change, so a replayed entry adds nothing.

    Raises:
        Rejected: it does not parse or is not genuine.
    """
    key = relay_key(computer, session_id)
    try:
        if "end" in fields:
            end = int(fields["end"])
            signer.check(fields, "end", computer, key, str(end), fresh=False)
            if end < 0:
                raise Rejected("malformed", "a negative end")
            return end
        offset, data = int(fields["offset"]), str(fields["data"])
        signer.check(fields, "output", computer, key, str(offset), data, fresh=False)
        if offset < 0:
            raise Rejected("malformed", "a negative offset")
        return offset, base64.b64decode(data, validate=True)
    except (KeyError, ValueError, TypeError, binascii.Error) as exc:
        raise Rejected("malformed", type(exc).__name__) from None


def open_event(signer: Signer, computer: str, fields: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """A lifecycle event read from ``tb:events:<computer>``: its kind and session record.

    Raises:
        Rejected: it does not parse, is not genuine, is stale, or concerns another computer.
    """
    kind, record = fields.get("kind"), fields.get("session")
    if not isinstance(kind, str) or not re.fullmatch(r"[a-z_]{1,32}", kind) or not isinstance(record, str):
        raise Rejected("malformed", "no kind or session")
    session = _parse(record)
    if session is None or not isinstance(session.get("id"), str) or session.get("computer") != computer:
        raise Rejected("malformed", "not a session record of this computer")
    signer.check(fields, kind, computer, events_key(computer), session["id"], record)
    return kind, session


#: event signatures a reader remembers, to drop a genuine event replayed within the skew
_RECENT_EVENTS = 4096


@attrs.define
class EventStreams:
    """Other computers' lifecycle event streams (``tb:events:<computer>``), read from a fixed
    "now": each entry verified with :func:`open_event`, one seen before by this reader (a
    replay within the skew) dropped, and what fails counted in the mesh's drops. One per
    reader (an SSE response, the Telegram bot); its owner decides how to wait when Redis is
    away (:meth:`read` raises)."""

    mesh: Mesh
    _last: dict[str, str] = attrs.field(factory=dict)  # stream -> the last entry id read
    _owner: dict[str, str] = attrs.field(factory=dict)  # stream -> its computer
    _recent: set[tuple[str, str]] = attrs.field(factory=set)
    _order: collections.deque[tuple[str, str]] = attrs.field(factory=collections.deque)

    @property
    def following(self) -> bool:
        return bool(self._last)

    async def follow(self, names: Iterable[str]) -> None:
        """Also read these computers' streams, from their current last entry (not ``$``, which
        would skip what arrives between two reads).

        Raises:
            RedisUnavailableError
        """
        new = [name for name in names if events_key(name) not in self._last]
        if not new:
            return
        tails = await self.mesh.redis.pipeline(
            [("XREVRANGE", events_key(name), "+", "-", "COUNT", 1) for name in new]
        )
        for name, tail in zip(new, tails, strict=True):
            self._last[events_key(name)] = tail[0][0] if tail else "0-0"
            self._owner[events_key(name)] = name

    async def read(self, block: float) -> list[tuple[str, str, dict[str, Any]]]:
        """The next genuine events, as (computer, kind, session record); waits up to ``block``
        seconds for some.

        Raises:
            RedisUnavailableError
        """
        streams = list(self._last)
        reply = await self.mesh.redis.blocking_call(
            "XREAD", "COUNT", 64, "BLOCK", max(1, int(block * 1000)), "STREAMS", *streams,
            *(self._last[key] for key in streams),
        )  # fmt: skip
        events = []
        for key, entries in reply or []:
            for entry_id, fields in entries:
                self._last[key] = entry_id
                try:
                    kind, session = open_event(self.mesh.signer, self._owner[key], fields)
                    if (seen := (key, fields.get("sig") or entry_id)) in self._recent:
                        raise Rejected("replay", "seen before by this reader")
                except Rejected as exc:
                    self.mesh.drops.drop("event", exc.reason, f"{key} entry {entry_id}: {exc}")
                    continue
                self._recent.add(seen)
                self._order.append(seen)
                if len(self._order) > _RECENT_EVENTS:
                    self._recent.discard(self._order.popleft())
                events.append((self._owner[key], kind, session))
        return events
