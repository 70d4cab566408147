"""Restart a long-lived service when it crashes, with a backoff that resets after healthy running.

A :class:`Supervisor` owns one service task at a time, in its own nursery. A crash (any
``Exception``, including an exception group of them) is logged with its full traceback and the
service is restarted after a delay that grows exponentially; once the service has run for
``healthy_after`` seconds, the delay starts small again. A service that keeps crashing
(``max_restarts`` within ``window`` seconds) stops the supervisor with :class:`CrashLoopError`
instead of looping forever. Cancellation is never caught: it stops the service and propagates.

Its delays are a :class:`~trio_bridge._backoff.Backoff`, the package's one retry delay (also every
loop that retries Redis or Telegram, and the CLI's reconnecting clients).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._backoff import Backoff

__all__ = ["CrashLoopError", "RestartPolicy", "Supervisor"]

log = logging.getLogger(__name__)

#: a service: an async function reporting readiness through ``task_status.started(value)``
Service = Callable[..., Awaitable[object]]


@attrs.frozen
class RestartPolicy:
    """How a :class:`Supervisor` restarts its service. All times are in seconds."""

    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    multiplier: float = 2.0
    #: a run this long counts as healthy: the next crash starts from ``initial_backoff`` again
    healthy_after: float = 60.0
    #: this many crashes within ``window`` is a crash loop
    max_restarts: int = 5
    window: float = 60.0

    def __attrs_post_init__(self) -> None:
        for name in ("initial_backoff", "max_backoff", "healthy_after", "window"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}")
        if not self.multiplier >= 1:
            raise ValueError(f"multiplier must be >= 1, not {self.multiplier!r}")
        if self.max_restarts < 1:
            raise ValueError(f"max_restarts must be >= 1, not {self.max_restarts!r}")


class CrashLoopError(Exception):
    """A supervised service crashed too often; ``__cause__`` is its last exception."""

    def __init__(self, name: str, crashes: int, window: float) -> None:
        self.name = name
        self.crashes = crashes
        self.window = window
        super().__init__(f"service {name!r} crashed {crashes} times within {window:g} s; giving up")


class Supervisor:
    """Runs one service and restarts it on crashes (see the module docstring).

    ``restarts`` counts restarts so far (for metrics); ``last_error`` is the last crash.
    """

    def __init__(self, name: str, policy: RestartPolicy | None = None) -> None:
        self.name = name
        self.policy = policy or RestartPolicy()
        self.restarts = 0
        self.last_error: BaseException | None = None

    async def run(
        self,
        service: Service,
        *args: Any,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``service(*args, task_status=...)`` until it returns, restarting it when it crashes.

        Readiness: the service's first ``task_status.started(value)`` is passed on to our caller
        (so ``await nursery.start(supervisor.run, service)`` returns ``value``); restarts report
        nothing further.

        Raises:
            CrashLoopError: ``max_restarts`` crashes within ``window`` seconds.
            trio.Cancelled: our scope was cancelled (the service is cancelled with it).
        """
        policy = self.policy
        crashes: collections.deque[float] = collections.deque()
        backoff = Backoff(policy.initial_backoff, policy.max_backoff, policy.multiplier)
        status: trio.TaskStatus[Any] | None = task_status
        while True:
            started_at = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    value = await nursery.start(_call, service, args)
                    if status is not None:
                        status.started(value)
                        status = None
                return  # the service finished by itself
            except Exception as group:
                # Our nursery wraps whatever the service raised in a group of one:
                # report the service's own exception.
                exc: Exception = group
                if isinstance(group, ExceptionGroup) and len(group.exceptions) == 1:
                    exc = group.exceptions[0]
                now = trio.current_time()
                self.last_error = exc
                if now - started_at >= policy.healthy_after:
                    backoff.reset()
                crashes.append(now)
                while crashes and now - crashes[0] > policy.window:
                    crashes.popleft()
                if len(crashes) >= policy.max_restarts:
                    log.error("service %r crashed; crash loop, giving up", self.name, exc_info=exc)  # noqa: TRY400
                    raise CrashLoopError(self.name, len(crashes), policy.window) from exc
                delay = backoff.next()
                log.error(  # noqa: TRY400 - the traceback is the service's, passed explicitly
                    "service %r crashed; restarting in %.2f s", self.name, delay, exc_info=exc
                )
            await trio.sleep(delay)
            self.restarts += 1


async def _call(service: Service, args: tuple[Any, ...], *, task_status: trio.TaskStatus[Any]) -> None:
    await service(*args, task_status=task_status)
