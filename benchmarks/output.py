"""The output path beside tmux itself, in one run: a flood through the daemon to an SSE reader
against the same flood in a bare tmux server with ``pipe-pane`` to ``split``.

- (a) bare tmux: a fresh tmux server on its own socket; a pane running ``seq 1 N`` whose output
  ``pipe-pane`` gives to ``split`` (the daemon's log writer); from ``new-session`` to the files
  holding every byte (so the pane has printed them all).
- (b) the daemon (a process of its own, so its CPU is its own): ``POST /v1/sessions`` with the
  same command, one SSE reader from offset 0 to the ``end`` event; from the POST to the end.
- The ratio (a)/(b) (1.0: as fast as tmux; target >= 0.7) and the daemon's CPU (utime + stime
  of its process, from ``/proc``) per MB of output over (b) (target <= 25 ms).
- Output latency, a line printed -> an SSE reader (the printer and line collector of
  :mod:`benchmarks.run_cli`, as :mod:`benchmarks.api` uses them), and quiet sessions' latency
  while one floods (:func:`benchmarks.daemon._throughput` itself, run against each tree's
  session manager).

With ``--baseline-tree DIR`` (a checkout of an earlier commit, e.g. ``git worktree add DIR
11edf3e``), (b) and the latencies are measured for that tree's daemon too, in the same run
(``PYTHONPATH`` points the daemon at the tree): before and after side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from trio_bridge.output import split_command

from .api import _start, _stop
from .run_cli import PRINTER, PY, StampedLines, sandbox, summary

REPO = Path(__file__).resolve().parent.parent
#: where ``python -m benchmarks --baseline-tree`` puts the baseline checkout for this module
BASELINE_ENV = "TB_BENCH_BASELINE_TREE"
_TICK = os.sysconf("SC_CLK_TCK")


def _seq_bytes(lines: int) -> int:
    """Bytes ``seq 1 lines`` puts through a pty (each ``\\n`` becomes ``\\r\\n``)."""
    digits: int = sum(d * (min(lines, 10**d - 1) - 10 ** (d - 1) + 1) for d in range(1, len(str(lines)) + 1))
    return digits + 2 * lines


def _bare_tmux(env: dict[str, str], lines: int, root: Path) -> float:
    """Seconds from new-session to ``split``'s files holding every byte (so the pane has
    printed them all; its death is not polled: a tmux client per poll would load the machine)."""
    socket = env["TRIO_BRIDGE_TMUX_SOCKET"] + "-bare"
    logdir = root / f"bare-{time.monotonic_ns()}"
    logdir.mkdir()
    expected = _seq_bytes(lines)

    def tmux(*args: str) -> bytes:
        return subprocess.run(
            ["tmux", "-L", socket, "-f", "/dev/null", *args], env=env, check=True, capture_output=True
        ).stdout

    start = time.perf_counter()
    # A gate, as the daemon's sessions have: the pipe is on before the first byte.
    tmux(
        "new-session", "-d", "-s", "flood", "-x", "80", "-y", "24",
        f"tmux -L {socket} wait-for go; exec seq 1 {lines}",
    )  # fmt: skip
    tmux("set-option", "-t", "flood", "remain-on-exit", "on")
    tmux("pipe-pane", "-t", "flood", split_command(logdir, 1 << 20))
    tmux("wait-for", "-S", "go")
    while sum(p.stat().st_size for p in logdir.iterdir()) < expected:
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    tmux("kill-server")
    return elapsed


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _read_stream(client: httpx.Client, session_id: str, on_data: Callable[[bytes, int], object]) -> None:
    """Follow a session's SSE stream from offset 0 to its ``end`` event; ``on_data(bytes,
    arrival ns)`` for each output event."""
    with client.stream("GET", f"/v1/sessions/{session_id}/stream", params={"offset": "0"}) as response:
        response.raise_for_status()
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "end":
                return
            elif line.startswith("data: ") and event == "output":
                on_data(json.loads(line[6:])["data"].encode(), time.monotonic_ns())


def _create(client: httpx.Client, command: list[str]) -> str:
    response = client.post("/v1/sessions", json={"command": command, "cwd": "/"})
    response.raise_for_status()
    return str(response.json()["id"])


def _flood(client: httpx.Client, command: list[str]) -> tuple[float, int]:
    """POST a session, read its SSE stream from offset 0 to ``end``: seconds and bytes."""
    received = [0]

    def count(data: bytes, _arrived: int) -> None:
        received[0] += len(data)

    start = time.perf_counter()
    _read_stream(client, _create(client, command), count)
    return time.perf_counter() - start, received[0]


def _latencies(client: httpx.Client, session_id: str, skip: int) -> list[float]:
    """Arrival minus print time of each stamped line (:data:`PRINTER`)."""
    lines = StampedLines(skip)
    _read_stream(client, session_id, lines.feed)
    return lines.latencies


#: :func:`benchmarks.daemon._throughput` (quiet sessions read while one floods, in-process
#: readers of the manager's feeds) run against the manager of the tree on ``PYTHONPATH``: the
#: daemon benchmark's own figure, for any tree (an HTTP client's threads would measure their
#: own GIL contention with the flood's reader more than the daemon)
_THROUGHPUT = """
import json, sys, trio
from benchmarks.daemon import _throughput
from benchmarks.run_cli import sandbox
from trio_bridge.config import resolve_settings
from trio_bridge.sessions import SessionManager, open_session_store
from trio_bridge.tmux import TmuxServer

