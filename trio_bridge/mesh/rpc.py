"""Requests between computers: a per-computer inbox stream, replies on per-request lists.

Protocol (Redis keys):

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

Trust: anyone who can write to the Redis can ask a computer to run commands. With a mesh secret,
every request carries ``sig`` = HMAC-SHA256(secret, id, from, session, time, body) and every reply
is ``{"sig", "reply"}`` signed over the request id and the reply; unsigned, forged or stale
(more than 5 minutes off) requests are refused and logged, forged replies ignored.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._redis import Redis, RedisUnavailableError

__all__ = ["ComputerUnavailableError", "Inbox", "Signer", "UnknownComputerError", "request"]

log = logging.getLogger(__name__)

GROUP = "tb"
INBOX_MAXLEN = 10_000
DONE_TTL = 3600
REPLY_TTL = 60
CONCURRENCY = 16

#: handles one request body, returns the reply (a JSON-able dict)
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class UnknownComputerError(LookupError):
    """No computer of that name ever joined the mesh."""


class ComputerUnavailableError(Exception):
    """The computer is offline, or did not answer within the limit (the message says which)."""


#: a signed request older (or newer) than this is refused: a replay cannot outlive the
#: idempotency record
MAX_SKEW = 300.0


class Signer:
    """Signs and checks mesh messages with the shared secret (or does nothing without one)."""

    def __init__(self, secret: str | None) -> None:
        self._key = secret.encode() if secret else None

    def _mac(self, *parts: str) -> str:
        assert self._key is not None
        return hmac.new(self._key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()

    def sign_request(self, fields: dict[str, Any]) -> None:
        if self._key is not None:
            fields["sig"] = self._mac(*(str(fields[k]) for k in ("id", "from", "session", "time", "body")))

    def check_request(self, fields: dict[str, str]) -> str | None:
        """Why the request must be refused, or None."""
        if self._key is None:
            return None
        try:
            expected = self._mac(*(fields[k] for k in ("id", "from", "session", "time", "body")))
            sent_at = float(fields["time"])
        except (KeyError, ValueError):
            return "unsigned or incomplete"
        if not hmac.compare_digest(expected, fields.get("sig", "")):
            return "bad signature"
        if abs(time.time() - sent_at) > MAX_SKEW:
            return "stale"
        return None

    def wrap_reply(self, request_id: str, reply: str) -> str:
        if self._key is None:
            return reply
        return json.dumps({"sig": self._mac(request_id, reply), "reply": reply})

    def unwrap_reply(self, request_id: str, raw: str) -> str | None:
        """The reply, or None if it is not genuine."""
        if self._key is None:
            return raw
        try:
            wrapped = json.loads(raw)
            reply, sig = str(wrapped["reply"]), str(wrapped["sig"])
        except (ValueError, KeyError, TypeError):
            return None
        return reply if hmac.compare_digest(self._mac(request_id, reply), sig) else None


def inbox_key(computer: str) -> str:
    return f"tb:inbox:{computer}"


async def request(
    redis: Redis,
    *,
    sender: str,
    computer: str,
    body: dict[str, Any],
    session: str = "",
    limit: float = 15.0,
    signer: Signer | None = None,
) -> dict[str, Any]:
    """Send ``body`` to ``computer``'s inbox and wait at most ``limit`` seconds for its reply.

    Raises:
        UnknownComputerError: the computer never joined the mesh.
        ComputerUnavailableError: it is offline (no heartbeat), or silent past ``limit``.
        RedisUnavailableError: Redis cannot be reached.
    """
    known, online = await redis.pipeline(
        [("HEXISTS", "tb:computers", computer), ("EXISTS", f"tb:computer:{computer}")]
    )
    if not known:
        raise UnknownComputerError(computer)
    if not online:
        raise ComputerUnavailableError(f"computer {computer!r} is offline (no heartbeat)")
    request_id = uuid.uuid4().hex
    reply_key = f"tb:reply:{sender}:{request_id}"
    signer = signer or Signer(None)
    fields: dict[str, Any] = {
        "id": request_id,
        "from": sender,
        "session": session,
        "body": json.dumps(body),
        "time": repr(time.time()),
    }
    signer.sign_request(fields)
    await redis.call("XADD", inbox_key(computer), "MAXLEN", "~", INBOX_MAXLEN, "*", *_flatten(fields))
    with trio.move_on_after(limit):
        while True:
            popped = await redis.blocking_call("BLPOP", reply_key, max(1, int(limit) + 1))
            if not popped:
                break
            reply = signer.unwrap_reply(request_id, popped[1])
            if reply is None:
                log.warning("ignored a forged reply to request %s (from %s)", request_id, computer)
                continue
            await redis.call("DEL", reply_key)
            return dict(json.loads(reply))
    raise ComputerUnavailableError(f"computer {computer!r} did not answer within {limit:g} s")


def _flatten(fields: dict[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


class Inbox:
    """Serves the requests addressed to one computer (see the module docstring)."""

    def __init__(self, redis: Redis, computer: str, handler: Handler, signer: Signer | None = None) -> None:
        self.redis = redis
        self.signer = signer or Signer(None)
        #: requests refused for their signature since start
        self.refused = 0
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
        stream = inbox_key(self.computer)
        backoff = 0.1
        started = False
        async with trio.open_nursery() as nursery:  # handlers outlive a reconnect
            while True:
                try:
                    await self._ensure_group(stream)
                    await self._read_pending(nursery, stream)
                    if not started:
                        task_status.started()
                        started = True
                    backoff = 0.1
                    while True:
                        reply = await self.redis.blocking_call(
                            "XREADGROUP", "GROUP", GROUP, self.computer, "COUNT", 64, "BLOCK", 2000,
                            "STREAMS", stream, ">",
                        )  # fmt: skip
                        for _, entries in reply or []:
                            for entry_id, fields in entries:
                                self._enqueue(nursery, entry_id, fields)
                except RedisUnavailableError as exc:
                    log.warning("inbox: Redis unavailable, retrying in %.1f s: %s", backoff, exc)
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                except RuntimeError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    log.warning("inbox: the consumer group was lost (Redis restarted empty?); re-creating it")

    async def _ensure_group(self, stream: str) -> None:
        try:
            await self.redis.call("XGROUP", "CREATE", stream, GROUP, "0", "MKSTREAM")
        except RuntimeError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

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
        request_id, sender = fields.get("id", entry_id), fields.get("from", "")
        problem = self.signer.check_request(fields)
        if problem is not None:
            self.refused += 1
            log.warning("refused request %s claiming to be from %r: %s", request_id, sender, problem)
            await self.redis.call("XACK", inbox_key(self.computer), GROUP, entry_id)
            return
        done_key = f"tb:done:{self.computer}:{request_id}"
        reply = await self.redis.call("GET", done_key)
        if reply is None:
            try:
                body = json.loads(fields.get("body", "{}"))
                result = await self.handler(body)
            except Exception as exc:
                # Handler errors come back as errors, never as silence.
                log.error("request %s from %s failed", request_id, sender, exc_info=exc)  # noqa: TRY400
                result = _failure(500, "remote_failure", f"computer {self.computer!r} failed: {exc}")
            reply = json.dumps(result)
            await self.redis.call("SET", done_key, reply, "EX", DONE_TTL)
        else:
            log.info("request %s was handled before: re-sending its reply", request_id)
        reply_key = f"tb:reply:{sender}:{request_id}"
        await self.redis.pipeline(
            [
                ("RPUSH", reply_key, self.signer.wrap_reply(request_id, reply)),
                ("EXPIRE", reply_key, REPLY_TTL),
                ("XACK", inbox_key(self.computer), GROUP, entry_id),
            ]
        )
        self.handled += 1


def _failure(status: int, code: str, message: str) -> dict[str, Any]:
    body = json.dumps({"error": {"code": code, "message": message}})
    return {"status": status, "content_type": "application/json", "headers": {}, "body": body}
