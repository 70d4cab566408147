"""Benchmarks of the Redis mesh, each beside its local or naive counterpart in the same run.

- Discovery among 1,000,000 unrelated keys (``DEBUG POPULATE``): its wall time, and the longest
  single Redis command it caused (Redis's own SLOWLOG, logging every command), beside what one
  ``KEYS`` costs on the same data (measured here only; trio-bridge never calls it).
  Target: no command over 2 ms during discovery.
- Output latency, a line printed on computer B -> an SSE reader on computer A, beside a reader
  on B itself. Target: p50 under 5 ms.
- Request round trip (the screen of a remote session through A's API), beside the same request
  to B's own API.
- Relay throughput: a flooding session on B read through A, bytes/s, beside reading it on B.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from .api import _sse_latencies, _start, _stop
from .run_cli import PRINTER, PY, TRIO_BRIDGE, sandbox, summary


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _redis_server(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--enable-debug-command", "local",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


async def _discovery(url: str, keys: int) -> dict[str, Any]:
    from trio_bridge.config import load_settings
    from trio_bridge.mesh import open_redis
    from trio_bridge.mesh.computers import Mesh

    async with open_redis(url) as redis:
        await redis.call("DEBUG", "POPULATE", keys, "other")
        settings = load_settings()
        for n in range(5):  # five computers' heartbeats among them
            await redis.call(
                "SET", f"tb:computer:c{n}", f'{{"name": "c{n}", "time": {time.time()}}}', "PX", 60000
            )
        mesh = Mesh(redis, settings, None, "bench")  # type: ignore[arg-type]
        await redis.call("CONFIG", "SET", "slowlog-log-slower-than", 0)
        await redis.call("CONFIG", "SET", "slowlog-max-len", 100000)
        await redis.call("SLOWLOG", "RESET")
        started = time.perf_counter()
        found = await mesh.computers()
        wall = time.perf_counter() - started
        log = await redis.call("SLOWLOG", "GET", 100000)
        # raw SLOWLOG entries: [id, time, duration in µs, [command, args...], client, name]
        commands = [(str(entry[3][0]).upper(), int(entry[2])) for entry in log]
        ours = [(name, us) for name, us in commands if name in ("SCAN", "MGET", "HGETALL")]
        await redis.call("SLOWLOG", "RESET")
        await redis.call("KEYS", "tb:computer:*")  # the ancestor's way, for comparison only
        keys_log = await redis.call("SLOWLOG", "GET", 10)
        keys_us = max(int(e[2]) for e in keys_log if str(e[3][0]).upper() == "KEYS")
        await redis.call("CONFIG", "SET", "slowlog-log-slower-than", 10000)
        await redis.call("FLUSHALL")
    return {
        "keys": keys,
        "computers_found": len(found),
        "discovery_ms": round(wall * 1000, 1),
        "scan_calls": sum(1 for name, _ in ours if name == "SCAN"),
        "longest_command_ms": round(max(us for _, us in ours) / 1000, 3),
        "keys_command_ms": round(keys_us / 1000, 1),
        "target": "no Redis command over 2 ms during discovery",
        "met": max(us for _, us in ours) <= 2000,
    }


def _round_trips(base: str, session_id: str, computer: str | None, n: int) -> list[float]:
    times = []
    params = {"computer": computer} if computer else {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(n):
            start = time.perf_counter()
            client.get(f"/v1/sessions/{session_id}/screen", params=params).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    return times


def _throughput(base: str, session_id: str, computer: str | None) -> float:
    received = 0
    start = time.perf_counter()
    params = {"computer": computer} if computer else {}
    with (
        httpx.Client(base_url=base, timeout=httpx.Timeout(120, connect=5)) as client,
        client.stream("GET", f"/v1/sessions/{session_id}/stream", params=params) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("event: end"):
                break
            if line.startswith("data: "):
                received += len(line)
    return received / (time.perf_counter() - start)


def run(quick: bool) -> dict[str, Any]:
    keys = 100_000 if quick else 1_000_000
    lines = 60 if quick else 300
    results: dict[str, Any] = {}
    with sandbox() as env:
        root = Path(env["XDG_STATE_HOME"]).parent
        redis, url = _redis_server(root)
        daemons = []
        try:
            results["discovery"] = trio.run(_discovery, url, keys)
            urls = {}
            for name in ("alpha", "beta"):
                extra = {
                    "TRIO_BRIDGE_REDIS": url, "TRIO_BRIDGE_COMPUTER": name,
                    "TRIO_BRIDGE_STATE_DIR": str(root / name / "state"),
                    "TRIO_BRIDGE_RUNTIME_DIR": str(root / name / "run"),
                    "TRIO_BRIDGE_TMUX_SOCKET": env["TRIO_BRIDGE_TMUX_SOCKET"] + "-" + name,
                }  # fmt: skip
                proc, api = _start(
                    [*TRIO_BRIDGE, "daemon", "--bind", "127.0.0.1:0"],
                    {**env, **extra},
                    r"http://127\.0\.0\.1:\d+",
                )
                daemons.append((proc, {**env, **extra}))
                urls[name] = api
            with httpx.Client(base_url=urls["beta"], timeout=30) as beta:
                script = PRINTER.format(lines=lines)
                latency = {}
                for label, base, computer in (
                    ("reader on B (local)", urls["beta"], None),
                    ("reader on A (remote)", urls["alpha"], "beta"),
                ):
                    sid = beta.post(
                        "/v1/sessions",
                        json={"command": [PY, "-c", "import time; time.sleep(1)\n" + script], "cwd": "/"},
                    ).json()["id"]
                    latency[label] = summary(_sse_latencies(base, sid, skip=5, computer=computer))
                results["latency"] = {
                    "readers": latency, "target": "remote p50 < 5 ms",
                    "met": latency["reader on A (remote)"]["median_ms"] < 5,
                }  # fmt: skip
                sid = beta.post("/v1/sessions", json={"command": ["sleep", "600"], "cwd": "/"}).json()["id"]
                rounds = 30 if quick else 200
                results["round_trip"] = {
                    "B's API (local)": summary(_round_trips(urls["beta"], sid, None, rounds)),
                    "A's API -> B (remote)": summary(_round_trips(urls["alpha"], sid, "beta", rounds)),
                }
                beta.delete(f"/v1/sessions/{sid}")
                flood = ["seq", "1", str(100_000 if quick else 500_000)]
                rates = {}
                for label, base, computer in (
                    ("on B (local)", urls["beta"], None),
                    ("on A (remote)", urls["alpha"], "beta"),
                ):
                    sid = beta.post(
                        "/v1/sessions",
                        json={"command": ["sh", "-c", "sleep 0.5; exec " + " ".join(flood)], "cwd": "/"},
                    ).json()["id"]
                    rates[label] = round(_throughput(base, sid, computer) / 1e6, 2)
                results["relay"] = {"flood": " ".join(flood), "mb_per_s": rates}
        finally:
            for proc, _ in daemons:
                _stop(proc)
            for _, denv in daemons:
                subprocess.run(
                    ["tmux", "-L", denv["TRIO_BRIDGE_TMUX_SOCKET"], "kill-server"],
                    env=denv,
                    capture_output=True,
                    check=False,
                )
            redis.terminate()
            redis.wait(timeout=10)
    return results


def markdown(results: dict[str, Any]) -> str:
    d = results["discovery"]
    out = ["## The Redis mesh\n", f"### Discovery among {d['keys']:,} unrelated keys\n"]
    out.append("| | value |\n|---|---|")
    out.append(f"| computers found | {d['computers_found']} |")
    out.append(f"| discovery wall time | {d['discovery_ms']} ms ({d['scan_calls']} SCAN calls) |")
    out.append(
        f"| longest single Redis command during discovery (SLOWLOG) | **{d['longest_command_ms']} ms** |"
    )
    out.append(f"| one `KEYS tb:computer:*` on the same data (bench only) | {d['keys_command_ms']} ms |")
    out.append(f"\nTarget: {d['target']}: **{'met' if d['met'] else 'NOT met'}**.\n")
    lat = results["latency"]
    out.append("### Output latency: line printed on B -> SSE reader\n")
    out.append("| reader | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|")
    for name, s in lat["readers"].items():
        out.append(
            f"| {name} | {s['n']} | {s['median_ms']} | {s['p90_ms']} | {s['p99_ms']} | {s['max_ms']} |"
        )
    out.append(f"\nTarget: {lat['target']}: **{'met' if lat['met'] else 'NOT met'}**.\n")
    out.append("### Request round trip: GET screen of a session on B\n")
    out.append("| through | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|")
    for name, s in results["round_trip"].items():
        out.append(
            f"| {name} | {s['n']} | {s['median_ms']} | {s['p90_ms']} | {s['p99_ms']} | {s['max_ms']} |"
        )
    relay = results["relay"]
    out.append(f"\n### Relay throughput: `{relay['flood']}` read as SSE\n")
    out.append("| reader | MB/s (SSE bytes) |\n|---|---|")
    for name, rate in relay["mb_per_s"].items():
        out.append(f"| {name} | {rate} |")
    return "\n".join(out) + "\n"
