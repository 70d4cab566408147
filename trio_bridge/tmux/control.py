"""A tmux control-mode client (``tmux -C attach``): output pushed, not polled.

One client attached to a tmux session receives every ``%output`` of every
pane of that session as it happens, with no subprocess per update, and runs
commands over the same pipe (about 0.15 ms per round trip instead of a fork).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from ..process import open_process_group
from ._protocol import decode_output, quote_argument
from .server import TmuxError, TmuxServer

__all__ = [
    "ControlClient",
    "ControlClientClosedError",
    "TmuxCommandError",
    "TmuxTimeoutError",
    "open_control_client",
]

log = logging.getLogger(__name__)

_READ_SIZE = 65536

#: control-client commands tmux did not answer within their time limit, since start (metrics)
timeouts_total = 0


class ControlClientClosedError(Exception):
    """The control client has exited; the reason says why (tmux's ``%exit`` text, or EOF)."""


class TmuxCommandError(Exception):
    """tmux answered a control-mode command with ``%error``."""


class TmuxTimeoutError(TmuxError):
    """tmux did not answer a control-mode command within the tmux timeout (the server is hung,
    e.g. stopped): the client is marked ``hung`` and must be replaced."""

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        super().__init__(f"tmux did not answer {command!r} within {timeout:g} s")


@attrs.define
class _Pending:
    done: trio.Event = attrs.field(factory=trio.Event)
    lines: list[bytes] = attrs.field(factory=list)
    error: BaseException | None = None


class ControlClient:
    """The handle given out by :func:`open_control_client`.

    Commands are paired with their replies in FIFO order (tmux answers control
    commands in order). Output of a pane goes to the channel returned by
    :meth:`subscribe`, in order; when the channel is full the reader waits,
    which makes tmux hold further output (backpressure, nothing dropped).
    """

    def __init__(self, stdin: trio.abc.SendStream, timeout: float) -> None:
        self._stdin = stdin
        #: seconds tmux has to answer one command
        self.timeout = timeout
        #: set when a command went unanswered for ``timeout``: tmux is hung (or the pipe is
        #: out of step after an interrupted write); the client's owner must replace it
        self.hung = trio.Event()
        self._send_lock = trio.Lock()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._subscribers: dict[str, trio.MemorySendChannel[bytes]] = {}
        self.closed = trio.Event()
        #: set once tmux has attached us to the session (commands before that fail)
        self.attached = trio.Event()
        #: why the client ended: tmux's ``%exit`` reason, "eof", or None while open
        self.exit_reason: str | None = None

    # -- commands ---------------------------------------------------------

    async def command(self, *args: str) -> list[bytes]:
        """Run one tmux command and return its output lines, within ``timeout`` seconds.

        Raises:
            TmuxCommandError: tmux answered ``%error``.
            ControlClientClosedError: the client exited before answering.
            TmuxTimeoutError: no answer within ``timeout`` (the client is then ``hung``).
        """
        if self.closed.is_set():
            raise ControlClientClosedError(f"control client closed ({self.exit_reason})")
        line = " ".join(quote_argument(a) for a in args).encode() + b"\n"
        pending = _Pending()
        with trio.move_on_after(self.timeout) as scope:
            async with self._send_lock:
                # Append before writing: the reply can only follow the write.
                self._pending.append(pending)
                try:
                    await self._stdin.send_all(line)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    pending.error = ControlClientClosedError("control client stdin closed")
                    pending.done.set()
                    raise pending.error from exc
            await pending.done.wait()
        if scope.cancelled_caught:
            # The pending reply stays queued, so that a late answer pairs with it (and is
            # dropped), not with the next command; the client is unusable all the same.
            global timeouts_total
            timeouts_total += 1
            self.hung.set()
            command = " ".join(args)
            raise TmuxTimeoutError(command if len(command) <= 80 else command[:79] + "…", self.timeout)
        if pending.error is not None:
            raise pending.error
        return pending.lines

    # -- output -----------------------------------------------------------

    def subscribe(self, pane_id: str, buffer: int = 256) -> trio.MemoryReceiveChannel[bytes]:
        """A channel of the pane's output chunks (raw bytes), from now on."""
        if pane_id in self._subscribers:
            raise ValueError(f"pane {pane_id} already has a subscriber")
        send, receive = trio.open_memory_channel[bytes](buffer)
        if self.closed.is_set():
            send.close()
        else:
            self._subscribers[pane_id] = send
        return receive

    async def follow(self, pane_id: str, buffer: int = 256) -> trio.MemoryReceiveChannel[bytes]:
        """Subscribe to a pane's output and make tmux start tracking it for us now.

        tmux registers a pane with a control client lazily, and in tmux 3.3a
        a pane first seen together with its first output can lose that output
        (measured: 1 in ~15 short concurrent runs lost everything). Turning
        the pane "on" explicitly registers it before any byte is produced.
        """
        channel = self.subscribe(pane_id, buffer)
        try:
            await self.command("refresh-client", "-A", f"{pane_id}:on")
        except BaseException:
            self.unsubscribe(pane_id)
            raise
        return channel

    def unsubscribe(self, pane_id: str) -> None:
        """End the pane's channel: its reader gets what was queued, then EndOfChannel."""
        send = self._subscribers.pop(pane_id, None)
        if send is not None:
            send.close()

    # -- the reader task --------------------------------------------------

    async def _dispatch(self, line: bytes, block: _Pending | None) -> _Pending | None:
        if block is not None:
            if line.startswith((b"%end ", b"%error ")):
                if line.startswith(b"%error "):
                    message = b"\n".join(block.lines).decode("utf-8", "replace")
                    block.error = TmuxCommandError(message or "tmux command failed")
                block.done.set()
                return None
            block.lines.append(line)
            return block
        if line.startswith(b"%output "):
            _, pane_id, data = line.split(b" ", 2)
            send = self._subscribers.get(pane_id.decode())
            if send is not None:
                try:
                    await send.send(decode_output(data))
                except trio.BrokenResourceError:
                    # The subscriber went away without unsubscribing: stop feeding it.
                    self._subscribers.pop(pane_id.decode(), None)
            return None
        if line.startswith(b"%begin "):
            # "%begin <time> <number> <flags>": flag 1 marks a command of ours;
            # blocks with flag 0 (the attach itself, hooks) belong to no caller.
            flags = int(line.rsplit(b" ", 1)[1])
            if flags & 1 and self._pending:
                return self._pending.popleft()
            return _Pending()  # collected and dropped
        if line.startswith(b"%session-changed "):
            self.attached.set()
            return None
        if line.startswith(b"%exit"):
            self.exit_reason = line[6:].decode("utf-8", "replace") or "exit"
        return None

    async def _read(self, stdout: trio.abc.ReceiveStream) -> None:
        buffer = bytearray()
        block: _Pending | None = None
        try:
            while chunk := await stdout.receive_some(_READ_SIZE):
                buffer += chunk
                start = 0
                while (end := buffer.find(b"\n", start)) >= 0:
                    block = await self._dispatch(bytes(buffer[start:end]), block)
                    start = end + 1
                del buffer[:start]
        finally:
            self._close(self.exit_reason or "eof")

    def _close(self, reason: str) -> None:
        if self.exit_reason is None:
            self.exit_reason = reason
        for pending in self._pending:
            if not pending.done.is_set():
                pending.error = ControlClientClosedError(f"control client closed ({self.exit_reason})")
                pending.done.set()
        self._pending.clear()
        for send in self._subscribers.values():
            send.close()
        self._subscribers.clear()
        self.closed.set()


@asynccontextmanager
async def open_control_client(
    server: TmuxServer, session_name: str, *, output: bool = True
) -> AsyncIterator[ControlClient]:
    """Attach a control-mode client to ``session_name`` for the block's duration.

    With ``output=False`` it attaches with tmux's ``no-output`` flag (tmux 3.2+): tmux sends it
    no ``%output`` at all (and so does not escape every byte for it); its subscribers' channels
    stay empty. Only at attach: setting the flag later (``refresh-client -f no-output``) while
    output for the client is queued makes tmux 3.3a hold every later reply (measured: 1 in ~4
    tries, the client then hung).

    Owns one ``tmux -C attach`` process and one reader task in its own nursery.
    Leaving the block closes the client's stdin (tmux detaches it cleanly),
    then the process group is terminated and reaped if it lingers.

    When the client exits by itself (the session was destroyed, the server
    died), subscribers' channels end, pending commands raise
    :class:`ControlClientClosedError`, and ``exit_reason`` says why: it is
    noticed, never silent.
    """
    flags = () if output else ("-f", "no-output")
    argv = server.argv("-C", "attach-session", *flags, "-t", f"={session_name}")
    async with open_process_group(
        argv,
        operation=f"tmux control client for {session_name}",
        close_grace=server.timeouts.control_close,
        kill_grace=server.timeouts.kill_grace,
        env=server.client_env,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        client = ControlClient(proc.stdin, server.timeouts.tmux)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read, proc.stdout)
            try:
                with trio.move_on_after(server.timeouts.tmux):
                    await _first(client.attached, client.closed)
                if not client.attached.is_set():
                    # (an EOF, an %exit, or no answer within the tmux timeout)
                    raise ControlClientClosedError(
                        f"control client could not attach to {session_name} ({client.exit_reason})"
                    )
                yield client
            finally:
                if not client.closed.is_set():
                    log.debug("detaching control client from %s", session_name)
                with trio.CancelScope(shield=True), trio.move_on_after(server.timeouts.control_close):
                    await trio.aclose_forcefully(proc.stdin)
                    await client.closed.wait()
                nursery.cancel_scope.cancel()
        if client.exit_reason not in (None, "eof", "exit"):
            log.debug("control client for %s ended: %s", session_name, client.exit_reason)


async def _first(*events: trio.Event) -> None:
    """Return as soon as any of ``events`` is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)
