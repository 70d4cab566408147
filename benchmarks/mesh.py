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

The pair of daemons is measured open (no mesh secret) and signed (every message signed), side by
side; with ``BENCH_MESH_BASELINE=<git revision>`` that revision's code is measured the same way in
the same run (e.g. ``BENCH_MESH_BASELINE=cf64982 nox -s bench -- --only mesh --quick``).
"""

from __future__ import annotations

import base64
import os
import socket
import statistics
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
    from trio_bridge.mesh import keys, open_redis
    from trio_bridge.mesh.computers import Mesh

    async with open_redis(url) as redis:
        await redis.call("DEBUG", "POPULATE", keys, "other")
        settings = load_settings()
        for n in range(5):  # five computers' heartbeats among them
            await redis.call(
                "SET", keys.heartbeat(f"c{n}"), f'{{"name": "c{n}", "time": {time.time()}}}', "PX", 60000
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
        await redis.call("KEYS", keys.HEARTBEAT_PATTERN)  # the ancestor's way, for comparison only
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


def _round_trip(client: httpx.Client, session_id: str, computer: str | None) -> float:
    """One GET of the session's screen (through ``computer``'s inbox if given), in ms."""
    params = {"computer": computer} if computer else {}
    start = time.perf_counter()
    client.get(f"/v1/sessions/{session_id}/screen", params=params).raise_for_status()
    return (time.perf_counter() - start) * 1000


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


#: a git revision to measure beside this tree in the same run (its ``trio_bridge`` is extracted
#: with ``git archive`` and put first on the daemons' PYTHONPATH), e.g. the commit before a change
BASELINE = os.environ.get("BENCH_MESH_BASELINE", "")
_SECRET = "bench-mesh-secret"


def _extract(revision: str, into: Path) -> Path:
    """``trio_bridge`` of ``revision``, extracted under ``into``; the directory to put on PYTHONPATH."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(Path(__file__).resolve().parent.parent), "archive", revision, "trio_bridge"],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _pair(env: dict[str, str], root: Path, url: str, label: str, extra: dict[str, str]) -> list[Any]:
    """Daemons alpha and beta of one configuration: [(proc, env, api url)]."""
    daemons: list[Any] = []
    for name in ("alpha", "beta"):
        denv = {
            **env, **extra, "TRIO_BRIDGE_REDIS": url, "TRIO_BRIDGE_COMPUTER": name,
            "TRIO_BRIDGE_STATE_DIR": str(root / label / name / "state"),
            "TRIO_BRIDGE_RUNTIME_DIR": str(root / label / name / "run"),
            "TRIO_BRIDGE_TMUX_SOCKET": f"{env['TRIO_BRIDGE_TMUX_SOCKET']}-{label}-{name}",
        }  # fmt: skip
        try:
            proc, api = _start(
                [*TRIO_BRIDGE, "daemon", "--bind", "127.0.0.1:0"], denv, r"http://127\.0\.0\.1:\d+"
            )
        except Exception:
            _unpair(daemons)
            raise
        daemons.append((proc, denv, api))
    return daemons


def _unpair(daemons: list[Any]) -> None:
    for proc, _, _ in daemons:
        _stop(proc)
    for _, denv, _ in daemons:
        subprocess.run(
            ["tmux", "-L", denv["TRIO_BRIDGE_TMUX_SOCKET"], "kill-server"], env=denv, capture_output=True,
            check=False,
        )  # fmt: skip


