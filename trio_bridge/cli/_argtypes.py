"""Argument types: each turns a bad value into a usage error that says what was expected."""

from __future__ import annotations

import argparse

__all__ = ["STATES", "count", "duration", "positive_seconds", "session_name", "size", "states"]

#: a session's states, in the order of its life
STATES = ("starting", "running", "exited", "killed", "lost")


def positive_seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def states(text: str) -> str:
    """A comma-separated list of session states (a usage error otherwise, with a suggestion)."""
    import difflib

    for state in (s.strip() for s in text.split(",") if s.strip()):
        if state not in STATES:
            close = difflib.get_close_matches(state, STATES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (one of {', '.join(STATES)})"
            raise argparse.ArgumentTypeError(f"no state {state!r}{hint}")
    return text


def session_name(text: str) -> str:
    import re

    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a session name: a letter, then up to 63 letters, digits, _ . or -"
        )
    return text


def size(text: str) -> int:
    value = count(text)
    if not 2 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected 2 to 1000, got {text!r}")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


def duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30s, 10m, 2h or 7d, got {text!r}"
        ) from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a duration such as 30s, 10m, 2h or 7d, got {text!r}")
    return value
