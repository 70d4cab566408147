"""The hub: the tmux session every session's window is linked into, and its one control client,
which sees all their ``%output`` and carries the commands on their panes (one client instead of
one per session)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from ..tmux import ControlClient, ControlClientClosedError, TmuxCommandError, TmuxServer, TmuxTimeoutError

__all__ = ["HUB", "Hub", "pane_cursor", "pane_screen", "resize_pane", "send_pane_bytes", "send_pane_keys"]

log = logging.getLogger(__name__)

#: the tmux session all sessions' windows are linked into (not a trio-bridge session itself)
HUB = "tb-hub"


class Hub:
    """The hub's control client while the manager serves (set by :meth:`started`, cleared by
    :meth:`stopped`), and whether it is ready: a request that needs it waits, bounded, while
    the manager is restarted (after tmux hung, or the hub was lost). The client itself is
    owned by the manager's run (``open_control_client``)."""

    def __init__(self, server: TmuxServer) -> None:
        self._server = server
        self.client: ControlClient | None = None
        self._ready = trio.Event()  # set while the client serves (replaced after)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def started(self, client: ControlClient) -> None:
        self.client = client

    def serving(self) -> None:
        """The manager serves: its sessions adopted, followed by :attr:`client`."""
        self._ready.set()

    def stopped(self) -> None:
        self.client = None
        if self._ready.is_set():  # (an unset one has waiters: the next run sets it)
            self._ready = trio.Event()

    async def wait_ready(self, command: str) -> None:
        """Wait (within the tmux timeout) until the manager serves. Raises
        :class:`TmuxTimeoutError` naming ``command`` if it does not."""
        with trio.move_on_after(self._server.timeouts.tmux):
            await self._ready.wait()
        if not self._ready.is_set():
            raise TmuxTimeoutError(command, self._server.timeouts.tmux)

    async def retire_if_idle(self) -> None:
        """With no session left, remove the hub, so that the tmux server can exit too."""
        try:
            if not await self._server.list_sessions():
                await self._server.kill_session(HUB, missing_ok=True)
        except Exception:
            log.warning("could not remove the idle hub session", exc_info=True)


# Commands on a followed pane, through the hub's client (given: the caller's snapshot of it).


async def pane_screen(client: ControlClient, pane_id: str) -> str | None:
    """The pane's rendered screen; None if it ended just now."""
    try:
        lines = await client.command("capture-pane", "-p", "-t", pane_id)
        return "".join(line.decode("utf-8", "replace") + "\n" for line in lines)
    except (TmuxCommandError, ControlClientClosedError):
        return None


async def pane_cursor(client: ControlClient, pane_id: str) -> tuple[int, int] | None:
    """The pane's cursor (column, row, from 0); None if it ended just now."""
    try:
        (line,) = await client.command("display-message", "-p", "-t", pane_id, "#{cursor_x} #{cursor_y}")
        x, y = line.split()
        return int(x), int(y)
    except (TmuxCommandError, ControlClientClosedError, ValueError):
        return None


async def resize_pane(client: ControlClient, pane_id: str, width: int, height: int) -> bool:
    """Resize the pane's window; False if it ended just now."""
    try:
        await client.command("resize-window", "-t", pane_id, "-x", str(width), "-y", str(height))
    except (TmuxCommandError, ControlClientClosedError):
        return False
    return True


async def send_pane_bytes(client: ControlClient, pane_id: str, data: bytes) -> None:
    """Write raw bytes to the pane's terminal, as typed keys (512 a command)."""
    for start in range(0, len(data), 512):
        hex_bytes = [f"{b:02x}" for b in data[start : start + 512]]
        await client.command("send-keys", "-t", pane_id, "-H", *hex_bytes)


async def send_pane_keys(client: ControlClient, pane_id: str, keys: Sequence[str]) -> None:
    """Press tmux keys (as given, unchecked: ours, not a caller's) in the pane."""
    await client.command("send-keys", "-t", pane_id, *keys)
