"""``trio-bridge hook EVENT``: what an agent's hook configuration runs.

It reads the hook's JSON (from stdin, as Claude Code and Gemini CLI send it, or from its last
argument, as Codex's ``notify`` passes it), finds the session from ``TRIO_BRIDGE_SESSION_ID`` and
the daemon from ``TRIO_BRIDGE_API_SOCKET``, and posts it to ``/v1/sessions/{id}/hooks``.

It must never hold the agent up: it imports only the standard library (start-up is most of its
cost), everything it waits for is bounded (stdin 1 s, the daemon 2 s), and it exits 0 whatever
happens, daemon down included.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

STDIN_WAIT = 1.0
DAEMON_WAIT = 2.0
MAX_PAYLOAD = 1 << 20


def _post(socket_path: str, target: str, body: bytes, token: str | None) -> None:
    """POST ``body`` to the daemon's unix socket and wait for the status line (bounded).

    Written out instead of ``http.client``: importing that (email, ssl) took 35 ms of the
    hook's ~45 ms here, and every agent turn waits for its hooks. One request, no keep-alive,
    the answer's status only (the daemon has handled the event once it answers).
    """
    head = [
        f"POST {target} HTTP/1.1", "Host: trio-bridge", "Content-Type: application/json",
        f"Content-Length: {len(body)}", "Connection: close",
    ]  # fmt: skip
    if token:
        head.append(f"Authorization: Bearer {token}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    deadline = time.monotonic() + DAEMON_WAIT
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(DAEMON_WAIT)
        sock.connect(socket_path)
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk


def _read_stdin() -> bytes:
    """What the agent wrote on our stdin, until EOF, within STDIN_WAIT seconds."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return b""
    if os.isatty(fd):
        return b""
    data = b""
    deadline = time.monotonic() + STDIN_WAIT
    while len(data) < MAX_PAYLOAD:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _payload(args: Sequence[str]) -> dict[str, Any]:
    for candidate in ([args[-1].encode()] if args else []) + [_read_stdin()]:
        try:
            value = json.loads(candidate) if candidate.strip() else None
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def main(argv: Sequence[str]) -> int:
    event = argv[0] if argv else "unknown"
    session_id = os.environ.get("TRIO_BRIDGE_SESSION_ID", "")
    socket_path = os.environ.get("TRIO_BRIDGE_API_SOCKET", "")
    payload = _payload(list(argv[1:]))
    if not session_id or not socket_path:
        return 0  # not inside a trio-bridge agent session: nothing to tell
    body = json.dumps({"event": event, "payload": payload}).encode()
    try:
        _post(socket_path, f"/v1/sessions/{session_id}/hooks", body, os.environ.get("TRIO_BRIDGE_TOKEN"))
    except OSError:
        pass  # the daemon is down or slow: the agent must go on; its state comes from elsewhere
    return 0


if __name__ == "__main__":  # run as a file by agents' hooks (see agents.profiles.hook_command)
    sys.exit(main(sys.argv[1:]))
