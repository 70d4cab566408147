"""What the CLI tests share: a command's stdout when it succeeded, a bounded wait, and what the
shell would be offered to complete a line."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ..conftest import Sandbox

__all__ = ["complete", "ok", "wait_until"]


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, (result.returncode, result.stderr.decode())
    return result.stdout.decode()


def wait_until(predicate: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def complete(sandbox: Sandbox, line: str) -> list[str]:
    """What the shell would offer for ``line`` (argcomplete's protocol, as the completion script
    drives it)."""
    out = Path(sandbox.root) / "completions"
    env = {
        **sandbox.env, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_SUPPRESS_SPACE": "1", "COMP_LINE": line,
        "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n",
    }  # fmt: skip
    result = sandbox.cli(env=env)
    assert result.returncode == 0, result.stderr
    return sorted(w.strip() for w in out.read_text().split("\n") if w.strip())
