"""The commands that follow a session or the daemon as it goes on: ``tail``, ``wait``,
``events``. Each resumes where it was when the daemon restarts or the connection drops (for up
to ``reconnect_timeout``: see ``_resume.py``)."""

from __future__ import annotations

import argparse
import time

import httpx

from ..client import ApiError, Client, DaemonUnavailableError, OutputDroppedError
from ._exit import EXIT_REFUSED, EXIT_TIMEOUT, exit_status
from ._resume import Reconnect
from ._show import print_json
from ._text import Out, error

__all__ = ["cmd_events", "cmd_tail", "cmd_wait"]


def _last_lines_offset(client: Client, session_id: str, lines: int) -> int:
    """The offset where the last ``lines`` lines of the output begin; of what the log keeps,
    when the output passed ``output_max_bytes`` (saying on stderr that earlier output was
    dropped)."""
    first = 0
    try:
        _, _, end, _ = client.output(session_id, 0, 1)
    except OutputDroppedError as exc:
        if exc.first_offset is None:
            raise
        first = exc.first_offset
        error(f"output before byte {first} was dropped (the log keeps the last output_max_bytes)")
        _, _, end, _ = client.output(session_id, first, 1)
    window = 1 << 16
    while True:
        start = max(first, end - window)
        data, _, _, _ = client.output(session_id, start, min(window, 1 << 20))
        # A trailing newline ends the last line rather than starting a new one.
        cut = len(data)
        for _ in range(lines + 1 if data.endswith(b"\n") else lines):
            cut = data.rfind(b"\n", 0, cut)
            if cut < 0:
                break
        if cut >= 0 or start == first or window >= 1 << 20:
            return start + cut + 1 if cut >= 0 else start
        window *= 4


def cmd_tail(client: Client, args: argparse.Namespace) -> int:
    out = Out()
    offset = args.from_ if args.from_ is not None else _last_lines_offset(client, args.id, args.lines)
    try:
        if not args.follow:
            while True:
                try:
                    data, offset, end, _ = client.output(args.id, offset, 1 << 20)
                except OutputDroppedError as exc:
                    # (--from an offset no longer kept, or trimmed while we read)
                    if exc.first_offset is None or exc.first_offset <= offset:
                        raise
                    error(f"output from {offset} was dropped; continuing at {exc.first_offset}")
                    offset = exc.first_offset
                    continue
                out.write(data)
                if not data or offset >= end:
                    return 0
        reconnect = Reconnect(client.reconnect_timeout, f"following session {args.id}")
        while True:
            reason: object = "the stream ended"
            try:
                for event in client.stream(args.id, offset, on_open=reconnect.connected):
                    if event.event == "output":
                        out.write(event.json()["data"].encode())
                        offset = int(event.id or offset)
                    elif event.event == "resync":
                        error(f"output from {offset} was dropped; continuing at {event.json()['offset']}")
                        offset = int(event.json()["offset"])
                    elif event.event == "end":
                        return 0
                    elif event.event == "shutdown":
                        reason = "it is shutting down"
                        break
            except (ApiError, DaemonUnavailableError, httpx.TransportError) as exc:
                reason = reconnect.why_lost(exc)
            # The daemon stopped or the connection dropped: resume where we were.
            time.sleep(reconnect.lost(reason))
    finally:
        out.close()


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    until = [s for s in (args.until or "").split(",") if s]
    reconnect = Reconnect(client.reconnect_timeout, f"waiting for session {args.id}")
    while True:
        remaining = 60.0 if deadline is None else max(0.0, min(60.0, deadline - time.monotonic()))
        try:
            result = client.wait(args.id, remaining, until)
        except (ApiError, DaemonUnavailableError, httpx.TransportError) as exc:
            # The daemon restarts: ask again (the session goes on meanwhile).
            time.sleep(reconnect.lost(reconnect.why_lost(exc)))
            continue
        reconnect.connected()
        if until and result.get("reached"):
            # The agent is in one of the states asked for: 0 (the session may go on).
            if args.json:
                print_json(result["session"])
            else:
                print(result["session"].get("agent_state") or result["session"]["state"])
            return 0
        if until and result["ended"]:
            error(
                f"session {args.id} ended ({result['session']['state']}) "
                f"before its agent was {' or '.join(until)}"
            )
            return EXIT_REFUSED
        if result["ended"]:
            session = result["session"]
            if args.json:
                print_json(session)
            return exit_status(session)
        if deadline is not None and time.monotonic() >= deadline:
            what = f"not {' or '.join(until)} yet" if until else "still running"
            error(f"session {args.id} is {what}")
            return EXIT_TIMEOUT


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    """Lifecycle events, one line each (``KIND ID STATE TITLE``; ``--json``: the API's event
    object), until interrupted; reconnecting (and resuming after the last event) like ``tail
    -f``. ``resync``: events may have been missed (the daemon could not replay them all)."""
    reconnect = Reconnect(client.reconnect_timeout, "following events")
    last_id: str | None = None
    while True:
        reason: object = "the stream ended"
        cut_off = False
        try:
            for event in client.events(last_id, on_open=reconnect.connected):
                if event.event == "shutdown":
                    reason = "it is shutting down"
                    break
                if event.event == "overflow":
                    # We fell behind (or the daemon's session manager restarted): ask again
                    # from the last event we printed.
                    cut_off = True
                    break
                if event.event == "resync":
                    error("events: resync (some may have been missed: see trio-bridge ls)")
                    continue
                last_id = event.id or last_id
                if args.json:
                    print(event.data, flush=True)
                    continue
                data = event.json()
                session = data["session"]
                state = data.get("agent") or session["state"]
                title = " ".join(str(session["title"]).split())  # one line per event
                print(f"{event.event} {session['id']} {state} {title}", flush=True)
        except (ApiError, DaemonUnavailableError, httpx.TransportError) as exc:
            reason = reconnect.why_lost(exc)
        if cut_off:
            time.sleep(0.05)
            continue
        time.sleep(reconnect.lost(reason))