async def main():
    with sandbox() as env:
        settings = resolve_settings(env).settings
        server = TmuxServer(socket_name=settings.tmux_socket, config_path=settings.state_dir / "tmux.conf")
        try:
            db = settings.state_dir / "sessions.db"
            async with open_session_store(db) as store, trio.open_nursery() as n:
                manager = await n.start(SessionManager(server, store, settings.state_dir).run)
                print(json.dumps(await _throughput(manager, int(sys.argv[1]), int(sys.argv[2]))))
                n.cancel_scope.cancel()
        finally:
            await server.kill_server()

trio.run(main)
"""


def _quiet_during_flood(tree: Path, env: dict[str, str], flood_lines: int, quiet: int) -> dict[str, Any]:
    """The daemon benchmark's quiet-sessions-during-a-flood figure for ``tree``'s manager."""
    out = subprocess.run(
        [PY, "-P", "-c", _THROUGHPUT, str(flood_lines), str(quiet)],
        env=dict(env, PYTHONPATH=str(tree)), capture_output=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return {"quiet_sessions": quiet, "latency": result["quiet_latency_during_flood"]}


@contextlib.contextmanager
def _daemon(tree: Path, env: dict[str, str]) -> Iterator[tuple[int, httpx.Client]]:
    """The daemon of ``tree`` in its own process (its PID) and a client of its API."""
    proc, url = _start(
        # -P: not the current directory first on the path, PYTHONPATH's tree
        [PY, "-P", "-m", "trio_bridge", "daemon", "--bind", "127.0.0.1:0"],
        dict(env, PYTHONPATH=str(tree)), r"http://127\.0\.0\.1:\d+",
    )  # fmt: skip
    try:
        token = (Path(env["XDG_STATE_HOME"]) / "trio-bridge" / "api.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        timeout = httpx.Timeout(120, connect=5)
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
            _flood(client, ["seq", "1", "1000"])  # warm: imports, the hub, the first session
            yield proc.pid, client
    finally:
        _stop(proc)


def _flood_round(pid: int, client: httpx.Client, lines: int) -> dict[str, Any]:
    cpu0 = _cpu_s(pid)
    seconds, received = _flood(client, ["seq", "1", str(lines)])
    cpu = _cpu_s(pid) - cpu0
    return {
        "seconds": round(seconds, 3),
        "bytes": received,
        "cpu_ms_per_mb": round(cpu * 1000 / (received / 1e6), 1),
    }


def _tree_label(tree: Path) -> str:
    head = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{tree.name} @ {head.stdout.strip() or '?'}{' (+ changes)' if dirty.stdout.strip() else ''}"


def run(quick: bool) -> dict[str, Any]:
    lines = 2_000_000
    rounds = 2 if quick else 3
    trees = {"this tree": REPO}
    if baseline := os.environ.get(BASELINE_ENV):
        trees = {"baseline": Path(baseline).resolve(), **trees}
    results: dict[str, Any] = {"command": f"seq 1 {lines}", "bytes": _seq_bytes(lines)}
    with sandbox() as env, contextlib.ExitStack() as stack:
        root = Path(env["XDG_STATE_HOME"]).parent
        # Each daemon its own state and tmux server, all running at once, measured in turns
        # (bare tmux, then each daemon, round after round) so that load hits all alike.
        daemons = {}
        for n, (name, tree) in enumerate(trees.items()):
            tree_env = dict(
                env, XDG_STATE_HOME=str(root / f"state-{n}"), XDG_RUNTIME_DIR=str(root / f"run-{n}"),
                TRIO_BRIDGE_TMUX_SOCKET=f"{env['TRIO_BRIDGE_TMUX_SOCKET']}-{n}",
            )  # fmt: skip
            stack.callback(
                subprocess.run, ["tmux", "-L", tree_env["TRIO_BRIDGE_TMUX_SOCKET"], "kill-server"],
                env=env, capture_output=True, check=False,
            )  # fmt: skip
            daemons[name] = stack.enter_context(_daemon(tree, tree_env))
        bare: list[float] = []
        floods: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for _ in range(rounds):
            bare.append(_bare_tmux(env, lines, root))
            for name, (pid, client) in daemons.items():
                floods[name].append(_flood_round(pid, client, lines))
        results["bare_tmux_s"] = round(statistics.median(bare), 3)
        results["bare_tmux_runs"] = [round(s, 3) for s in bare]
        printer = "import time; time.sleep(0.5)\n" + PRINTER.format(lines=60 if quick else 200)
        results["trees"] = {}
        for name, (_, client) in daemons.items():
            flood_s = statistics.median(f["seconds"] for f in floods[name])
            results["trees"][name] = {
                "tree": _tree_label(trees[name]),
                "floods": floods[name],
                "flood_s": flood_s,
                "ratio": round(results["bare_tmux_s"] / flood_s, 3),
                # each round's bare time over its daemon time, measured back to back: steadier
                # than the ratio of medians when the machine's load drifts
                "paired_ratio": round(
                    statistics.median(b / f["seconds"] for b, f in zip(bare, floods[name], strict=True)), 3
                ),
                "cpu_ms_per_mb": statistics.median(f["cpu_ms_per_mb"] for f in floods[name]),
                "sse_latency": summary(_latencies(client, _create(client, [PY, "-c", printer]), 5)),
                "quiet_during_flood": _quiet_during_flood(trees[name], env, lines // 2, 5),
            }
    mine = results["trees"]["this tree"]
    results["target"] = (
        "ratio >= 0.7, daemon CPU <= 25 ms/MB; latency and quiet p99 no worse than the baseline"
    )
    met = mine["ratio"] >= 0.7 and mine["cpu_ms_per_mb"] <= 25
    if (base := results["trees"].get("baseline")) is not None:
        # no worse: within the noise of a shared machine (1 ms, or 20%)
        for now, before in (
            (mine["sse_latency"]["median_ms"], base["sse_latency"]["median_ms"]),
            (
                mine["quiet_during_flood"]["latency"]["p99_ms"],
                base["quiet_during_flood"]["latency"]["p99_ms"],
            ),
        ):
            met = met and now <= max(before * 1.2, before + 1.0)
    results["met"] = met
    return results


def markdown(results: dict[str, Any]) -> str:
    out = [
        "## Output path beside tmux (flood to an SSE reader)", "",
        f"`{results['command']}`: {results['bytes'] / 1e6:.1f} MB through the pty. Bare tmux + pipe-pane "
        f"to split: **{results['bare_tmux_s']} s** (runs {results['bare_tmux_runs']}).", "",
        "| daemon | flood s (POST -> SSE end) | ratio bare/daemon (paired) | daemon CPU ms/MB "
        "| SSE latency p50 / p99 ms | quiet sessions' p50 / p99 ms during a flood |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, r in results["trees"].items():
        q, sse = r["quiet_during_flood"]["latency"], r["sse_latency"]  # (p50_ms: the daemon bench's)
        out.append(
            f"| {name}: {r['tree']} | {r['flood_s']} | {r['ratio']} ({r['paired_ratio']}) | "
            f"{r['cpu_ms_per_mb']} | "
            f"{sse['median_ms']} / {sse['p99_ms']} | {q['p50_ms']} / {q['p99_ms']} |"
        )
    out += ["", f"Target: {results['target']}: **{'met' if results['met'] else 'NOT met'}**.", ""]
    return "\n".join(out)
