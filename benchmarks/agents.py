"""Benchmark: an agent's hook call -> the agent's state change visible on ``GET /v1/events``.

An agent's hook configuration runs ``python -I trio_bridge/hook.py EVENT`` (see
``trio_bridge.agents.profiles.hook_command``) with the event's JSON on stdin. Here the benchmark
plays the agent: it stamps the clock, runs exactly that command (so the hook's own start-up
counts), and stamps again when the state change arrives on an SSE client of ``/v1/events``; the
events alternate between ``UserPromptSubmit`` (working) and ``Stop`` (idle), so each one is a
change. Beside it, interleaved, the floor: the same interpreter running ``-c pass``.
Target: p50(hook -> event) at most 30 ms above p50(``python3 -c pass``).

Everything talks to the daemon's unix socket; the daemon is stopped by its PID and its private
tmux server is killed at the end (the sandbox).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from typing import Any

import httpx

from trio_bridge.agents.profiles import hook_command

from .api import _start, _stop
from .run_cli import PY, TRIO_BRIDGE, sandbox, summary, wall_ms


def _events(socket_path: str, arrived: queue.Queue[tuple[float, str]], stop: threading.Event) -> None:
    """Read /v1/events; put (arrival time, agent state) of each ``agent`` event."""
    transport = httpx.HTTPTransport(uds=socket_path)
    with (
        httpx.Client(transport=transport, base_url="http://trio-bridge", timeout=None) as client,
        client.stream("GET", "/v1/events") as response,
    ):
        arrived.put((time.monotonic(), "subscribed"))
        kind = ""
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "agent":
                arrived.put((time.monotonic(), json.loads(line[6:])["agent"]))


def run(quick: bool) -> dict[str, Any]:
    rounds = 20 if quick else 100
    with sandbox() as env:
        daemon, _ = _start([*TRIO_BRIDGE, "daemon", "--bind", "127.0.0.1:0"], env, r"http://127\.0\.0\.1:\d+")
        try:
            socket_path = str(_api_socket(env))
            transport = httpx.HTTPTransport(uds=socket_path)
            with httpx.Client(transport=transport, base_url="http://trio-bridge", timeout=30) as client:
                session = client.post("/v1/sessions", json={"command": ["sleep", "600"], "cwd": "/"}).json()
                arrived: queue.Queue[tuple[float, str]] = queue.Queue()
                stop = threading.Event()
                reader = threading.Thread(target=_events, args=(socket_path, arrived, stop), daemon=True)
                reader.start()
                arrived.get(timeout=10)  # subscribed
                hook_env = {
                    "TRIO_BRIDGE_SESSION_ID": session["id"], "TRIO_BRIDGE_API_SOCKET": socket_path,
                    "PATH": env["PATH"],
                }  # fmt: skip
                command = hook_command()
                floor = [PY, "-c", "pass"]
                wall_ms(floor, env)
                latencies, floors = [], []
                for index in range(rounds):
                    event, expected = ("UserPromptSubmit", "working") if index % 2 == 0 else ("Stop", "idle")
                    payload = json.dumps({"session_id": "bench", "prompt": "p", "hook_event_name": event})
                    started = time.monotonic()
                    subprocess.run([*command, event], input=payload.encode(), env=hook_env, check=True)
                    at, state = arrived.get(timeout=10)
                    assert state == expected, (state, expected)
                    latencies.append((at - started) * 1000)
                    floors.append(wall_ms(floor, env))
                stop.set()
                client.delete(f"/v1/sessions/{session['id']}")
        finally:
            _stop(daemon)
    hook = summary(latencies)
    base = summary(floors)
    over = hook["median_ms"] - base["median_ms"]
    return {
        "hook_to_event": hook, "python_c_pass": base, "over_floor_ms": round(over, 2),
        "command": " ".join(command[:2]) + " .../hook.py EVENT",
        "target": "p50(hook -> /v1/events) - p50(python3 -c pass) <= 30 ms", "met": over <= 30,
    }  # fmt: skip


def _api_socket(env: dict[str, str]) -> Any:
    from trio_bridge.config import resolve_settings

    return resolve_settings(env).settings.api_socket


def markdown(results: dict[str, Any]) -> str:
    out = ["## Agent hooks: hook call -> state change on /v1/events\n"]
    out.append("| measured | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|")
    for name, key in (
        ("hook -> event (`" + results["command"] + "`)", "hook_to_event"),
        ("`python3 -c pass` (floor)", "python_c_pass"),
    ):
        s = results[key]
        out.append(
            f"| {name} | {s['n']} | {s['median_ms']} | {s['p90_ms']} | {s['p99_ms']} | {s['max_ms']} |"
        )
    out.append(
        f"\nhook - floor = {results['over_floor_ms']} ms (p50). "
        f"Target: {results['target']}: **{'met' if results['met'] else 'NOT met'}**.\n"
    )
    return "\n".join(out)