def _measure(pairs: dict[str, dict[str, str]], quick: bool) -> dict[str, Any]:
    """Latency, round trip and relay throughput of every pair of daemons (config -> {alpha,
    beta: API url}), each beside B's own. Interleaved (one request of each configuration in
    turn, one flood of each in turn), so that the load of a shared machine falls on all alike."""
    lines = 60 if quick else 300
    results: dict[str, Any] = {label: {} for label in pairs}
    clients = {label: httpx.Client(base_url=urls["beta"], timeout=30) for label, urls in pairs.items()}
    try:
        script = PRINTER.format(lines=lines)
        for label, urls in pairs.items():
            latency = {}
            for reader, base, computer in (
                ("reader on B (local)", urls["beta"], None),
                ("reader on A (remote)", urls["alpha"], "beta"),
            ):
                sid = (
                    clients[label]
                    .post(
                        "/v1/sessions",
                        json={"command": [PY, "-c", "import time; time.sleep(1)\n" + script], "cwd": "/"},
                    )
                    .json()["id"]
                )
                latency[reader] = summary(_sse_latencies(base, sid, skip=5, computer=computer))
            results[label]["latency"] = latency
        sleepers = {
            label: clients[label]
            .post("/v1/sessions", json={"command": ["sleep", "600"], "cwd": "/"})
            .json()["id"]
            for label in pairs
        }
        rounds = 60 if quick else 300
        times: dict[tuple[str, str], list[float]] = {}
        alphas = {label: httpx.Client(base_url=urls["alpha"], timeout=30) for label, urls in pairs.items()}
        try:
            for _ in range(rounds):
                for label in pairs:
                    for where, client, computer in (
                        ("B's API (local)", clients[label], None),
                        ("A's API -> B (remote)", alphas[label], "beta"),
                    ):
                        times.setdefault((label, where), []).append(
                            _round_trip(client, sleepers[label], computer)
                        )
        finally:
            for client in alphas.values():
                client.close()
        for (label, where), measured in times.items():
            results[label].setdefault("round_trip", {})[where] = summary(measured)
        for label in pairs:
            clients[label].delete(f"/v1/sessions/{sleepers[label]}")
        flood = ["seq", "1", str(100_000 if quick else 500_000)]
        rates: dict[tuple[str, str], list[float]] = {}
        for _ in range(3):
            for label, urls in pairs.items():
                for where, base, computer in (
                    ("on B (local)", urls["beta"], None),
                    ("on A (remote)", urls["alpha"], "beta"),
                ):
                    sid = (
                        clients[label]
                        .post(
                            "/v1/sessions",
                            json={"command": ["sh", "-c", "sleep 0.5; exec " + " ".join(flood)], "cwd": "/"},
                        )
                        .json()["id"]
                    )
                    rates.setdefault((label, where), []).append(_throughput(base, sid, computer) / 1e6)
        for (label, where), measured in rates.items():
            relay = results[label].setdefault("relay", {"flood": " ".join(flood), "runs": 3, "mb_per_s": {}})
            relay["mb_per_s"][where] = round(statistics.median(measured), 2)
    finally:
        for client in clients.values():
            client.close()
    return results


def _signing_cost(entry_bytes: int = 4096, n: int = 2000) -> dict[str, Any]:
    """CPU per relay entry of signing (the owner) and verifying (each reader), in µs: the part of
    the relay's cost that the secret adds, free of the machine's load on the rest."""
    from trio_bridge.mesh import keys
    from trio_bridge.mesh._seal import Signer
    from trio_bridge.mesh.relay import open_relay_entry

    signer = Signer(_SECRET)
    relay_key = keys.relay("beta", "s")
    data = base64.b64encode(os.urandom(entry_bytes)).decode()
    started = time.perf_counter()
    for offset in range(n):
        signer.seal("output", "beta", relay_key, str(offset), data)
    seal_us = (time.perf_counter() - started) / n * 1e6
    sent_at, sig = signer.seal("output", "beta", relay_key, "0", data)
    fields = {"offset": "0", "data": data, "time": sent_at, "sig": sig}
    started = time.perf_counter()
    for _ in range(n):
        open_relay_entry(signer, "beta", "s", fields)
    check_us = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for _ in range(n):
        base64.b64decode(data)  # what the reader did before, unsigned
    decode_us = (time.perf_counter() - started) / n * 1e6
    return {
        "entry_bytes": entry_bytes, "seal_us": round(seal_us, 1), "check_us": round(check_us, 1),
        "decode_only_us": round(decode_us, 1),
    }  # fmt: skip


