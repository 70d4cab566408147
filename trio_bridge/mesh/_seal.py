"""Signing what crosses Redis, and counting what a reader drops.

Every mesh message binds what it is for: its kind, its sender, its target (a computer, or the key
it is read from), its id, its time and its body. The MAC is HMAC-SHA256 with the mesh secret
over those parts, each length-prefixed (no separator inside a part can make two different
messages sign alike), after a protocol label. A message copied to another inbox, stream or
session, or read as another kind, fails verification; one sent more than :data:`MAX_SKEW`
seconds from now is refused as stale (replay within the skew is the receiver's business: the
inbox remembers the ids it handled, relay readers place bytes by offset, event readers drop
what they saw).

Without a secret nothing is signed, but the same shape is checked: a message for another
target, of another kind, stale or malformed is still refused.

Standard library ``hmac`` on purpose: the message format is ours (Redis stream fields, values in
JSON); a token library (itsdangerous, PyJWT) would add a second encoding around it, not safety.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping

import attrs

__all__ = ["MAX_SKEW", "Drops", "Rejected", "Signer"]

log = logging.getLogger(__name__)

#: seconds a message's time may be off the reader's clock; older (or newer) ones are stale
MAX_SKEW = 300.0
_LABEL = b"trio-bridge mesh 1"


class Rejected(Exception):
    """A message that must be dropped; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


#: why a message is dropped (the ``reason`` label of ``trio_bridge_mesh_dropped``)
REASONS = ("malformed", "unsigned", "bad_signature", "stale", "replay")


@attrs.frozen
class Signer:
    """Signs and checks mesh messages with the shared secret (without one: checks shape only)."""

    secret: str | None = attrs.field(default=None, repr=False)

    @property
    def signed(self) -> bool:
        return bool(self.secret)

    def mac(self, kind: str, sender: str, target: str, ident: str, sent_at: str, *body: str) -> str:
        """The signature of one message ('' without a secret)."""
        if not self.secret:
            return ""
        mac = hmac.new(self.secret.encode(), _LABEL, hashlib.sha256)
        for part in (kind, sender, target, ident, sent_at, *body):
            data = part.encode("utf-8", "surrogatepass")
            mac.update(b"%d:" % len(data))
            mac.update(data)
        return mac.hexdigest()

    def seal(
        self, kind: str, sender: str, target: str, ident: str, *body: str, now: float | None = None
    ) -> tuple[str, str]:
        """``(time, sig)`` for a message sent now: the fields to send beside its body."""
        sent_at = repr(time.time() if now is None else now)
        return sent_at, self.mac(kind, sender, target, ident, sent_at, *body)

    def check(
        self,
        fields: Mapping[str, str],
        kind: str,
        sender: str,
        target: str,
        ident: str,
        *body: str,
        fresh: bool = True,
    ) -> float:
        """Verify a message whose ``time`` and ``sig`` are in ``fields`` and whose other parts
        the reader supplies (from the fields, or from where it read the message); its time.

        Raises:
            Rejected: malformed, unsigned, bad signature, or (``fresh``) stale.
        """
        sent_at = fields.get("time")
        sig = fields.get("sig")
        if self.secret and (not isinstance(sig, str) or not sig):
            raise Rejected("unsigned")
        try:
            when = float(sent_at)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise Rejected("malformed", "no time") from None
        if when != when:  # NaN compares with nothing: it would never be stale
            raise Rejected("malformed", "no time")
        if self.secret:
            assert isinstance(sig, str)
            expected = self.mac(kind, sender, target, ident, str(sent_at), *body)
            if not hmac.compare_digest(expected, sig):
                raise Rejected("bad_signature")
        if fresh and abs(time.time() - when) > MAX_SKEW:
            raise Rejected("stale", f"sent {time.time() - when:.0f} s ago")
        return when


class Drops:
    """What readers dropped, by (entry, reason): the ``trio_bridge_mesh_dropped`` counter.

    Each drop is logged, but at most 10 lines per (entry, reason) and then one a minute with the
    count in between: whoever floods Redis with junk must not flood the daemon's log too.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def drop(self, entry: str, reason: str, detail: str) -> None:
        key = (entry, reason)
        self.counts[key] += 1
        now = time.monotonic()
        last, count_then = self._logged.get(key, (0.0, 0))
        if self.counts[key] <= 10 or now - last >= 60:
            skipped = self.counts[key] - count_then - 1
            extra = f" ({skipped} more since the last such line)" if self.counts[key] > 10 and skipped else ""
            log.warning("mesh: dropped %s (%s): %s%s", entry, reason, detail, extra)
            self._logged[key] = (now, self.counts[key])
