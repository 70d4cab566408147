"""Benchmarks of the daemon's core (session manager + output feeds), run in-process.

- Output latency, a line printed in a session to a subscribed reader, side by side with the
  ancestor's way: polling ``capture-pane`` every second.
- Scale and idle cost: time to create N sessions, the memory of what is kept per session, CPU
  and process spawns while N sessions sit idle.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import trio

from trio_bridge.config import resolve_settings
from trio_bridge.output import Chunk
from trio_bridge.sessions import SessionManager, open_session_store
from trio_bridge.tmux import TmuxServer

from .run_cli import percentile, sandbox

PY = sys.executable
PRINTER = """
import sys, time
for i in range({lines}):
    sys.stdout.write(f"{{time.monotonic_ns()}} {{i}}\\n")
    sys.stdout.flush()
    time.sleep({interval})
"""


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
    }


async def _collect_latencies(
    manager: SessionManager, session_id: str, into: list[float], stop_after: int | None = None
) -> None:
    """Append, for each ``<monotonic_ns> ...`` line a session prints, its arrival delay in ms."""
    buffer = b""
    async with aclosing(manager.feed(session_id).follow(0)) as chunks:
        async for item in chunks:
            if not isinstance(item, Chunk):
                continue
            arrived = time.monotonic_ns()
            buffer += item.data
            *complete, buffer = buffer.split(b"\r\n")
            for line in complete:
                stamp = line.split(b" ", 1)[0]
                if stamp.isdigit():
                    into.append((arrived - int(stamp)) / 1e6)
            if stop_after is not None and len(into) >= stop_after:
                return


async def _reader_latencies(manager: SessionManager, lines: int) -> list[float]:
    record = await manager.create([PY, "-c", PRINTER.format(lines=lines, interval=0.01)], cwd=Path("/tmp"))
    latencies: list[float] = []
    await _collect_latencies(manager, record.id, latencies, stop_after=lines)
    return latencies[5:]


async def _polling_latencies(server: TmuxServer, manager: SessionManager, lines: int) -> list[float]:
    """The ancestor's loop: capture-pane (a subprocess) every 1 s, look for new lines."""
    record = await manager.create([PY, "-c", PRINTER.format(lines=lines, interval=0.1)], cwd=Path("/tmp"))
    seen: set[bytes] = set()
    latencies: list[float] = []
    deadline = trio.current_time() + lines * 0.1 + 3
    while len(seen) < lines and trio.current_time() < deadline:
        await trio.sleep(1.0)
        result = await server.run("capture-pane", "-p", "-S", "-1000", "-t", f"={record.tmux_name}:")
        now = time.monotonic_ns()
        for line in result.stdout.splitlines():
            stamp = line.split(b" ", 1)[0]
            if stamp.isdigit() and line not in seen:
                seen.add(line)
                latencies.append((now - int(stamp)) / 1e6)
    return latencies


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _helper_pids(marker: str) -> list[int]:
    """Processes kept per session: control clients, pipe shells and split, start wrappers."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker.encode() in cmdline and b"sleep" not in cmdline.split(b"\0")[0]:
            pids.append(int(entry))
    return pids


def _last_pid() -> int:
    with open("/proc/loadavg") as f:
        return int(f.read().split()[4])


async def _scale(manager: SessionManager, state: Path, count: int, idle: float) -> dict[str, Any]:
    start = time.perf_counter()
    for _ in range(count):
        await manager.create(["sleep", "3600"], cwd=Path("/tmp"))
    create_s = time.perf_counter() - start
    await trio.sleep(1)
    helpers = _helper_pids(str(state))
    helper_kb = sum(_pss_kb(p) for p in helpers)
    own_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    pid0, t0 = _last_pid(), time.perf_counter()
    await trio.sleep(idle)
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    pid1, t1 = _last_pid(), time.perf_counter()
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return {
        "sessions": count,
        "create_s": round(create_s, 2),
        "create_per_session_ms": round(create_s / count * 1000, 1),
        "helper_processes": len(helpers),
        "helper_pss_mb": round(helper_kb / 1024, 1),
        "daemon_rss_mb": round(own_rss_kb / 1024, 1),
        "total_mb": round((helper_kb + own_rss_kb) / 1024, 1),
        "idle_cpu_percent_of_a_core": round(cpu / (t1 - t0) * 100, 2),
        # PIDs allocated on the whole machine meanwhile: an upper bound on our spawns
        "pids_allocated_per_s_machine_wide": round((pid1 - pid0) / (t1 - t0), 2),
    }


QUIET = """
import sys, time
while True:
    sys.stdout.write(f"{time.monotonic_ns()} quiet\\n")
    sys.stdout.flush()
    time.sleep(0.1)
