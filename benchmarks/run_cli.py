"""Benchmarks of `trio-bridge run`: start-up wall time and output latency, with side-by-side baselines.

Every figure is compared with a baseline measured in the same run, interleaved, because the
machines are shared and noisy: only the ratios and differences are meaningful.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PY = sys.executable
# The console script a user runs (beside this interpreter), else the module.
_SCRIPT = Path(PY).with_name("trio-bridge")
TRIO_BRIDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [PY, "-m", "trio_bridge"]


@contextmanager
def sandbox() -> Iterator[dict[str, str]]:
    """A private tmux socket dir, state dir and tmux server name; the server is killed at the end."""
    root = Path(tempfile.mkdtemp(prefix="tb-bench-"))
    (root / "tmux").mkdir()
    socket = f"tbbench-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TMUX", "TRIO_BRIDGE_"))}
    env.pop("PYTHONUNBUFFERED", None)
    # A private runtime dir too: with the user's, `run` would go through the user's own daemon.
    env.update(
        TMUX_TMPDIR=str(root / "tmux"), XDG_STATE_HOME=str(root / "state"), XDG_RUNTIME_DIR=str(root / "run")
    )
    env["TRIO_BRIDGE_TMUX_SOCKET"] = socket
    try:
        yield env
    finally:
        for name in (socket, socket + "-bare"):
            subprocess.run(["tmux", "-L", name, "kill-server"], env=env, capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 2),
        "p90_ms": round(percentile(values, 90), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
    }


def wall_ms(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def bench_startup(rounds: int) -> dict[str, Any]:
    with sandbox() as env:
        bare_socket = env["TRIO_BRIDGE_TMUX_SOCKET"] + "-bare"
        commands: dict[str, list[str]] = {
            "trio-bridge run -- true": [*TRIO_BRIDGE, "run", "--", "true"],
            "tmux new-session -d true": [
                "tmux",
                "-L",
                bare_socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "true",
            ],
            "true": ["true"],
            "python3 -c 'import trio' (floor)": [PY, "-c", "import trio"],
        }
        for argv in commands.values():  # warm caches (.pyc, page cache) before measuring
            wall_ms(argv, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):  # round robin: noise hits every command alike
            for name, argv in commands.items():
                times[name].append(wall_ms(argv, env))
    results = {name: summary(values) for name, values in times.items()}
    run_ms = results["trio-bridge run -- true"]["median_ms"]
    floor_ms = results["python3 -c 'import trio' (floor)"]["median_ms"]
    return {
        "commands": results,
        "run_minus_floor_ms": round(run_ms - floor_ms, 2),
        "target": "median(run -- true) - median(import trio) <= 100 ms",
        "met": run_ms - floor_ms <= 100,
    }


PRINTER = """
import sys, time
for i in range({lines}):
    sys.stdout.write(f"{{time.monotonic_ns()}} {{i}}\\n")
    sys.stdout.flush()
    time.sleep(0.01)
"""


class StampedLines:
    """Latencies of lines ``STAMP ...`` (CLOCK_MONOTONIC in ns when printed; the clock is
    system-wide on Linux) from their arrival time; the first ``skip`` lines are warm-up."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.seen = 0
        self.latencies: list[float] = []
        self._pending = b""

    def feed(self, data: bytes, arrived_ns: int) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            stamp = line.split(b" ", 1)[0]
            if stamp.isdigit():
                self.seen += 1
                if self.seen > self.skip:
                    self.latencies.append((arrived_ns - int(stamp)) / 1e6)


