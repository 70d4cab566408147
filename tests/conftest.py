"""Shared fixtures: every test gets its own tmux server, socket directory and state directory.

Nothing is mocked: tests run the real tmux. At teardown each test's tmux
server is killed (by its own socket) and the process table is checked for
anything the test left behind.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from trio_bridge.config import Timeouts
from trio_bridge.tmux import TmuxServer

REPO = Path(__file__).resolve().parent.parent


def live_pids_matching(marker: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        state = stat[stat.rfind(b")") + 2 :].split()[0]
        if marker.encode() in cmdline and state != b"Z":
            found.append(int(entry))
    return found


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has already exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


@attrs.frozen
class Sandbox:
    """One test's private world: tmux socket dir, state dir, tmux server name."""

    root: Path
    socket_name: str

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TMUX", "TRIO_BRIDGE_"))}
        env.update(
            TMUX_TMPDIR=str(self.root / "tmux"),
            XDG_STATE_HOME=str(self.root / "state"),
            TRIO_BRIDGE_TMUX_SOCKET=self.socket_name,
        )
        env.pop("PYTHONUNBUFFERED", None)  # let buffering bugs show, as on a user's machine
        return env

    @property
    def state_dir(self) -> Path:
        return self.root / "state" / "trio-bridge"

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket_name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=check,
        )

    def cli(self, *args: str, timeout: float = 30, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        """Run ``trio-bridge ARGS`` as a user would, in this sandbox."""
        return subprocess.run(
            [sys.executable, "-m", "trio_bridge", *args],
            env=kwargs.pop("env", self.env),
            capture_output=True,
            timeout=timeout,  # type: ignore[arg-type]
            **kwargs,  # type: ignore[arg-type]
        )

    def server(self, **timeouts: float) -> TmuxServer:
        return TmuxServer(
            socket_name=self.socket_name,
            config_path=self.state_dir / "tmux.conf",
            timeouts=dataclasses.replace(Timeouts(), **timeouts),
        )


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Sandbox]:
    # A short path: tmux's socket path must fit in a sockaddr_un (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="tb-"))
    box = Sandbox(root, f"tbtest-{uuid.uuid4().hex[:10]}")
    (root / "tmux").mkdir()
    for key in [k for k in os.environ if k.startswith(("TMUX", "TRIO_BRIDGE_"))]:
        monkeypatch.delenv(key)
    for key, value in box.env.items():
        monkeypatch.setenv(key, value)
    yield box
    box.tmux("kill-server", check=False)
    # kill-server returns before the server process has finished exiting
    deadline = time.monotonic() + 5
    # (pane processes carry the test's paths in their command line: cwd, status file)
    while (
        leftovers := live_pids_matching(box.socket_name) + live_pids_matching(str(tmp_path))
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture
def server(sandbox: Sandbox) -> TmuxServer:
    return sandbox.server()


@pytest.fixture
def daemon(sandbox: Sandbox) -> Iterator[subprocess.Popen[bytes]]:
    """A daemon running as a process in this sandbox (as a user starts it), stopped by SIGTERM
    at the end: it must exit 0."""
    from .test_daemon import start_daemon, stop

    proc = start_daemon(sandbox)
    try:
        yield proc
    finally:
        assert stop(proc) == 0
