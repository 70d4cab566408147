"""Benchmarks of the web dashboard, in headless Chromium (Debian's, driven by playwright) against a
daemon on loopback (``--bind 127.0.0.1:PORT --web``).

- First paint of the list: from navigating to ``/`` (logged in) until the 20 sessions' rows are
  in the page. Target: median under 500 ms.
- Output latency: a line printed in a session (stamped with the wall clock just before it is
  written) -> parsed into the browser terminal's buffer (xterm.js ``onWriteParsed``, stamped with
  the page's wall clock; it is drawn on the next animation frame). Target: p50 under 50 ms.
- The daemon's CPU time while 20 clients follow one session's flood (8 MiB), over the
  dashboard's terminal protocol (the WebSocket at ``offset=end``, binary output: what each open
  terminal receives) beside 20 SSE readers. The clients are Python, not 20 Chromium tabs: the
  browser's rendering would compete with the daemon for the machine's 2 cores and blur the
  daemon's figure, which is what this measures. Target: WebSocket at most 110% of SSE.

Every process started here is stopped by its PID; the private tmux server is killed at the end.

Measured 2026-12-05 (2 shared cores, Chromium 156, ``python -m benchmarks --only web``): first
paint p50 171 ms (p90 197); output latency p50 2.2 ms (p90 4.4, max 13); daemon CPU for the
flood 1.16 s with 20 WebSockets, 4.42 s with 20 SSE readers (ratio 0.26).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket

from .api import _start, _stop
from .run_cli import PY, TRIO_BRIDGE, sandbox, summary

CHROMIUM = os.environ.get("TRIO_BRIDGE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]  # fmt: skip
WALL_PRINTER = """
import sys, time
time.sleep(1.0)
for i in range({lines}):
    sys.stdout.write(f"{{time.time_ns()}} {{i}}\\n")
    sys.stdout.flush()
    time.sleep(0.02)
time.sleep(30)
"""
FLOOD_BYTES = 8 << 20
FLOOD = """
import os, sys, time
while not os.path.exists({go!r}):
    time.sleep(0.02)
line = b"x" * 99 + b"\\n"
out = sys.stdout.buffer
for _ in range({lines}):
    out.write(line)