"""


async def _throughput(manager: SessionManager, flood_lines: int, quiet_sessions: int) -> dict[str, Any]:
    """One session printing flat out while others print a line every 100 ms."""
    quiet_latencies: list[float] = []

    async with trio.open_nursery() as nursery:
        quiet = [await manager.create([PY, "-c", QUIET], cwd=Path("/tmp")) for _ in range(quiet_sessions)]
        for record in quiet:
            nursery.start_soon(_collect_latencies, manager, record.id, quiet_latencies)
        await trio.sleep(0.5)
        quiet_latencies.clear()
        flood = await manager.create(["seq", "1", str(flood_lines)], cwd=Path("/tmp"))
        start = time.perf_counter()
        received = 0
        async with aclosing(manager.feed(flood.id).follow(0)) as chunks:
            async for item in chunks:
                if isinstance(item, Chunk):
                    received += len(item.data)
        elapsed = time.perf_counter() - start
        for record in quiet:
            await manager.kill(record.id)
        nursery.cancel_scope.cancel()
    return {
        "flood_bytes": received,
        "flood_mb_per_s": round(received / elapsed / 1e6, 2),
        "quiet_sessions": quiet_sessions,
        "quiet_latency_during_flood": _summary(quiet_latencies),
        "target": "quiet sessions' p99 < 20 ms while one floods",
        "met": percentile(quiet_latencies, 99) < 20,
    }


async def _shutdown(settings: Any, sessions: int, readers: int) -> dict[str, Any]:
    """Cancel a daemon holding ``sessions`` sessions and ``readers`` live readers."""
    from trio_bridge.daemon import serve_daemon

    async def read_forever(manager: SessionManager, session_id: str) -> None:
        async with aclosing(manager.feed(session_id).follow(0)) as chunks:
            async for _ in chunks:
                pass

    marker = str(settings.state_dir)
    async with trio.open_nursery() as outer:
        manager = (await outer.start(serve_daemon, settings)).manager
        records = [await manager.create(["sleep", "3600"], cwd=Path("/tmp")) for _ in range(sessions)]
        for record in records[:readers]:
            outer.start_soon(read_forever, manager, record.id)
        await trio.sleep(0.5)
        daemon_helpers = len([p for p in _helper_pids(marker) if _is_ours(p)])
        start = time.perf_counter()
        outer.cancel_scope.cancel()
    elapsed = time.perf_counter() - start
    left = [p for p in _helper_pids(marker) if _is_ours(p)]
    return {
        "sessions": sessions,
        "readers": readers,
        "daemon_processes_before": daemon_helpers,
        "shutdown_s": round(elapsed, 3),
        "daemon_processes_left": len(left),
        "sessions_still_running": len([p for p in _helper_pids(marker) if not _is_ours(p)]) // 2,
        "target": "shutdown < 2 s, 0 processes of the daemon left (sessions live on)",
        "met": elapsed < 2 and not left,
    }


def _is_ours(pid: int) -> bool:
    """A process the daemon itself owns (its children: the hub's control client)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
    except OSError:
        return False
    return ppid == os.getpid()


async def _bench(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with sandbox() as env:
        settings = resolve_settings(env).settings
        server = TmuxServer(socket_name=settings.tmux_socket, config_path=settings.state_dir / "tmux.conf")
        try:
            async with (
                open_session_store(settings.state_dir / "sessions.db") as store,
                trio.open_nursery() as nursery,
            ):
                manager = await nursery.start(SessionManager(server, store, settings.state_dir).run)
                pushed = await _reader_latencies(manager, 50 if quick else 200)
                polled = await _polling_latencies(server, manager, 10 if quick else 30)
                results["output_latency"] = {
                    "feed reader (pushed)": _summary(pushed),
                    "capture-pane every 1 s (baseline)": _summary(polled),
                    "target": "reader p50 < 2 ms, p99 < 10 ms",
                    "met": statistics.median(pushed) < 2 and percentile(pushed, 99) < 10,
                }
                results["scale"] = await _scale(manager, settings.state_dir, 20 if quick else 500, 5)
                results["throughput"] = await _throughput(
                    manager, 300_000 if quick else 3_000_000, 5 if quick else 20
                )
                scale = results["scale"]
                scale["target"] = "idle < 1% of a core, 0 spawns/s; memory for 500 sessions < 300 MB"
                per_session_mb = scale["helper_pss_mb"] / scale["sessions"]
                scale["projected_500_sessions_mb"] = round(per_session_mb * 500 + scale["daemon_rss_mb"], 1)
                scale["met"] = (
                    scale["idle_cpu_percent_of_a_core"] < 1 and scale["projected_500_sessions_mb"] < 300
                )
                nursery.cancel_scope.cancel()
            await server.kill_server()
            results["shutdown"] = await _shutdown(settings, 20 if quick else 200, 5 if quick else 50)
        finally:
            await server.kill_server()
    return results


def run(quick: bool) -> dict[str, Any]:
    return trio.run(_bench, quick)


def markdown(results: dict[str, Any]) -> str:
    out = ["## Daemon core (session manager, output feeds)", "", "### Output latency", ""]
    out += ["| path | n | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    latency = results["output_latency"]
    for name in ("feed reader (pushed)", "capture-pane every 1 s (baseline)"):
        s = latency[name]
        out.append(f"| {name} | {s['n']} | {s['p50_ms']} | {s['p99_ms']} | {s['max_ms']} |")
    out += ["", f"{latency['target']}: {'met' if latency['met'] else 'MISSED'}", ""]
    scale = results["scale"]
    out += ["### Scale and idle cost", "", "| measure | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in scale.items() if k not in ("target", "met")]
    out += ["", f"{scale['target']}: {'met' if scale['met'] else 'MISSED'}", ""]
    for title, key in (("Throughput (one flood, quiet sessions)", "throughput"), ("Shutdown", "shutdown")):
        section = results[key]
        out += [f"### {title}", "", "| measure | value |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in section.items() if k not in ("target", "met")]
        out += ["", f"{section['target']}: {'met' if section['met'] else 'MISSED'}", ""]
    return "\n".join(out)
