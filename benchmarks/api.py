"""Benchmarks of the HTTP API and the CLI client, each beside a baseline measured in the same run.

- Load: requests/s and latency of ``GET /v1/sessions`` (50 sessions) from wrk in its own process,
  beside a bare quart-trio route on the same server stack (same hypercorn settings) serving a
  JSON body of the same size. Target: at least 80% of the bare route's requests/s.
- Output latency, line printed in a session -> an SSE client and a WebSocket client.
  Target: p50 under 3 ms.
- ``trio-bridge ls`` wall time against a daemon with 50 sessions, beside the floor
  ``python3 -c 'import httpx'``. Target: at most 100 ms above the floor.

Everything talks to 127.0.0.1 or the daemon's unix socket; every process started here is
stopped by its PID, and the private tmux server is killed at the end.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket

from .run_cli import PRINTER, PY, TRIO_BRIDGE, StampedLines, sandbox, summary, wall_ms

REPO = Path(__file__).resolve().parent.parent

BARE_SERVER = textwrap.dedent(
    """
    import sys, trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from quart import Response
    from quart_trio import QuartTrio

    body = open(sys.argv[1], "rb").read()
    app = QuartTrio("bare")

    @app.get("/v1/sessions")
    async def sessions():
        return Response(body, content_type="application/json")

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.include_server_header = False
    config.keep_alive_timeout = 30

    async def main():
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, config)
            print(binds[0], flush=True)

    trio.run(main)
    """
)


def _start(
    argv: list[str], env: dict[str, str], pattern: str, stream: str = "stderr"
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server process; return it and the first ``http://127.0.0.1:PORT`` it prints."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    source = proc.stderr if stream == "stderr" else proc.stdout
    assert source is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = source.readline().decode()
        if not line:
            break
        if found := re.search(pattern, line):
            return proc, found.group(0)
    _stop(proc)
    raise RuntimeError(f"{argv[:3]} did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _wrk() -> str | None:
    if shutil.which("wrk") is None:
        subprocess.run(
            [str(REPO / "scripts/ensure-system-packages"), "wrk:wrk"], capture_output=True, check=False
        )
    return shutil.which("wrk")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


#: the daemon always wants a bearer token on TCP (issue 11); the bare route gets it too (same bytes)
TOKEN = secrets.token_urlsafe(24)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _wrk_run(wrk: str, url: str, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [wrk, "-t1", "-c16", f"-d{seconds}s", "--latency", "-H", f"Authorization: Bearer {TOKEN}", url],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout  # fmt: skip
    figures = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])}  # type: ignore[index]
    for label, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        figures[key] = round(float(value) * _UNITS[unit], 2)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non_2xx"] = int(errors[1]) if errors else 0
    return figures


def _httpx_run(url: str, seconds: int) -> dict[str, float]:
    """A bounded load without wrk: 8 threads of sequential requests (client-bound: see the docs)."""
    import concurrent.futures

    deadline = time.monotonic() + seconds
    latencies: list[float] = []

    def worker() -> list[float]:
        mine = []
        with httpx.Client(headers=AUTH) as client:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                client.get(url).raise_for_status()
                mine.append((time.perf_counter() - start) * 1000)
        return mine

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for result in pool.map(lambda _: worker(), range(8)):
            latencies.extend(result)
    stats = summary(latencies)
    return {
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": stats["median_ms"],
        "p99_ms": stats["p99_ms"],
        "non_2xx": 0,
    }


def _sse_latencies(url: str, session_id: str, skip: int, computer: str | None = None) -> list[float]:
    lines = StampedLines(skip)
    with (
        httpx.Client(base_url=url, headers=AUTH, timeout=httpx.Timeout(60, connect=5)) as client,
        client.stream(
            "GET", f"/v1/sessions/{session_id}/stream", params={"computer": computer} if computer else {}
        ) as response,
    ):
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            arrived = time.monotonic_ns()
            event = json.loads(line[6:])
            if "data" not in event:
                break  # the end event
            lines.feed(event["data"].encode(), arrived)
    return lines.latencies


async def _ws_latencies(url: str, session_id: str, skip: int) -> list[float]:
    lines = StampedLines(skip)
    ws_url = "ws" + url.removeprefix("http") + f"/v1/sessions/{session_id}/ws"
    with trio.fail_after(120):
        async with trio_websocket.open_websocket_url(
            ws_url, extra_headers=[(k.encode(), v.encode()) for k, v in AUTH.items()]
        ) as ws:
            while True:
                message = await ws.get_message()
                arrived = time.monotonic_ns()
                if isinstance(message, str):
                    if json.loads(message).get("type") == "end":
                        break
                    continue
                lines.feed(message, arrived)
    return lines.latencies


def run(quick: bool) -> dict[str, Any]:
    seconds = 2 if quick else 5
    rounds = 2 if quick else 3
    lines = 60 if quick else 300
    ls_rounds = 5 if quick else 15
    results: dict[str, Any] = {}
    with sandbox() as env:
        env["TRIO_BRIDGE_TOKEN"] = TOKEN
        daemon, url = _start(
            [*TRIO_BRIDGE, "daemon", "--bind", "127.0.0.1:0"], env, r"http://127\.0\.0\.1:\d+"
        )
        bare = None
        try:
            with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
                ids = [
                    client.post("/v1/sessions", json={"command": ["sleep", "600"], "cwd": "/"}).json()["id"]
                    for _ in range(50)
                ]
                body_path = Path(env["XDG_STATE_HOME"]) / "bare-body.json"
                body_path.write_bytes(client.get("/v1/sessions").content)
                bare, bare_url = _start(
                    [PY, "-c", BARE_SERVER, str(body_path)], env, r"http://127\.0\.0\.1:\d+", "stdout"
                )

                # 1. load, alternating the two servers so noise hits both alike
                wrk = _wrk()
                tool = "wrk -t1 -c16" if wrk else "httpx, 8 threads (wrk not available)"
                runs: dict[str, list[dict[str, float]]] = {
                    "trio-bridge GET /v1/sessions": [],
                    "bare quart-trio route": [],
                }
                for _ in range(rounds):
                    for name, base in (
                        ("bare quart-trio route", bare_url),
                        ("trio-bridge GET /v1/sessions", url),
                    ):
                        target = base + "/v1/sessions"
                        runs[name].append(
                            _wrk_run(wrk, target, seconds) if wrk else _httpx_run(target, seconds)
                        )
                load = {
                    name: {
                        "requests_per_s": round(
                            sorted(r["requests_per_s"] for r in values)[len(values) // 2], 1
                        ),
                        "p50_ms": sorted(r["p50_ms"] for r in values)[len(values) // 2],
                        "p99_ms": sorted(r["p99_ms"] for r in values)[len(values) // 2],
                        "non_2xx": sum(r["non_2xx"] for r in values),
                        "runs": values,
                    }
                    for name, values in runs.items()
                }
                ratio = (
                    load["trio-bridge GET /v1/sessions"]["requests_per_s"]
                    / load["bare quart-trio route"]["requests_per_s"]
                )
                results["load"] = {
                    "tool": tool, "seconds_per_run": seconds, "rounds": rounds, "servers": load,
                    "ratio": round(ratio, 3), "body_bytes": body_path.stat().st_size,
                    "target": "trio-bridge >= 80% of the bare route's requests/s", "met": ratio >= 0.8,
                }  # fmt: skip

                # 2. output latency to SSE and WebSocket clients
                script = PRINTER.format(lines=lines)
                latency: dict[str, Any] = {}
                for name in ("SSE", "WebSocket"):
                    session = client.post(
                        "/v1/sessions",
                        json={"command": [PY, "-c", "import time; time.sleep(0.5)\n" + script], "cwd": "/"},
                    ).json()
                    if name == "SSE":
                        values = _sse_latencies(url, session["id"], skip=5)
                    else:
                        values = trio.run(_ws_latencies, url, session["id"], 5)
                    latency[name] = summary(values)
                results["latency"] = {
                    "clients": latency,
                    "target": "p50 < 3 ms for both",
                    "met": all(v["median_ms"] < 3 for v in latency.values()),
                }

                # 3. `trio-bridge ls` beside the floor, interleaved
                commands = {
                    "trio-bridge ls": [*TRIO_BRIDGE, "ls"],
                    "python3 -c 'import httpx' (floor)": [PY, "-c", "import httpx"],
                }
                for argv in commands.values():
                    wall_ms(argv, env)
                times: dict[str, list[float]] = {name: [] for name in commands}
                for _ in range(ls_rounds):
                    for name, argv in commands.items():
                        times[name].append(wall_ms(argv, env))
                ls = {name: summary(values) for name, values in times.items()}
                over = (
                    ls["trio-bridge ls"]["median_ms"] - ls["python3 -c 'import httpx' (floor)"]["median_ms"]
                )
                results["ls"] = {
                    "commands": ls, "ls_minus_floor_ms": round(over, 2),
                    "target": "median(ls) - median(import httpx) <= 100 ms", "met": over <= 100,
                }  # fmt: skip
                for session_id in ids:
                    client.delete(f"/v1/sessions/{session_id}")
        finally:
            if bare is not None:
                _stop(bare)
            _stop(daemon)
    return results


def markdown(results: dict[str, Any]) -> str:
    load = results["load"]
    out = ["## The HTTP API and the CLI client\n"]
    out.append(
        f"### Load: GET /v1/sessions with 50 sessions ({load['tool']}, {load['rounds']} x "
        f"{load['seconds_per_run']} s per server, alternating; body {load['body_bytes']} bytes)\n"
    )
    out.append("| server | requests/s (median run) | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|")
    for name, figures in load["servers"].items():
        out.append(
            f"| {name} | {figures['requests_per_s']} | {figures['p50_ms']} | {figures['p99_ms']} "
            f"| {figures['non_2xx']} |"
        )
    out.append(
        f"\nRatio {load['ratio']:.2f}. Target: {load['target']}: **{'met' if load['met'] else 'NOT met'}**.\n"
    )
    latency = results["latency"]
    out.append("### Output latency: line printed in a session -> API client\n")
    out.append("| client | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|")
    for name, s in latency["clients"].items():
        out.append(
            f"| {name} | {s['n']} | {s['median_ms']} | {s['p90_ms']} | {s['p99_ms']} | {s['max_ms']} |"
        )
    out.append(
        "\nThe printer stamps each line with CLOCK_MONOTONIC just before writing it; the client "
        "stamps it on arrival (same machine, same clock). "
        f"Target: {latency['target']}: **{'met' if latency['met'] else 'NOT met'}**.\n"
    )
    ls = results["ls"]
    out.append("### `trio-bridge ls` (50 sessions) beside `python3 -c 'import httpx'`\n")
    out.append("| command | n | median ms | p90 ms | max ms |\n|---|---|---|---|---|")
    for name, s in ls["commands"].items():
        out.append(f"| {name} | {s['n']} | {s['median_ms']} | {s['p90_ms']} | {s['max_ms']} |")
    out.append(
        f"\nls - floor = {ls['ls_minus_floor_ms']} ms. "
        f"Target: {ls['target']}: **{'met' if ls['met'] else 'NOT met'}**.\n"
    )
    return "\n".join(out)
