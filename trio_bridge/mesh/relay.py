"""A session's output between computers: its owner relays it into a Redis stream, and a reader
on another computer follows that stream as a feed like a local one.

- Writer (:func:`write_relay`, run by :meth:`.Mesh.ensure_relay` while readers renew it): copies
  the session's output from an offset into ``tb:out:<computer>:<session>`` (entries
  ``{offset, data (base64), time, sig}``, kind ``output``, id the offset), then ``{end, time,
  sig}`` (kind ``end``) when the session ended, and lets the stream expire ``RELAY_KEEP`` s later.
- Reader (:class:`RelayFeed`): ``follow(start)`` yields :class:`~trio_bridge.output.Chunk` and
  :class:`~trio_bridge.output.Resync` exactly as :meth:`trio_bridge.output.OutputFeed.follow`
  does, and ends when the session has ended and its last byte was yielded. It asks the owner
  to relay (and renews that every ``RELAY_IDLE / 3`` s), reads the stream, and places bytes by
  offset: what it misses (an entry trimmed, Redis restarted empty) it asks the owner for
  (``GET /v1/sessions/{id}/output``), so it yields no gap and no duplicate. A relay entry that
  fails verification or does not parse is dropped and counted (``trio_bridge_mesh_dropped``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._backoff import Backoff
from ..output import Chunk, Resync
from . import keys
from ._redis import Redis
from ._seal import Rejected, Signer
from .errors import ComputerUnavailableError, RedisUnavailableError, RelayFailedError, UnknownComputerError
from .rpc import reply_body

if TYPE_CHECKING:
    from ..output import OutputFeed
    from .computers import Mesh

__all__ = ["RELAY_IDLE", "RelayFeed", "open_relay_entry", "write_relay"]

log = logging.getLogger(__name__)

#: seconds a relay runs without a reader renewing it
RELAY_IDLE = 60.0
#: seconds a request to the owner may take
LIMIT = 15.0
#: bytes asked for at once when filling a gap
_RANGE = 1 << 20
#: how a daemon that predates ``first_offset`` in its 410 body says where its log starts
_DROPPED = re.compile(r"the log starts at (\d+)")
#: what a reader waits out (Redis restarting, the owner briefly unreachable or refusing)
_WAITED_OUT = (RedisUnavailableError, ComputerUnavailableError, UnknownComputerError, RelayFailedError)


async def write_relay(
    redis: Redis, signer: Signer, computer: str, session_id: str, feed: OutputFeed, start: int
) -> None:
    """Relay ``feed`` from ``start`` into the session's relay stream until the session ends
    (then its end entry) or our caller cancels. Redis outages are waited out (readers fill any
    gap by offset); bytes dropped by retention are skipped (readers find out by offset)."""
    key = keys.relay(computer, session_id)
    end = start
    async with aclosing(feed.follow(start)) as chunks:
        async for item in chunks:
            if not isinstance(item, Chunk):
                continue
            data = base64.b64encode(item.data).decode()
            sent_at, sig = signer.seal("output", computer, key, str(item.offset), data)
            fields = ("offset", item.offset, "data", data, "time", sent_at, "sig", sig)
            await redis.call_until_done("XADD", key, "MAXLEN", "~", keys.RELAY_MAXLEN, "*", *fields)
            end = item.offset + len(item.data)
    sent_at, sig = signer.seal("end", computer, key, str(end))
    await redis.call_until_done(
        "XADD", key, "MAXLEN", "~", keys.RELAY_MAXLEN, "*", "end", end, "time", sent_at, "sig", sig
    )
    await redis.call_until_done("EXPIRE", key, keys.RELAY_KEEP)


def open_relay_entry(
    signer: Signer, computer: str, session_id: str, fields: Mapping[str, str]
) -> tuple[int, bytes] | int:
    """A relay entry read from ``tb:out:<computer>:<session>``: ``(offset, data)``, or the end
    offset (an int) for the last entry. Not checked for staleness: bytes are placed by offset,
    and those of one session at one offset never change, so a replayed entry adds nothing.

    Raises:
        Rejected: it does not parse or is not genuine.
    """
    key = keys.relay(computer, session_id)
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


def _first_kept(body: bytes, asked: int) -> int:
    """The first offset the owner still has, from its 410 body: ``error.first_offset``, or (a
    daemon before that field) the number in its message; ``asked`` if neither is there."""
    try:
        error = json.loads(body).get("error", {})
        first = error.get("first_offset")
        if isinstance(first, int) and not isinstance(first, bool) and first >= 0:
            return first
        message = str(error.get("message", ""))
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace")
    found = _DROPPED.search(message)
    return int(found[1]) if found else asked


def _after(item: Chunk | Resync) -> int:
    """The offset a reader is at after ``item``."""
    return item.offset + len(item.data) if isinstance(item, Chunk) else item.offset


@attrs.frozen
class RelayFeed:
    """The output of session ``session_id`` of ``computer`` (another computer of ``mesh``),
    followed through its relay (see the module docstring). Stateless: each :meth:`follow` is
    its own reader."""

    mesh: Mesh
    computer: str
    session_id: str
    #: seconds between two renewals of the relay (it runs ``RELAY_IDLE`` s after each)
    renew_every: float = RELAY_IDLE / 3

    async def follow(self, start: int = 0) -> AsyncGenerator[Chunk | Resync, None]:
        """Chunks from ``start`` on, live, until the session has ended and its last byte was
        yielded; a :class:`Resync` where the owner dropped the bytes asked for. Redis going
        away and the owner being briefly unreachable are waited out (with a backoff); our
        caller's scope bounds the whole. An async generator: iterate it inside
        ``contextlib.aclosing``.
        """
        mesh = self.mesh
        key = keys.relay(self.computer, self.session_id)
        expected = start
        last_id = "0"
        renew_at = -math.inf
        backoff = Backoff(0.1, 2.0)
        while True:
            try:
                if trio.current_time() >= renew_at:
                    await self._renew(expected)
                    renew_at = trio.current_time() + self.renew_every
                reply = await mesh.redis.blocking_call(
                    "XREAD", "COUNT", 64, "BLOCK", 1000, "STREAMS", key, last_id
                )
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        try:
                            entry = open_relay_entry(mesh.signer, self.computer, self.session_id, fields)
                        except Rejected as exc:
                            mesh.drops.drop("output", exc.reason, f"{key} entry {entry_id}: {exc}")
                            entry = None
                        if entry is not None:
                            target = entry if isinstance(entry, int) else entry[0]
                            # Missed entries (trimmed, lost with Redis) come from the owner's log.
                            async with aclosing(self._fill(expected, target)) as filled:
                                async for item in filled:
                                    yield item
                                    expected = _after(item)
                            if isinstance(entry, int):
                                return
                            offset, data = entry
                            if expected < offset:  # the owner could not fill the gap: say so
                                yield Resync(expected, offset)
                                expected = offset
                            if offset + len(data) > expected:  # (else: had it already)
                                yield Chunk(expected, data[expected - offset :])
                                expected = offset + len(data)
                        # Only now: an entry cut short by an outage is read again.
                        last_id = entry_id
                backoff.reset()
            except _WAITED_OUT as exc:
                # Redis restarting, the owner briefly unreachable: keep the reader, retry.
                delay = backoff.next()
                log.info(
                    "relay of %s on %s: %s; retrying in %.1f s", self.session_id, self.computer, exc, delay
                )
                await trio.sleep(delay)
                renew_at = -math.inf

    async def _ask(self, method: str, path: str, **query: object) -> dict[str, Any]:
        return await self.mesh.request(
            self.computer,
            {"method": method, "path": f"/v1/sessions/{self.session_id}{path}",
             "query": {k: str(v) for k, v in query.items()}},
            session=self.session_id, limit=LIMIT,
        )  # fmt: skip

    async def _renew(self, offset: int) -> None:
        """Have the owner relay from ``offset`` (or keep relaying) for another RELAY_IDLE s.

        Raises:
            RelayFailedError: it refused; the errors of :meth:`.Mesh.request`.
        """
        answer = await self._ask("POST", "/relay", offset=offset)
        if int(answer["status"]) != 204:
            raise RelayFailedError(int(answer["status"]), f"the relay was refused ({answer['status']})")

    async def _fill(self, offset: int, target: int) -> AsyncGenerator[Chunk | Resync, None]:
        """The bytes from ``offset`` up to ``target``, from the owner's log (it may end short
        of ``target`` if the owner has no more).

        Raises:
            RelayFailedError: the owner refused; the errors of :meth:`.Mesh.request`.
        """
        while offset < target:
            reply = await self._ask("GET", "/output", offset=offset, limit=_RANGE)
            status = int(reply["status"])
            try:
                body = reply_body(reply)
            except ValueError:
                body = b""
            if status == 410:
                first = _first_kept(body, offset)
                if first <= offset:
                    return  # (nothing to skip to: leave the gap to the caller)
                yield Resync(offset, first)
                offset = first
                continue
            if status != 200:
                raise RelayFailedError(status, f"output range refused ({status}): {body[:200]!r}")
            if not body:
                return
            data = body[: target - offset]
            yield Chunk(offset, data)
            offset += len(data)
