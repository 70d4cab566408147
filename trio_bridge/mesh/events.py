"""Session lifecycle events between computers: each daemon writes its own stream
``tb:events:<computer>`` (:meth:`.Mesh.serve_events`); :class:`EventStreams` reads other
computers' streams, for the events SSE and the Telegram bot.

Entries are ``{kind, session, time, sig}``: ``session`` is the session's record (JSON, with its
``computer``), signed as kind ``kind`` from the computer, bound to its stream and the session's id
(so an entry cannot be copied to another computer's stream).
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from . import keys
from ._seal import Rejected, Signer

if TYPE_CHECKING:
    from .computers import Mesh

__all__ = ["EventStreams", "json_object", "open_event"]


def json_object(raw: str | None) -> dict[str, Any] | None:
    """``raw`` as a JSON object; None if it is missing, not JSON or not an object."""
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def open_event(signer: Signer, computer: str, fields: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """A lifecycle event read from ``tb:events:<computer>``: its kind and session record.

    Raises:
        Rejected: it does not parse, is not genuine, is stale, or concerns another computer.
    """
    kind, record = fields.get("kind"), fields.get("session")
    if not isinstance(kind, str) or not re.fullmatch(r"[a-z_]{1,32}", kind) or not isinstance(record, str):
        raise Rejected("malformed", "no kind or session")
    session = json_object(record)
    if session is None or not isinstance(session.get("id"), str) or session.get("computer") != computer:
        raise Rejected("malformed", "not a session record of this computer")
    signer.check(fields, kind, computer, keys.events(computer), session["id"], record)
    return kind, session


#: event signatures a reader remembers, to drop a genuine event replayed within the skew
_RECENT_EVENTS = 4096


@attrs.define
class EventStreams:
    """Other computers' lifecycle event streams (``tb:events:<computer>``), read from a fixed
    "now" (the first :meth:`follow`): each entry verified with :func:`open_event`, one seen
    before by this reader (a replay within the skew) dropped, and what fails counted in the
    mesh's drops. A computer followed later (it joined after "now") is read from "now" too, so
    what it did before its owner saw it join is not lost. One per reader (an SSE response, the
    Telegram bot); its owner decides how to wait when Redis is away (:meth:`read` raises)."""

    mesh: Mesh
    _last: dict[str, str] = attrs.field(factory=dict)  # stream -> the last entry id read
    _owner: dict[str, str] = attrs.field(factory=dict)  # stream -> its computer
    _recent: set[tuple[str, str]] = attrs.field(factory=set)
    _order: collections.deque[tuple[str, str]] = attrs.field(factory=collections.deque)
    #: "now" as a stream entry id (Redis's clock, which numbers the entries): None until the
    #: first follow
    _since: str | None = None

    @property
    def following(self) -> bool:
        return bool(self._last)

    async def follow(self, names: Iterable[str]) -> None:
        """Also read these computers' streams: on the first call from their current last entry
        (not ``$``, which would skip what arrives between two reads), later from that "now".

        Raises:
            RedisUnavailableError
        """
        new = [name for name in names if keys.events(name) not in self._last]
        if self._since is None:
            *tails, (seconds, micros) = await self.mesh.redis.pipeline(
                [*(("XREVRANGE", keys.events(name), "+", "-", "COUNT", 1) for name in new), ("TIME",)]
            )
            self._since = f"{int(seconds) * 1000 + int(micros) // 1000}-0"
            starts = [tail[0][0] if tail else "0-0" for tail in tails]
        else:
            # (a computer that joined since: its entries from "now" on; XREAD reads after the id)
            starts = [self._since] * len(new)
        for name, start in zip(new, starts, strict=True):
            self._last[keys.events(name)] = start
            self._owner[keys.events(name)] = name

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
