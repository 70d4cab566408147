"""Shared fixtures: every test gets its own tmux server, socket directory and state directory.

Nothing is mocked: tests run the real tmux. At teardown each test's tmux
server is killed (by its own socket) and the process table is checked for
anything the test left behind.

The suite runs in parallel (pytest-xdist, ``scripts/test``): nothing here is shared between
tests, so any two may run at once; loopback ports come from :func:`free_port`. Tests that must
not run beside each other share an ``xdist_group`` (``--dist loadgroup`` runs a group on one
worker, one test after another).
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import os
import random
import shutil
import socket
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


#: loopback ports for the servers tests start: below the kernel's ephemeral range (32768-60999 by
#: default), a slice of _PORTS_PER_WORKER for each pytest-xdist worker
_PORTS = range(20000, 32000)
_PORTS_PER_WORKER = 1000
_port_counter = itertools.count(random.randrange(_PORTS_PER_WORKER))


def _ephemeral_ports() -> range:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
    except (OSError, ValueError):
        return range(32768, 61000)
    return range(low, high + 1)


def free_port() -> int:
    """A free loopback TCP port for a server a test starts (and may restart on the same port).

    Not ``bind(("127.0.0.1", 0))``'s: the kernel hands that port out again, to another worker's
    bind or to any outgoing connection, between the probe and the server's own bind or while the
    server restarts; a test could then reach another test's server. These ports are outside the
    ephemeral range, from a slice of each worker's own.
    """
    ephemeral = _ephemeral_ports()
    if _PORTS.start < ephemeral.stop and ephemeral.start < _PORTS.stop:
        # a machine whose ephemeral range covers ours: the kernel's choice, then
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    slices = len(_PORTS) // _PORTS_PER_WORKER
    first = _PORTS.start + (int(worker) if worker.isdigit() else 0) % slices * _PORTS_PER_WORKER
    for _ in range(_PORTS_PER_WORKER):
        port = first + next(_port_counter) % _PORTS_PER_WORKER
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:  # taken (or in TIME_WAIT): the next one
                continue
        return port
    raise RuntimeError(f"no free loopback port in {first}..{first + _PORTS_PER_WORKER - 1}")


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has already exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


#: variables a sandbox does not inherit: its own tmux, settings, and sockets (without
#: XDG_RUNTIME_DIR a daemon's socket is in its state directory: with the user's, every test's
#: daemon would share one socket path)
_NOT_INHERITED = ("TMUX", "TRIO_BRIDGE_", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME")


@attrs.frozen
class Sandbox:
    """One test's private world: tmux socket dir, state dir, tmux server name."""

    root: Path
    socket_name: str

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
        env.update(
            TMUX_TMPDIR=str(self.root / "tmux"),
            XDG_STATE_HOME=str(self.root / "state"),
            # not the user's config.toml
            XDG_CONFIG_HOME=str(self.root / "config"),
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
    for key in [k for k in os.environ if k.startswith(_NOT_INHERITED)]:
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


def _expected_long(item: pytest.Item) -> bool:
    """Marked ``slow``, or allowed 100 s or more (``pytest.mark.timeout``)."""
    timeout = item.get_closest_marker("timeout")
    seconds = (timeout.args[0] if timeout.args else timeout.kwargs.get("timeout", 0)) if timeout else 0
    return item.get_closest_marker("slow") is not None or float(seconds or 0) >= 100


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist worker: the long tests first (in their order, then the others in
    theirs): handed out first, they do not end a parallel run alone on one worker; and the
    ``slow`` ones (the fuzzers, busy on a core for tens of seconds) in one ``xdist_group``, so
    that they never run beside each other. A serial run keeps the files' order."""
    if not hasattr(config, "workerinput"):
        return
    items.sort(key=_expected_long, reverse=True)
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group("slow"))
    if config.getvalue("loadgroup"):
        for item in items:
            _name_the_group(item)


def _name_the_group(item: pytest.Item) -> None:
    """Give ``item`` the node id ``--dist loadgroup`` schedules by: ``ID@GROUP``.

    pytest-xdist (3.8) does it by setting ``item._nodeid``, which pytest 9.2 no longer reads
    (the id is ``item._id``, a ``NodeId``): there, every test was handed out alone and the
    groups were ignored. Once xdist's own renaming works again, this finds it done.
    """
    names = sorted(
        {
            str(m.args[0] if m.args else m.kwargs.get("name", "default"))
            for m in item.iter_markers("xdist_group")
        }
    )
    if not names or item.nodeid.endswith("@" + "_".join(names)):
        return
    from _pytest.nodeid import NodeId

    item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")  # type: ignore[attr-defined]


#: pytest-xdist workers for ``-n auto`` (scripts/test): the tests mostly wait on subprocesses,
#: so a worker more than this 2-core machine's cores pays; more than that did not (measured:
#: docs/decisions.md, "Dependencies")
WORKERS = 3


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: ``TRIO_BRIDGE_TEST_WORKERS`` if set; else :data:`WORKERS` for the whole suite
    or folders of it, and none (the tests run in this process: a worker's start costs seconds)
    for chosen files or tests, or with ``-k``."""
    if workers := os.environ.get("TRIO_BRIDGE_TEST_WORKERS"):
        return int(workers)
    chosen = config.option.keyword or any("::" in arg or arg.endswith(".py") for arg in config.args)
    return 0 if chosen else WORKERS


def modules_a_daemon_loads(sandbox: Sandbox, *prefixes: str) -> list[str]:
    """The modules named by ``prefixes`` (a name, or a package and what is in it) that a daemon
    started and stopped with the sandbox's settings has loaded, in a fresh interpreter."""
    code = (
        "import sys, trio; from trio_bridge.config import resolve_settings; "
        "from trio_bridge.daemon import serve_daemon\n"
        "async def main():\n"
        "    async with trio.open_nursery() as n:\n"
        "        await n.start(serve_daemon, resolve_settings().settings); n.cancel_scope.cancel()\n"
        "trio.run(main)\n"
        f"prefixes = {prefixes!r}\n"
        "print(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in prefixes)))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=sandbox.env, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    return list(ast.literal_eval(result.stdout.decode().splitlines()[-1]))
