"""The supervisor: restarts with backoff, reset after healthy running, crash-loop escalation."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from trio_bridge.supervise import CrashLoopError, RestartPolicy, Supervisor

POLICY = RestartPolicy(
    initial_backoff=1, max_backoff=8, multiplier=2, healthy_after=100, max_restarts=10, window=1000
)


class Flaky:
    """A service that crashes at given times after each start (None: runs until cancelled)."""

    def __init__(self, lifetimes: list[float | None], ready: object = "ready") -> None:
        self.lifetimes = list(lifetimes)
        self.starts: list[float] = []
        self.ready = ready

    async def __call__(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.starts.append(trio.current_time())
        task_status.started(self.ready)
        lifetime = self.lifetimes.pop(0)
        if lifetime is None:
            await trio.sleep_forever()
        await trio.sleep(lifetime)
        raise RuntimeError(f"crash #{len(self.starts)}")


def gaps(starts: list[float], lifetimes: list[float]) -> list[float]:
    """The pause between each crash and the next start."""
    return [round(b - a - life, 6) for a, b, life in zip(starts, starts[1:], lifetimes, strict=False)]


async def test_backoff_grows_and_caps(autojump_clock: trio.testing.MockClock) -> None:
    service = Flaky([0, 0, 0, 0, 0, 0, None])
    supervisor = Supervisor("flaky", POLICY)
    async with trio.open_nursery() as nursery:
        assert await nursery.start(supervisor.run, service) == "ready"
        await trio.sleep(500)
        nursery.cancel_scope.cancel()
    assert gaps(service.starts, [0] * 6) == [1, 2, 4, 8, 8, 8]
    assert supervisor.restarts == 6
    assert str(supervisor.last_error) == "crash #6"


async def test_backoff_resets_after_healthy_running(autojump_clock: trio.testing.MockClock) -> None:
    lifetimes: list[float | None] = [0, 0, 0, 150, 0, None]
    service = Flaky(lifetimes)
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor("flaky", POLICY).run, service)
        await trio.sleep(1000)
        nursery.cancel_scope.cancel()
    # 1, 2, 4, then a 150 s healthy run: the next pause is back to 1, then 2
    assert gaps(service.starts, [0, 0, 0, 150, 0]) == [1, 2, 4, 1, 2]


async def test_crash_loop_stops_with_a_clear_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    policy = RestartPolicy(initial_backoff=1, max_restarts=3, window=60)
    service = Flaky([0] * 10)
    with pytest.raises(CrashLoopError) as info:
        await Supervisor("looping", policy).run(service)
    assert len(service.starts) == 3
    assert str(info.value) == "service 'looping' crashed 3 times within 60 s; giving up"
    assert isinstance(info.value.__cause__, RuntimeError)
    # every crash is logged with its traceback
    crashes = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(crashes) == 3 and all(r.exc_info for r in crashes)


async def test_crashes_spread_out_are_not_a_loop(autojump_clock: trio.testing.MockClock) -> None:
    policy = RestartPolicy(initial_backoff=1, max_restarts=3, window=60, healthy_after=1000)
    service = Flaky([100, 100, 100, 100, None])  # a crash every ~100 s: never 3 within 60 s
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor("slow", policy).run, service)
        await trio.sleep(1000)
        nursery.cancel_scope.cancel()
    assert len(service.starts) == 5


async def test_a_service_that_finishes_ends_the_supervisor(autojump_clock: trio.testing.MockClock) -> None:
    async def once(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(7)
        await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        assert await nursery.start(Supervisor("once").run, once) == 7
    assert trio.current_time() == pytest.approx(1)


async def test_a_crash_before_ready_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []

    async def slow_to_start(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise OSError("port busy")
        task_status.started("up")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        assert await nursery.start(Supervisor("starter", POLICY).run, slow_to_start) == "up"
        nursery.cancel_scope.cancel()
    assert attempts == [0, 1, 3]


async def test_cancellation_is_never_swallowed(autojump_clock: trio.testing.MockClock) -> None:
    service = Flaky([0] * 10)
    with trio.move_on_after(2.5) as scope:  # cancelled during a backoff sleep
        await Supervisor("flaky", POLICY).run(service)
    assert scope.cancelled_caught
    service = Flaky([None])
    with trio.move_on_after(5) as scope:  # cancelled while the service runs
        await Supervisor("steady", POLICY).run(service)
    assert scope.cancelled_caught and len(service.starts) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"initial_backoff": 0}, {"multiplier": 0.5}, {"max_restarts": 0}, {"window": -1}],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]