out.write(b"FLOOD-END\\n")
out.flush()
time.sleep(60)
"""
#: collects, in the page, when each stamped line was parsed into the terminal's buffer
COLLECT = """() => {
    const term = window.trioBridgeTerminal;
    window.benchArrivals = [];
    const seen = new Set();
    term.onWriteParsed(() => {
        const now = performance.timeOrigin + performance.now();
        const buffer = term.buffer.active;
        const last = buffer.baseY + buffer.cursorY;
        for (let y = Math.max(0, last - 40); y <= last; y++) {
            const text = buffer.getLine(y)?.translateToString(true) || "";
            const match = text.match(/^(\\d{19}) (\\d+)$/);
            if (match && !seen.has(match[2])) {
                seen.add(match[2]);
                window.benchArrivals.push([match[1], now]);
            }
        }
    });
}"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _login_link(env: dict[str, str]) -> str:
    out = subprocess.run([*TRIO_BRIDGE, "web"], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[-1]


def _first_paint(page: Any, base: str, rounds: int, rows: int) -> list[float]:
    times = []
    for _ in range(rounds + 1):
        start = time.perf_counter()
        page.goto(base + "/?r=" + str(time.monotonic_ns()))
        page.wait_for_function(f"() => document.querySelectorAll('#sessions tbody tr').length >= {rows}")
        times.append((time.perf_counter() - start) * 1000)
    return times[1:]  # the first load fills the browser's cache


def _terminal_latency(page: Any, base: str, client: httpx.Client, lines: int) -> list[float]:
    script = WALL_PRINTER.format(lines=lines)
    session = client.post("/v1/sessions", json={"command": [PY, "-c", script], "cwd": "/"}).json()
    page.goto(f"{base}/#/s/{session['id']}")
    page.wait_for_function("() => window.trioBridgeTerminal !== undefined")
    page.evaluate(COLLECT)
    enough = f"() => window.benchArrivals.length >= {lines}"
    page.wait_for_function(enough, timeout=(lines * 0.02 + 30) * 1000)
    arrivals = page.evaluate("() => window.benchArrivals")
    client.delete(f"/v1/sessions/{session['id']}")
    skip = 5  # warm-up
    return [arrived - int(stamp) / 1e6 for stamp, arrived in arrivals[skip:]]


async def _follow_ws(url: str, headers: list[tuple[str, str]], session_id: str, *, task_status: Any) -> None:
    ws_url = "ws" + url.removeprefix("http") + f"/v1/sessions/{session_id}/ws?offset=end"
    async with trio_websocket.open_websocket_url(ws_url, extra_headers=headers) as ws:
        await ws.get_message()  # hello
        task_status.started()
        tail = b""
        while b"FLOOD-END" not in tail:
            message = await ws.get_message()
            if isinstance(message, bytes):
                tail = (tail + message)[-64:]


async def _follow_sse(client: httpx.AsyncClient, session_id: str, start: int, *, task_status: Any) -> None:
    path = f"/v1/sessions/{session_id}/stream"
    async with client.stream("GET", path, params={"offset": start}) as response:
        task_status.started()
        tail = ""
        async for text in response.aiter_text():
            tail = (tail + text)[-64:]
            if "FLOOD-END" in tail:
                return


async def _flood_cpu(url: str, token: str, daemon_pid: int, kind: str, clients: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    go = Path(os.environ.get("TMPDIR", "/tmp")) / f"tb-bench-go-{os.getpid()}-{kind}"
    go.unlink(missing_ok=True)
    script = FLOOD.format(go=str(go), lines=FLOOD_BYTES // 100)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        session = (await client.post("/v1/sessions", json={"command": [PY, "-c", script], "cwd": "/"})).json()
        await trio.sleep(0.5)
        start = int((await client.get(f"/v1/sessions/{session['id']}/output")).headers["X-Output-End"])
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for _ in range(clients):
                    if kind == "WebSocket":
                        await nursery.start(_follow_ws, url, list(headers.items()), session["id"])
                    else:
                        await nursery.start(_follow_sse, client, session["id"], start)
                await trio.sleep(0.3)
                before = _cpu_seconds(daemon_pid)
                began = time.perf_counter()
                go.touch()
        wall = time.perf_counter() - began
        cpu = _cpu_seconds(daemon_pid) - before
        await client.delete(f"/v1/sessions/{session['id']}")
    go.unlink(missing_ok=True)
    return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3)}


def run(quick: bool) -> dict[str, Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed (pip install -e '.[test]')"}
    if not os.access(CHROMIUM, os.X_OK):
        return {"skipped": f"no Chromium at {CHROMIUM} (apt-get install chromium)"}

    rounds = 5 if quick else 15
    lines = 60 if quick else 200
    cpu_rounds = 1 if quick else 3
    results: dict[str, Any] = {}
    with sandbox() as env:
        port = _free_port()
        daemon, url = _start(
            [*TRIO_BRIDGE, "daemon", "--bind", f"127.0.0.1:{port}", "--web"], env, r"http://127\.0\.0\.1:\d+"
        )
        try:
            token = (Path(env["XDG_STATE_HOME"]) / "trio-bridge" / "api.token").read_text().strip()
            bearer = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=bearer, timeout=30) as client, sync_playwright() as pw:
                ids = [
                    client.post("/v1/sessions", json={"command": ["sleep", "600"], "cwd": "/"}).json()["id"]
                    for _ in range(20)
                ]
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_context().new_page()
                    page.goto(_login_link(env))
                    paint = summary(_first_paint(page, url, rounds, len(ids)))
                    results["first_paint"] = {
                        "rows": len(ids), **paint,
                        "target": "median < 500 ms", "met": paint["median_ms"] < 500,
                    }  # fmt: skip
                    latency = summary(_terminal_latency(page, url, client, lines))
                    results["terminal_latency"] = {
                        **latency, "target": "p50 < 50 ms", "met": latency["median_ms"] < 50
                    }  # fmt: skip
                finally:
                    browser.close()
                for session_id in ids:
                    client.delete(f"/v1/sessions/{session_id}")
            runs: dict[str, list[dict[str, float]]] = {"WebSocket": [], "SSE": []}
            for _ in range(cpu_rounds):
                for kind in ("SSE", "WebSocket"):
                    runs[kind].append(trio.run(_flood_cpu, url, token, daemon.pid, kind, 20))
            cpu = {kind: sorted(r["cpu_s"] for r in rs)[len(rs) // 2] for kind, rs in runs.items()}
            ratio = cpu["WebSocket"] / cpu["SSE"] if cpu["SSE"] else float("inf")
            results["flood_cpu"] = {
                "clients": 20, "bytes": FLOOD_BYTES, "rounds": cpu_rounds, "runs": runs,
                "median_cpu_s": cpu, "ratio": round(ratio, 3),
                "target": "WebSocket terminals <= 110% of SSE readers' daemon CPU", "met": ratio <= 1.10,
            }  # fmt: skip
        finally:
            _stop(daemon)
    return results


def markdown(results: dict[str, Any]) -> str:
    out = ["## The web dashboard (headless Chromium)\n"]
    if "skipped" in results:
        return "\n".join([*out, f"Not measured: {results['skipped']}.\n"])
    paint = results["first_paint"]
    out.append("| figure | n | p50 ms | p90 ms | max ms | target | met |\n|---|---|---|---|---|---|---|")
    out.append(
        f"| first paint of the list ({paint['rows']} sessions) | {paint['n']} | {paint['median_ms']} "
        f"| {paint['p90_ms']} | {paint['max_ms']} | {paint['target']} | {'yes' if paint['met'] else 'NO'} |"
    )
    lat = results["terminal_latency"]
    out.append(
        f"| output latency, session -> browser terminal | {lat['n']} | {lat['median_ms']} "
        f"| {lat['p90_ms']} | {lat['max_ms']} | {lat['target']} | {'yes' if lat['met'] else 'NO'} |"
    )
    cpu = results["flood_cpu"]
    out.append(
        f"\n### Daemon CPU, {cpu['clients']} clients following a {cpu['bytes'] >> 20} MiB flood "
        f"(median of {cpu['rounds']})\n"
    )
    out.append("| clients | daemon CPU s |\n|---|---|")
    for kind, seconds in cpu["median_cpu_s"].items():
        out.append(f"| {cpu['clients']} x {kind} | {seconds} |")
    out.append(
        f"\nRatio {cpu['ratio']:.2f}. Target: {cpu['target']}: **{'met' if cpu['met'] else 'NOT met'}**.\n"
    )
    return "\n".join(out)
