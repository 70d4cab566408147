"""``trio-bridge daemon``: the daemon in the foreground (see ``trio_bridge/daemon.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._context import Invocation

__all__ = ["daemon"]


def daemon(invocation: Invocation) -> int:
    """Run the daemon until it stops; its exit code (a bad setting: 2, before it starts)."""
    settings = invocation.settings
    from ..daemon import run_daemon

    return run_daemon(settings)