def read_latencies(proc: subprocess.Popen[bytes], skip: int) -> list[float]:
    """Arrival minus print time for each line of the process's stdout."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines = StampedLines(skip)
    while chunk := os.read(fd, 65536):
        lines.feed(chunk, time.monotonic_ns())
    return lines.latencies


def bench_latency(lines: int) -> dict[str, Any]:
    script = PRINTER.format(lines=lines)
    skip = 5
    runs: dict[str, Callable[[dict[str, str]], list[str]]] = {
        "trio-bridge run": lambda env: [*TRIO_BRIDGE, "run", "--timeout", "120", "--", PY, "-c", script],
        "direct pipe (baseline)": lambda env: [PY, "-c", script],
    }
    results: dict[str, Any] = {}
    with sandbox() as env:
        for name, argv in runs.items():
            with subprocess.Popen(argv(env), env=env, stdout=subprocess.PIPE) as proc:
                latencies = read_latencies(proc, skip)
                proc.wait(timeout=60)
            results[name] = summary(latencies)
    p50 = results["trio-bridge run"]["median_ms"]
    return {
        "lines": results,
        "target": "p50 latency from a line printed in the session to run's stdout < 2 ms",
        "met": p50 < 2,
    }


@contextmanager
def daemon_running(env: dict[str, str], *args: str) -> Iterator[None]:
    """A daemon in the sandbox (so that `run` goes through it), stopped at the end."""
    proc = subprocess.Popen([*TRIO_BRIDGE, "daemon", *args], env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        while b"ready" not in (line := proc.stderr.readline()):
            if not line:
                raise RuntimeError("the daemon did not start")
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def ctrl_c_ms(mode: list[str], env: dict[str, str]) -> float:
    """From SIGINT to exit of `run` while its command runs (the command stopped first)."""
    argv = [*TRIO_BRIDGE, "run", *mode, "--", "sh", "-c", "echo ready; exec sleep 100"]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        proc.stdout.readline()
        start = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 130, code
    return (time.perf_counter() - start) * 1000


def bench_stop(rounds: int) -> dict[str, Any]:
    """Ctrl-C and --timeout of `run`, through the daemon and embedded, interleaved. The
    overshoot of ``--timeout 1`` is its wall time minus 1 s minus the wall time of ``run -- true``
    in the same mode (start-up and session creation are measured elsewhere): only the gap
    between the modes is meaningful (a teardown that ``true`` has and a timeout skips can make
    one mode's figure negative)."""
    modes = {"embedded": ["--embedded"], "daemon": []}
    ctrl_c: dict[str, list[float]] = {name: [] for name in modes}
    overshoot: dict[str, list[float]] = {name: [] for name in modes}
    with sandbox() as env, daemon_running(env):
        for argv in ([*TRIO_BRIDGE, "run", *m, "--", "true"] for m in modes.values()):
            wall_ms(argv, env)  # warm up
        for _ in range(rounds):
            for name, mode in modes.items():
                ctrl_c[name].append(ctrl_c_ms(mode, env))
                base = wall_ms([*TRIO_BRIDGE, "run", *mode, "--", "true"], env)
                start = time.perf_counter()
                code = subprocess.run(
                    [*TRIO_BRIDGE, "run", *mode, "--timeout", "1", "--", "sleep", "100"],
                    env=env, capture_output=True, check=False,
                ).returncode  # fmt: skip
                assert code == 124, code
                overshoot[name].append((time.perf_counter() - start) * 1000 - 1000 - base)
    results: dict[str, Any] = {
        "ctrl_c_ms": {name: summary(values) for name, values in ctrl_c.items()},
        "timeout_overshoot_ms": {name: summary(values) for name, values in overshoot.items()},
    }
    ctrl_c_gap = results["ctrl_c_ms"]["daemon"]["median_ms"] - results["ctrl_c_ms"]["embedded"]["median_ms"]
    timeout_gap = (
        results["timeout_overshoot_ms"]["daemon"]["median_ms"]
        - results["timeout_overshoot_ms"]["embedded"]["median_ms"]
    )
    results.update(
        ctrl_c_gap_ms=round(ctrl_c_gap, 2),
        timeout_gap_ms=round(timeout_gap, 2),
        target="through the daemon, Ctrl-C and --timeout stop within 200 ms of --embedded (medians)",
        met=ctrl_c_gap <= 200 and timeout_gap <= 200,
    )
    return results


def wall_ms_stdin(argv: list[str], env: dict[str, str], stdin: Path) -> float:
    with stdin.open("rb") as f:
        start = time.perf_counter()
        subprocess.run(
            argv, env=env, stdin=f, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return (time.perf_counter() - start) * 1000


def bench_stdin(rounds: int, size: int = 10 << 20) -> dict[str, Any]:
    """`run -- wc -c < FILE` (``size`` bytes) embedded (our FIFO, fed by this process) and through
    the daemon's API (its stdin pipe, ``PUT .../stdin``) on its unix socket and over TCP,
    interleaved; each minus the same run with an empty stdin gives the time the bytes took."""
    with socket.socket() as probe:  # (a free loopback port; the daemon binds it at once)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = uuid.uuid4().hex
    modes = {
        "embedded (local FIFO)": ["--embedded"],
        "daemon, unix socket (API)": [],
        "daemon, TCP --url (API)": ["--url", f"http://127.0.0.1:{port}"],
    }
    data: dict[str, list[float]] = {name: [] for name in modes}
    empty: dict[str, list[float]] = {name: [] for name in modes}
    with sandbox() as env, tempfile.TemporaryDirectory() as tmp:
        env["TRIO_BRIDGE_TOKEN"] = token
        big, null = Path(tmp) / "big", Path("/dev/null")
        big.write_bytes(os.urandom(size))
        with daemon_running(env, "--bind", f"127.0.0.1:{port}"):
            for mode in modes.values():
                wall_ms_stdin([*TRIO_BRIDGE, "run", *mode, "--", "wc", "-c"], env, null)  # warm up
            for _ in range(rounds):
                for name, mode in modes.items():
                    argv = [*TRIO_BRIDGE, "run", *mode, "--", "wc", "-c"]
                    data[name].append(wall_ms_stdin(argv, env, big))
                    empty[name].append(wall_ms_stdin(argv, env, null))
    results: dict[str, Any] = {"size_bytes": size, "rounds": rounds, "modes": {}}
    for name in modes:
        transfer = statistics.median(data[name]) - statistics.median(empty[name])
        results["modes"][name] = {
            "wall_ms": summary(data[name]),
            "empty_stdin_ms": summary(empty[name]),
            "transfer_ms": round(transfer, 1),
            "mib_per_s": round(size / (1 << 20) / (transfer / 1000), 1) if transfer > 0 else None,
        }
    return results


def run(quick: bool) -> dict[str, Any]:
    return {
        "startup": bench_startup(rounds=5 if quick else 20),
        "output_latency": bench_latency(lines=50 if quick else 200),
        "stop": bench_stop(rounds=3 if quick else 10),
        # (10 MiB is within the runs' noise: 100 MiB for the full run)
        "stdin": bench_stdin(rounds=2, size=10 << 20) if quick else bench_stdin(rounds=3, size=100 << 20),
    }


def markdown(results: dict[str, Any]) -> str:
    out = ["## `trio-bridge run`", "", "### Start-up wall time (interleaved rounds)", ""]
    out += ["| command | median ms | p90 ms |", "|---|---|---|"]
    startup = results["startup"]
    for name, s in startup["commands"].items():
        out.append(f"| `{name}` | {s['median_ms']} | {s['p90_ms']} |")
    verdict = "met" if startup["met"] else "MISSED"
    out += [
        "",
        f"run minus floor: **{startup['run_minus_floor_ms']} ms** ({startup['target']}: {verdict})",
        "",
    ]
    out += ["### Output latency, line printed -> line on stdout", ""]
    out += ["| path | n | p50 ms | p90 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    latency = results["output_latency"]
    for name, s in latency["lines"].items():
        out.append(
            f"| {name} | {s['n']} | {s['median_ms']} | {s['p90_ms']} | {s['p99_ms']} | {s['max_ms']} |"
        )
    verdict = "met" if latency["met"] else "MISSED"
    out += ["", f"{latency['target']}: {verdict}", ""]
    stop = results["stop"]
    out += ["### Stopping: Ctrl-C and --timeout, embedded and through the daemon", ""]
    out += ["| measure | mode | n | median ms | p90 ms | max ms |", "|---|---|---|---|---|---|"]
    for measure in ("ctrl_c_ms", "timeout_overshoot_ms"):
        for mode, s in stop[measure].items():
            row = [measure, mode, s["n"], s["median_ms"], s["p90_ms"], s["max_ms"]]
            out.append("| " + " | ".join(str(cell) for cell in row) + " |")
    verdict = "met" if stop["met"] else "MISSED"
    out += [
        "",
        f"daemon minus embedded: Ctrl-C **{stop['ctrl_c_gap_ms']} ms**, --timeout "
        f"**{stop['timeout_gap_ms']} ms** ({stop['target']}: {verdict})",
        "",
    ]
    stdin = results["stdin"]
    out += [
        f"### stdin: `run -- wc -c < FILE`, {stdin['size_bytes'] >> 20} MiB, {stdin['rounds']} rounds",
        "",
    ]
    out += ["| mode | wall median ms | empty stdin ms | transfer ms | MiB/s |", "|---|---|---|---|---|"]
    for mode, m in stdin["modes"].items():
        row = [
            mode,
            m["wall_ms"]["median_ms"],
            m["empty_stdin_ms"]["median_ms"],
            m["transfer_ms"],
            m["mib_per_s"],
        ]
        out.append("| " + " | ".join(str(cell) for cell in row) + " |")
    out.append("")
    return "\n".join(out)
