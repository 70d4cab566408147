"""Benchmarks of `trio-bridge run`: start-up wall time and output latency, with side-by-side baselines.

Every figure is compared with a baseline measured in the same run, interleaved, because the
machines are shared and noisy: only the ratios and differences are meaningful.
"""

from __future__ import annotations

import os
import shutil
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


def run(quick: bool) -> dict[str, Any]:
    return {
        "startup": bench_startup(rounds=5 if quick else 20),
        "output_latency": bench_latency(lines=50 if quick else 200),
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
    return "\n".join(out)
