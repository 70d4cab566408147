"""The package's one retry delay: exponential, capped, reset by a success.

Standard library only at import (no attrs, no Trio), so that the synchronous CLI's reconnecting
clients use it as cheaply as the daemon's services do.
"""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """The delays between the tries of something that fails: ``initial``, then each one
    ``multiplier`` times the last, at most ``maximum``; :meth:`reset` after a success starts
    small again. Owns no clock: its user sleeps (or bounds the wait) as it needs.

    Raises:
        ValueError: ``initial`` or ``maximum`` not positive, or ``multiplier`` below 1.
    """

    def __init__(self, initial: float = 0.1, maximum: float = 2.0, multiplier: float = 2.0) -> None:
        if not (initial > 0 and maximum > 0):
            raise ValueError(f"initial and maximum must be positive, not {initial!r}, {maximum!r}")
        if not multiplier >= 1:
            raise ValueError(f"multiplier must be >= 1, not {multiplier!r}")
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self._next = initial

    def __repr__(self) -> str:
        return f"Backoff({self.initial!r}, {self.maximum!r}, multiplier={self.multiplier!r})"

    def next(self) -> float:
        """The delay before the next try (the one after it grows)."""
        delay = self._next
        self._next = min(delay * self.multiplier, self.maximum)
        return delay

    def reset(self) -> None:
        """It worked: the next failure waits ``initial`` again."""
        self._next = self.initial

    async def sleep(self) -> None:
        """Wait :meth:`next` seconds (in Trio)."""
        import trio

        await trio.sleep(self.next())