def run(quick: bool) -> dict[str, Any]:
    keys = 100_000 if quick else 1_000_000
    results: dict[str, Any] = {}
    with sandbox() as env:
        root = Path(env["XDG_STATE_HOME"]).parent
        redis, url = _redis_server(root)
        try:
            results["discovery"] = trio.run(_discovery, url, keys)
            results["signing"] = _signing_cost()
            # Configurations side by side, in one run: this tree open and signed, and the
            # baseline revision (if one is given) the same way.
            configs: list[tuple[str, dict[str, str]]] = []
            trees: list[tuple[str, dict[str, str]]] = [("this tree", {})]
            if BASELINE:
                code = _extract(BASELINE, root / "baseline")
                trees.insert(0, (BASELINE, {"PYTHONPATH": str(code)}))
            for tree, code_env in trees:
                configs.append((f"{tree}, open", code_env))
                configs.append((f"{tree}, signed", {**code_env, "TRIO_BRIDGE_MESH_SECRET": _SECRET}))
            pairs: dict[str, dict[str, str]] = {}
            daemons: list[Any] = []
            try:
                for index, (label, extra) in enumerate(configs):
                    # a Redis database of its own: the same computer names, separate meshes
                    pair = _pair(env, root, url.rsplit("/", 1)[0] + f"/{index + 1}", f"c{index}", extra)
                    daemons += pair
                    pairs[label] = {"alpha": pair[0][2], "beta": pair[1][2]}
                results["configs"] = _measure(pairs, quick)
            finally:
                _unpair(daemons)
        finally:
            redis.terminate()
            redis.wait(timeout=10)
    main = results["configs"]["this tree, signed"]
    results["latency"] = {
        "readers": main["latency"], "target": "remote p50 < 5 ms (this tree, signed)",
        "met": main["latency"]["reader on A (remote)"]["median_ms"] < 5,
    }  # fmt: skip
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
    out.append("### Output latency: line printed on B -> SSE reader (this tree, signed)\n")
    out.append("| reader | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|")
    for name, s in lat["readers"].items():
        out.append(
            f"| {name} | {s['n']} | {s['median_ms']} | {s['p90_ms']} | {s['p99_ms']} | {s['max_ms']} |"
        )
    out.append(f"\nTarget: {lat['target']}: **{'met' if lat['met'] else 'NOT met'}**.\n")
    configs = results["configs"]
    out.append("### Side by side: request round trip, relay throughput, remote latency\n")
    out.append(
        "| code, mesh | round trip A -> B p50 / p90 ms | B local p50 ms | relay A (remote) MB/s "
        "| relay B (local) MB/s | remote output latency p50 ms |\n|---|---|---|---|---|---|"
    )
    for label, c in configs.items():
        remote, local = c["round_trip"]["A's API -> B (remote)"], c["round_trip"]["B's API (local)"]
        rates = c["relay"]["mb_per_s"]
        out.append(
            f"| {label} | {remote['median_ms']} / {remote['p90_ms']} | {local['median_ms']} "
            f"| {rates['on A (remote)']} | {rates['on B (local)']} "
            f"| {c['latency']['reader on A (remote)']['median_ms']} |"
        )
    relay = next(iter(configs.values()))["relay"]
    out.append(f"\nRelay: `{relay['flood']}` read as SSE (bytes of SSE per second).")
    sign = results["signing"]
    out.append(
        f"\nSigning cost per relay entry of {sign['entry_bytes']} bytes (CPU): sealing "
        f"{sign['seal_us']} µs (the owner), checking and decoding {sign['check_us']} µs (each reader; "
        f"decoding alone, as before: {sign['decode_only_us']} µs)."
    )
    return "\n".join(out) + "\n"
