"""Every Redis key of the mesh and what it holds: the wire format, in one place.

Every key string trio-bridge uses is built here (a test checks that no other module writes one).
The names are the protocol between daemons of different versions: change none of them.

==================================  ==========  =====================================================
key                                 type        what it holds (who writes it; how long it lives)
==================================  ==========  =====================================================
``tb:computers``                    hash        computer name -> its last heartbeat (its daemon;
                                                no TTL: an offline computer stays listed)
``tb:computer:<computer>``          string      the computer's heartbeat, JSON (its daemon, by a
                                                compare-and-set on ``instance``; TTL
                                                ``heartbeat_ttl``: it exists while online)
``tb:inbox:<computer>``             stream      requests for the computer (any computer; ~10,000
                                                entries), read through the consumer group ``tb``
``tb:reply:<requester>:<id>``       list        the sealed reply to request ``id`` (the computer
                                                asked; 60 s), popped by the requester
``tb:done:<computer>:<id>``         string      the idempotency record of request ``id`` handled
                                                by ``computer`` (itself; 1 h)
``tb:out:<computer>:<session>``     stream      a session's output relay: ``{offset, data}``
                                                entries, then ``{end}`` (the owner, while readers
                                                renew it; ~1,000 entries; kept 5 min after the end)
``tb:events:<computer>``            stream      the computer's session lifecycle events
                                                ``{kind, session}`` (its daemon; ~1,000 entries)
``tb:telegram:poller:<hash>``       string      the holder of a Telegram bot's polling lease
                                                (``<hash>``: of the token, never the token; TTL the
                                                lease's)
==================================  ==========  =====================================================

Every entry is signed (see :mod:`._seal`, and the modules that read and write each key).
"""

from __future__ import annotations

import hashlib

__all__ = [
    "DONE_TTL",
    "EVENTS_MAXLEN",
    "HEARTBEAT_PATTERN",
    "INBOX_GROUP",
    "INBOX_MAXLEN",
    "REGISTRY",
    "RELAY_KEEP",
    "RELAY_MAXLEN",
    "REPLY_TTL",
    "done",
    "events",
    "heartbeat",
    "heartbeat_owner",
    "inbox",
    "relay",
    "reply",
    "telegram_lease",
]

_PREFIX = "tb:"

#: hash: computer name -> its last heartbeat (no TTL)
REGISTRY = _PREFIX + "computers"
_HEARTBEAT = _PREFIX + "computer:"
#: what :func:`scan_keys` walks to find the computers online
HEARTBEAT_PATTERN = _HEARTBEAT + "*"
#: the consumer group every computer reads its own inbox through (consumer: its name)
INBOX_GROUP = "tb"
#: entries an inbox is trimmed to (about: ``MAXLEN ~``)
INBOX_MAXLEN = 10_000
#: seconds an idempotency record is kept
DONE_TTL = 3600
#: seconds a reply waits to be popped
REPLY_TTL = 60
#: entries a relay stream is trimmed to (about)
RELAY_MAXLEN = 1000
#: seconds a relay stream is kept after its end entry
RELAY_KEEP = 300
#: entries a computer's event stream is trimmed to (about)
EVENTS_MAXLEN = 1000


def heartbeat(computer: str) -> str:
    """``tb:computer:<computer>``: its heartbeat while online."""
    return _HEARTBEAT + computer


def heartbeat_owner(key: str) -> str:
    """The computer whose heartbeat ``key`` is (the inverse of :func:`heartbeat`)."""
    return key.removeprefix(_HEARTBEAT)


def inbox(computer: str) -> str:
    """``tb:inbox:<computer>``: the requests addressed to it."""
    return f"{_PREFIX}inbox:{computer}"


def reply(requester: str, request_id: str) -> str:
    """``tb:reply:<requester>:<id>``: where the answer to one request is pushed."""
    return f"{_PREFIX}reply:{requester}:{request_id}"


def done(computer: str, request_id: str) -> str:
    """``tb:done:<computer>:<id>``: the reply ``computer`` made to a request, kept to re-send it."""
    return f"{_PREFIX}done:{computer}:{request_id}"


def relay(computer: str, session_id: str) -> str:
    """``tb:out:<computer>:<session>``: the session's output, relayed for other computers."""
    return f"{_PREFIX}out:{computer}:{session_id}"


def events(computer: str) -> str:
    """``tb:events:<computer>``: the computer's session lifecycle events."""
    return f"{_PREFIX}events:{computer}"


def telegram_lease(token: str) -> str:
    """``tb:telegram:poller:<hash>``: who polls the bot of ``token`` (a hash of it: never the
    token itself)."""
    return f"{_PREFIX}telegram:poller:" + hashlib.sha256(token.encode()).hexdigest()[:16]
