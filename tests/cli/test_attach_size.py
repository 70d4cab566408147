"""`attach` as tmux's: the session takes the attached terminal's size and follows it (SIGWINCH),
and the first screen leaves the cursor where the session has it. Driven in a pane of the test's
own tmux server (resize-window to resize the user's terminal)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..conftest import Sandbox
from ._helpers import ok, wait_until


def test_attach_resizes_the_session_and_places_the_cursor(
    sandbox: Sandbox, daemon: object, tmp_path: Path
) -> None:
    # a session of the default 80x24 that prints its size whenever it changes
    script = 'printf "size:%s\\n" "$(stty size)"; trap \'printf "size:%s\\n" "$(stty size)"\' WINCH; ' \
             'printf "abc\\033[5;10H"; while :; do sleep 0.1; done'  # fmt: skip
    sid = ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "sh", "-c", script)).strip()
    (record,) = json.loads(ok(sandbox.cli("ls", "--json")))
    wait_until(lambda: "abc" in ok(sandbox.cli("screen", sid)))

    def session(fmt: str) -> str:
        return sandbox.tmux("display-message", "-p", "-t", f"={record['tmux_name']}:", fmt).stdout.strip()

    def user(fmt: str) -> str:
        return sandbox.tmux("display-message", "-p", "-t", "=user:", fmt).stdout.strip()

    assert session("#{window_width}x#{window_height}") == "80x24"
    done = tmp_path / "attach.status"
    command = f"{sys.executable} -m trio_bridge attach {sid}; echo $? > {done}; sleep 30"
    sandbox.tmux("new-session", "-d", "-s", "user", "-x", "120", "-y", "40", command)
    try:
        # the session took the terminal's size; its program was told (SIGWINCH)
        wait_until(lambda: session("#{window_width}x#{window_height}") == "120x40")
        wait_until(lambda: "size:40 120" in ok(sandbox.cli("screen", sid)))
        # the first screen: the user's cursor where the session's is (row 5, column 10; not after "abc")
        wait_until(lambda: "abc" in sandbox.tmux("capture-pane", "-p", "-t", "=user:").stdout)
        wait_until(lambda: user("#{cursor_x},#{cursor_y}") == session("#{cursor_x},#{cursor_y}"))
        # the user's terminal shrinks: the session follows
        sandbox.tmux("resize-window", "-t", "=user:", "-x", "90", "-y", "30")
        wait_until(lambda: session("#{window_width}x#{window_height}") == "90x30")
        wait_until(lambda: "size:30 90" in ok(sandbox.cli("screen", sid)))
        sandbox.tmux("send-keys", "-t", "=user:", "C-]")
        wait_until(lambda: done.exists() and done.read_text().strip() != "")
        assert done.read_text().strip() == "0"
    finally:
        sandbox.tmux("kill-session", "-t", "=user", check=False)
        ok(sandbox.cli("kill", sid))
