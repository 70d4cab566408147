"""``GET /metrics``: the daemon's state in Prometheus' text format (prometheus-client)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from .. import process
from ..sessions import SessionState
from ..tmux import control

if TYPE_CHECKING:
    from ._context import ApiContext


class _Snapshot:
    """Metric families computed beforehand (the store is async), in the shape
    ``generate_latest`` collects from."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _count_tasks(task: trio.lowlevel.Task) -> int:
    return 1 + sum(_count_tasks(child) for nursery in task.child_nurseries for child in nursery.child_tasks)


async def render(context: ApiContext) -> bytes:
    manager = context.manager
    by_state = Counter(record.state for record in await manager.store.all())
    sessions = GaugeMetricFamily("trio_bridge_sessions", "Sessions known, by state", labels=["state"])
    for state in SessionState:
        sessions.add_metric([state.value], by_state.get(state, 0))
    readers = GaugeMetricFamily("trio_bridge_output_readers", "Readers following session output now")
    readers.add_metric([], manager.live_readers())
    streams = GaugeMetricFamily("trio_bridge_api_streams", "Open SSE and WebSocket streams")
    streams.add_metric([], context.open_streams)
    output = CounterMetricFamily("trio_bridge_output_bytes", "Session output bytes seen since start")
    output.add_metric([], manager.output_bytes)
    timeouts = CounterMetricFamily(
        "trio_bridge_subprocess_timeouts", "Subprocesses killed for exceeding their time limit"
    )
    timeouts.add_metric([], process.timeouts_total)
    tmux_timeouts = CounterMetricFamily(
        "trio_bridge_tmux_command_timeouts", "tmux control-client commands unanswered within the tmux timeout"
    )
    tmux_timeouts.add_metric([], control.timeouts_total)
    restarts = CounterMetricFamily(
        "trio_bridge_supervisor_restarts", "Restarts of supervised services after a crash", labels=["service"]
    )
    for supervisor in context.supervisors:
        restarts.add_metric([supervisor.name], supervisor.restarts)
    tasks = GaugeMetricFamily("trio_bridge_tasks", "Trio tasks alive in the daemon")
    root = trio.lowlevel.current_root_task()
    tasks.add_metric([], _count_tasks(root) if root is not None else 0)
    families: list[Metric] = [sessions, readers, streams, output, timeouts, tmux_timeouts, restarts, tasks]
    if context.mesh is not None:
        dropped = CounterMetricFamily(
            "trio_bridge_mesh_dropped",
            "Mesh messages read from Redis and dropped: failed verification, stale, replayed or malformed",
            labels=["entry", "reason"],
        )
        for (entry, reason), count in sorted(context.mesh.drops.counts.items()):
            dropped.add_metric([entry, reason], count)
        families.append(dropped)
    return generate_latest(_Snapshot(families))
