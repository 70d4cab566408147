"""An embedded `run` in a terminal follows the terminal's size (SIGWINCH), as `attach` does
through the daemon: driven in a pane of the test's own tmux server (the user's terminal, resized
with resize-window), its run's session on the same server."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from ..conftest import Sandbox
from ._helpers import wait_until

pytestmark = pytest.mark.timeout(60)


def test_an_embedded_run_follows_the_terminal_size(sandbox: Sandbox, tmp_path: Path) -> None:
    done = tmp_path / "run.status"
    # the command says its size whenever it changes
    script = "trap 'echo size:$(stty size)' WINCH; echo size:$(stty size); while :; do sleep 0.1; done"
    run = shlex.join([sys.executable, "-m", "trio_bridge", "run", "--embedded", "--", "sh", "-c", script])
    command = f"{run}; echo $? > {done}; sleep 30"
    sandbox.tmux("new-session", "-d", "-s", "user", "-x", "100", "-y", "30", command)
    try:

        def inner(fmt: str) -> str:
            names = sandbox.tmux("list-sessions", "-F", "#{session_name}").stdout.split()
            runs = [name for name in names if name.startswith("tb-")]
            if len(runs) != 1:
                return ""
            return sandbox.tmux(
                "display-message", "-p", "-t", f"={runs[0]}:", fmt, check=False
            ).stdout.strip()

        def screen() -> str:
            return sandbox.tmux("capture-pane", "-p", "-t", "=user:").stdout

        # the run's session took the terminal's size
        wait_until(lambda: inner("#{window_width}x#{window_height}") == "100x30")
        wait_until(lambda: "size:30 100" in screen())
        # the user's terminal grows, then shrinks: the session follows, and its command is told
        for width, height in ((120, 40), (90, 25)):
            sandbox.tmux("resize-window", "-t", "=user:", "-x", str(width), "-y", str(height))
            wait_until(lambda w=width, h=height: inner("#{window_width}x#{window_height}") == f"{w}x{h}")
            wait_until(lambda w=width, h=height: f"size:{h} {w}" in screen())
        sandbox.tmux("send-keys", "-t", "=user:", "C-]")  # embedded: stops the run
        wait_until(lambda: done.exists() and done.read_text().strip() != "")
        assert done.read_text().strip() == "130"
    finally:
        sandbox.tmux("kill-session", "-t", "=user", check=False)
