"""Requests between computers: a per-computer inbox stream, replies on per-request lists.

Protocol (Redis keys, built in :mod:`.keys`):

- ``tb:inbox:<computer>``: a stream (trimmed to about 10,000 entries) read through the consumer
  group ``tb`` by the computer's daemon, as consumer ``<computer>``. Entry fields: ``id`` (the
  request id), ``from`` (the requesting computer), ``session`` (the session it concerns, or
  empty), ``body`` (JSON: an HTTP request for the computer's own API: method, path, query,
  json).
- An entry is acknowledged (``XACK``) only after its reply was stored and sent, so a daemon that
  dies while handling it finds it among its pending entries when it restarts, and handles it
  then (at-least-once). Handling is idempotent by request id: the reply is kept under
  ``tb:done:<computer>:<id>`` for an hour and re-sent instead of handling the request twice.
- Requests for one session are handled in order; others concurrently (at most 16 at a time).
- ``tb:reply:<requester>:<id>``: a list the reply is pushed to (expires after 60 s); the
  requester waits on it with ``BLPOP``, bounded by the request's own limit.

Every message is signed (:mod:`._seal`) with a mesh secret; without one the same shape is
checked. A request is ``{id, from, session, time, body, sig}`` signed as kind ``request`` from
``from`` to the inbox's computer, over its id, time, session and body. A reply is JSON
``{from, time, sig, reply}`` signed as kind ``reply`` from the computer asked to the requester,
over the request id. The idempotency record ``tb:done:...`` is the same envelope (kind ``done``,
from and to the handler) so that nobody can plant a reply there.

Replay: a request older (or newer) than the accepted skew is refused as stale; within the skew
the receiver remembers, in its own session store (not in Redis, where anyone can delete a
record), every request id it took on. An id seen before is answered from its idempotency record
if that is genuine, else refused: it never runs twice.

What fails verification or does not parse is acknowledged, dropped, counted and logged (see
:class:`._seal.Drops`); a reply that does not verify is ignored and the requester keeps waiting.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio

from .._backoff import Backoff
from . import keys
from ._redis import Redis
from ._seal import MAX_SKEW, Drops, Rejected, Signer
from .errors import (
    ComputerUnavailableError,
    GroupExistsError,
    NoGroupError,
    RedisUnavailableError,
    UnknownComputerError,
)

__all__ = ["ComputerUnavailableError", "Inbox", "Signer", "UnknownComputerError", "reply_body", "request"]

log = logging.getLogger(__name__)

GROUP = keys.INBOX_GROUP
CONCURRENCY = 16

#: handles one request body, returns the reply (a JSON-able dict)
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def seal_request(
    signer: Signer, *, sender: str, computer: str, request_id: str, session: str, body: str
) -> dict[str, str]:
    """The stream fields of a request from ``sender`` to ``computer``."""
    sent_at, sig = signer.seal("request", sender, computer, request_id, session, body)
    fields = {"id": request_id, "from": sender, "session": session, "time": sent_at, "body": body}
    if sig:
        fields["sig"] = sig
    return fields


def open_request(signer: Signer, computer: str, fields: Mapping[str, str]) -> float:
    """Check a request read from ``computer``'s inbox; its time.

    Raises:
        Rejected: it is not a genuine, fresh request for ``computer``.
    """
    parts = [fields.get(name) for name in ("id", "from", "session", "body")]
    if not all(isinstance(part, str) for part in parts) or not parts[0] or not parts[1]:
        raise Rejected("malformed", "a field is missing")
    request_id, sender, session, body = (str(part) for part in parts)
    return signer.check(fields, "request", sender, computer, request_id, session, body)


def seal_reply(signer: Signer, kind: str, sender: str, target: str, request_id: str, reply: str) -> str:
    """A reply (kind ``reply``) or idempotency record (kind ``done``), as stored in Redis."""
    sent_at, sig = signer.seal(kind, sender, target, request_id, reply)
    return json.dumps({"from": sender, "time": sent_at, "sig": sig, "reply": reply})


def open_reply(signer: Signer, kind: str, sender: str, target: str, request_id: str, raw: object) -> str:
    """The reply inside what :func:`seal_reply` made.

    Raises:
        Rejected: it is not genuine, not from ``sender``, or (a reply) stale.
    """
    try:
        wrapped = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        wrapped = None
    if not isinstance(wrapped, dict) or not isinstance(wrapped.get("reply"), str):
        raise Rejected("malformed", "not a sealed reply")
    if wrapped.get("from") != sender:
        raise Rejected("bad_signature", f"from {str(wrapped.get('from'))!r}, not {sender!r}")
    fields = {k: str(wrapped[k]) for k in ("time", "sig") if k in wrapped}
    signer.check(fields, kind, sender, target, request_id, wrapped["reply"], fresh=kind == "reply")
    return str(wrapped["reply"])


def _reply_dict(reply: str) -> dict[str, Any]:
    """A reply as the API expects it: a dict with an integer status.

    Raises:
        Rejected: anything else.
    """
    try:
        value = json.loads(reply)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("status"), int):
        raise Rejected("malformed", "a reply without a status")
    return value


def reply_body(reply: dict[str, Any]) -> bytes:
    """A reply's body: ``body_b64`` (a response of the remote API) or ``body`` (a failure the
    remote inbox made itself: handler error, duplicate request).

    Raises:
        ValueError: ``body_b64`` is not base64.
    """
    if "body_b64" in reply:
        return base64.b64decode(str(reply["body_b64"]), validate=True)
    return str(reply.get("body", "")).encode()


async def request(
    redis: Redis,
    *,
    sender: str,
    computer: str,
    body: dict[str, Any],
    session: str = "",
    limit: float = 15.0,
    signer: Signer | None = None,
    drops: Drops | None = None,
) -> dict[str, Any]:
    """Send ``body`` to ``computer``'s inbox and wait at most ``limit`` seconds for its reply.
    A reply that does not verify (forged, for another request, from another computer) or does
    not parse is dropped (counted in ``drops``) and the wait goes on.

    Raises:
        UnknownComputerError: the computer never joined the mesh.
        ComputerUnavailableError: it is offline (no heartbeat), or silent past ``limit``.
        RedisUnavailableError: Redis cannot be reached.
    """
    known, online = await redis.pipeline(
        [("HEXISTS", keys.REGISTRY, computer), ("EXISTS", keys.heartbeat(computer))]
    )
    if not known:
        raise UnknownComputerError(computer)
    if not online:
        raise ComputerUnavailableError(f"computer {computer!r} is offline (no heartbeat)")
    request_id = uuid.uuid4().hex
    reply_key = keys.reply(sender, request_id)
    signer = signer or Signer(None)
    drops = drops or Drops()
    fields = seal_request(
        signer,
        sender=sender,
        computer=computer,
        request_id=request_id,
        session=session,
        body=json.dumps(body),
    )
    await redis.call("XADD", keys.inbox(computer), "MAXLEN", "~", keys.INBOX_MAXLEN, "*", *_flatten(fields))
    with trio.move_on_after(limit):
        while True:
            popped = await redis.blocking_call("BLPOP", reply_key, max(1, int(limit) + 1))
            if not popped:
                break
            try:
                reply = _reply_dict(open_reply(signer, "reply", computer, sender, request_id, popped[1]))
            except Rejected as exc:
                drops.drop("reply", exc.reason, f"to request {request_id} (from {computer!r}): {exc}")
                continue
            await redis.call("DEL", reply_key)
            return reply
    raise ComputerUnavailableError(f"computer {computer!r} did not answer within {limit:g} s")


def _flatten(fields: dict[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


class Memory(Protocol):
    """Where the inbox remembers the requests it took on (the session store, in the daemon)."""

    async def remember(self, key: str, *, expires_at: float, now: float) -> bool: ...


class Inbox:
    """Serves the requests addressed to one computer (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        computer: str,
        handler: Handler,
        memory: Memory,
        signer: Signer | None = None,
        drops: Drops | None = None,
    ) -> None:
        self.redis = redis
        self.signer = signer or Signer(None)
        self.memory = memory
        #: requests refused (bad signature, stale, replayed, malformed), by entry and reason
        self.drops = drops or Drops()
        self.computer = computer
        self.handler = handler
        self._queues: dict[str, collections.deque[tuple[str, dict[str, str]]]] = {}
        self._limiter = trio.CapacityLimiter(CONCURRENCY)
        #: requests handled since start (a re-sent reply counts too)
        self.handled = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and handle requests until cancelled. Owns one task per session being served.

        Survives Redis going away: it reconnects here, with a backoff that resets after a
        success, re-creates its consumer group if Redis lost it, and re-reads what it had not
        acknowledged (handling is idempotent).
        """
        stream = keys.inbox(self.computer)
        backoff = Backoff(0.1, 5.0)
        started = False
        async with trio.open_nursery() as nursery:  # handlers outlive a reconnect
            while True:
                try:
                    await self._ensure_group(stream)
                    await self._read_pending(nursery, stream)
                    if not started:
                        task_status.started()
                        started = True
                    backoff.reset()
                    while True:
                        reply = await self.redis.blocking_call(
                            "XREADGROUP", "GROUP", GROUP, self.computer, "COUNT", 64, "BLOCK", 2000,
                            "STREAMS", stream, ">",
                        )  # fmt: skip
                        for _, entries in reply or []:
                            for entry_id, fields in entries:
                                self._enqueue(nursery, entry_id, fields)
                except RedisUnavailableError as exc:
                    delay = backoff.next()
                    log.warning("inbox: Redis unavailable, retrying in %.1f s: %s", delay, exc)
                    await trio.sleep(delay)
                except NoGroupError:
                    log.warning("inbox: the consumer group was lost (Redis restarted empty?); re-creating it")

    async def _ensure_group(self, stream: str) -> None:
        with contextlib.suppress(GroupExistsError):
            await self.redis.call("XGROUP", "CREATE", stream, GROUP, "0", "MKSTREAM")

    async def _read_pending(self, nursery: trio.Nursery, stream: str) -> None:
        """What was delivered to us before but never acknowledged (we died, or Redis did,
        while handling it)."""
        after = "0"
        while True:
            reply = await self.redis.blocking_call(
                "XREADGROUP", "GROUP", GROUP, self.computer, "COUNT", 64, "STREAMS", stream, after
            )
            entries = reply[0][1] if reply else []
            if not entries:
                return
            for entry_id, fields in entries:
                after = entry_id
                if fields:  # a pending entry trimmed away has no fields left
                    self._enqueue(nursery, entry_id, fields)
                else:
                    await self.redis.call("XACK", stream, GROUP, entry_id)

    def _enqueue(self, nursery: trio.Nursery, entry_id: str, fields: dict[str, str]) -> None:
        # One queue per session keeps its requests in order; others run side by side.
        key = fields.get("session") or fields.get("id") or entry_id
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            nursery.start_soon(self._drain, key, queue)
        queue.append((entry_id, fields))

    async def _drain(self, key: str, queue: collections.deque[tuple[str, dict[str, str]]]) -> None:
        try:
            while queue:
                entry_id, fields = queue[0]
                async with self._limiter:
                    try:
                        await self._handle(entry_id, fields)
                    except RedisUnavailableError as exc:
                        # Unacknowledged: read again (and answered from the idempotency record
                        # if it was handled) once Redis is back.
                        log.warning("inbox: could not answer %s: %s", entry_id, exc)
                queue.popleft()
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]

    async def _handle(self, entry_id: str, fields: dict[str, str]) -> None:
        stream = keys.inbox(self.computer)
        request_id, sender = str(fields.get("id", entry_id)), str(fields.get("from", ""))
        try:
            sent_at = open_request(self.signer, self.computer, fields)
        except Rejected as exc:
            self.drops.drop(
                "request", exc.reason, f"refused request {request_id!r} claiming to be from {sender!r}"
            )
            await self.redis.call("XACK", stream, GROUP, entry_id)
            return
        done_key = keys.done(self.computer, request_id)
        reply: str | None = None
        stored = await self.redis.call("GET", done_key)
        if stored is not None:
            try:
                reply = open_reply(self.signer, "done", self.computer, self.computer, request_id, stored)
            except Rejected as exc:
                self.drops.drop("done", exc.reason, f"the idempotency record of request {request_id!r}")
        # Remembered before it runs (and after the read above: a Redis outage there leaves the
        # request to be read again, not half-remembered), until it is stale by our clock (its
        # own time or ours, whichever is later): past that, the skew check refuses it.
        now = time.time()
        first = await self.memory.remember(
            f"{sender}\x1f{request_id}", expires_at=max(now, sent_at) + MAX_SKEW, now=now
        )
        if reply is not None:
            log.info("request %r was handled before: re-sending its reply", request_id)
        elif not first:
            # Handled before (we remember it) and its record is gone or forged: a replay, or
            # our own crash mid-request. Either way it must not run twice.
            self.drops.drop("request", "replay", f"request {request_id!r} from {sender!r} was handled before")
            reply = json.dumps(
                _failure(409, "duplicate_request", f"request {request_id} was handled before; not run again")
            )
        else:
            try:
                body = json.loads(fields["body"])
                if not isinstance(body, dict):
                    raise TypeError("the body is not an object")
                result = await self.handler(body)
            except Exception as exc:
                # Handler errors come back as errors, never as silence.
                log.error("request %r from %r failed", request_id, sender, exc_info=exc)  # noqa: TRY400
                result = _failure(500, "remote_failure", f"computer {self.computer!r} failed: {exc}")
            reply = json.dumps(result)
            record = seal_reply(self.signer, "done", self.computer, self.computer, request_id, reply)
            await self.redis.call("SET", done_key, record, "EX", keys.DONE_TTL)
        reply_key = keys.reply(sender, request_id)
        await self.redis.pipeline(
            [
                (
                    "RPUSH",
                    reply_key,
                    seal_reply(self.signer, "reply", self.computer, sender, request_id, reply),
                ),
                ("EXPIRE", reply_key, keys.REPLY_TTL),
                ("XACK", stream, GROUP, entry_id),
            ]
        )
        self.handled += 1


def _failure(status: int, code: str, message: str) -> dict[str, Any]:
    body = json.dumps({"error": {"code": code, "message": message}})
    return {"status": status, "content_type": "application/json", "headers": {}, "body": body}
