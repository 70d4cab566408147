"""``trio-bridge daemon``: the root of the cancel tree.

```
trio.run(_main)
└── nursery (signals)
    ├── watch signals: 1st SIGINT/SIGTERM -> graceful shutdown (deadline), 2nd SIGINT -> exit now
    └── serve_daemon
        ├── hold_lock(state_dir/daemon.lock)       one daemon per state directory
        ├── open_session_store(state_dir/sessions.db)
        ├── open_listeners(settings)                API sockets: unix (0600) [+ TCP --bind]
        └── nursery
            ├── Supervisor("sessions").run(SessionManager.run)   watchers of every session
            ├── Supervisor("retention").run(_retention)           prunes ended sessions hourly
            └── open_mesh (with --redis: Redis client; heartbeat, events, relays)
                └── nursery
                    ├── Supervisor("inbox").run(Mesh.serve_inbox)   with --redis
                    ├── Supervisor("api").run(serve_api)            hypercorn + stream producers
                    └── Supervisor("telegram").run(serve_telegram)  only with telegram_token set
```

The mesh is opened outside the nursery of the tasks that use it, so it closes after them: a
request on its way through the mesh during the API's graceful window still gets its answer.

Stopping the daemon never stops the user's sessions: they live on in tmux, and the next
daemon re-adopts them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .api._access import Access
    from .mesh import Mesh

from ._private import UnsafeDirectoryError, make_private_dir, privatize_tree
from .config import Settings, default_computer_name, secret_env_names
from .sessions import SessionManager, SessionTuning, open_session_store
from .supervise import CrashLoopError, RestartPolicy, Supervisor
from .tmux import TmuxServer

__all__ = ["RunningDaemon", "run_daemon", "serve_daemon"]

log = logging.getLogger("trio_bridge.daemon")

_RETENTION_INTERVAL = 3600.0


async def _retention(
    manager: SessionManager,
    settings: Settings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Remove ended sessions beyond the retention limits, now (before reporting ready) and then
    every hour."""
    while True:
        cutoff = time.time() - settings.retention_days * 86400
        # Records and files go together: a shutdown must not split them (bounded all the same: a
        # directory left behind by a cut-short removal is only disk space).
        removed: list[str] = []
        with trio.CancelScope(shield=True, deadline=trio.current_time() + settings.shutdown_timeout) as scope:
            removed = list(await manager.store.prune(keep=settings.retention_count, older_than=cutoff))
            for session_id in removed:
                await manager.remove(session_id)
        if scope.cancelled_caught:
            log.warning("retention was cut short after %g s", settings.shutdown_timeout)
        if removed:
            log.info("retention removed %d ended sessions", len(removed))
        task_status.started()
        task_status = trio.TASK_STATUS_IGNORED
        await trio.sleep(_RETENTION_INTERVAL)


def _access(settings: Settings) -> Access:
    """The API's admission rules; with a TCP listener and no token, a token made for it."""
    from .api._access import Access, ensure_token_file

    tcp_token = settings.token
    if settings.bind is not None and tcp_token is None:
        try:
            tcp_token = ensure_token_file(settings.token_path)
        except (OSError, ValueError) as exc:
            raise TokenFileError(f"API token file {settings.token_path}: {exc}") from None
    return Access(
        token=settings.token,
        tcp_token=tcp_token,
        allowed_hosts=frozenset(settings.allowed_hosts),
        allowed_origins=frozenset(settings.allowed_origins),
        web=settings.web and settings.bind is not None,
    )


class TokenFileError(Exception):
    """The token for the TCP listener cannot be made or read (one line)."""


@attrs.frozen
class RunningDaemon:
    """What :func:`serve_daemon` reports when it is ready."""

    manager: SessionManager
    #: the API's unix socket
    api_socket: Path
    #: ``http://host:port`` of the API's TCP listener, if one was asked for
    api_url: str | None


async def serve_daemon(
    settings: Settings,
    *,
    policy: RestartPolicy | None = None,
    task_status: trio.TaskStatus[RunningDaemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon's components until cancelled; report a :class:`RunningDaemon` when ready.

    Raises:
        AlreadyRunningError: another daemon holds this state directory.
        ApiBindError: the API cannot listen (socket served by another daemon, address taken,
            non-loopback address without a token).
        CrashLoopError: a component kept crashing.
        UnsafeDirectoryError: the state or runtime directory is another user's, or others can
            write to it.
        TokenFileError: the TCP listener's token file cannot be made or read.
    """
    from ._lock import hold_lock

    state = settings.state_dir
    from .api import ApiContext, open_listeners, serve_api

    # The process is the daemon: whatever it (and the tmux server it starts) creates is private.
    os.umask(0o077)
    make_private_dir(state, "state directory")
    make_private_dir(settings.runtime_dir, "runtime directory")
    if changed := await trio.to_thread.run_sync(privatize_tree, state):
        log.info("made %d files and directories in %s private to this user", changed, state)
    access = _access(settings)
    if settings.web and settings.bind is None:
        log.warning("the web dashboard is served on a TCP listener only: set bind (--bind) to use it")
    with hold_lock(state / "daemon.lock"), open_listeners(settings) as listeners:
        server = TmuxServer(
            socket_name=settings.tmux_socket,
            binary=settings.tmux_binary,
            config_path=state / "tmux.conf",
            timeouts=settings.timeouts,
        )
        async with (
            open_session_store(state / "sessions.db") as store,
            trio.open_nursery() as core,
        ):
            manager = SessionManager(
                server,
                store,
                state,
                tuning=SessionTuning(log_max_bytes=settings.output_max_bytes),
                agent_profiles=settings.agents,
            )
            supervisors = tuple(Supervisor(name, policy) for name in ("sessions", "retention", "api"))
            sessions, retention, api = supervisors
            await core.start(sessions.run, manager.run)
            await core.start(retention.run, _retention, manager, settings)
            # Outside the nursery below: the mesh closes after the API's graceful window.
            async with _open_mesh(settings, manager) as mesh, trio.open_nursery() as nursery:
                context = ApiContext(
                    manager,
                    access=access,
                    max_body_bytes=settings.max_body_bytes,
                    max_input_bytes=settings.max_input_bytes,
                    max_connections=settings.max_connections,
                    supervisors=supervisors,
                    mesh=mesh,
                    socket_path=listeners.unix_path,
                    tcp_url=listeners.tcp_url,
                    computer_name=mesh.name if mesh is not None else default_computer_name(),
                )
                if mesh is not None:
                    from .api import create_app
                    from .api._remote import remote_handler

                    inbox = Supervisor("inbox", policy)
                    context.supervisors += (inbox,)
                    handler = remote_handler(create_app(context), settings.token)
                    await nursery.start(inbox.run, mesh.serve_inbox, handler)
                # Streams get part of the shutdown deadline to end cleanly; the rest is for the others.
                graceful = max(0.1, min(2.0, settings.shutdown_timeout / 3))
                await nursery.start(
                    api.run, partial(serve_api, graceful_timeout=graceful), context, listeners
                )
                if settings.telegram_token is not None:
                    # imported only with a token: a daemon without one never loads it
                    from .telegram import serve_telegram

                    telegram = Supervisor("telegram", policy)
                    context.supervisors += (telegram,)
                    await nursery.start(
                        telegram.run, serve_telegram, settings, manager, context.computer_name, mesh
                    )
                log.info(
                    "ready (state %s, tmux -L %s, API %s)", state, settings.tmux_socket, listeners.unix_path
                )
                task_status.started(RunningDaemon(manager, listeners.unix_path, listeners.tcp_url))
                await trio.sleep_forever()


@contextlib.asynccontextmanager
async def _open_mesh(settings: Settings, manager: SessionManager) -> AsyncIterator[Mesh | None]:
    """The daemon's membership of the mesh (:func:`trio_bridge.mesh.open_mesh`), or None without
    ``redis`` (then the mesh is never imported).

    Raises:
        DuplicateComputerError, RedisUnavailableError: see ``open_mesh``.
    """
    if settings.redis is None:
        yield None
        return
    from .mesh import open_mesh

    async with open_mesh(settings, manager) as mesh:
        yield mesh


async def _main(settings: Settings) -> int:
    stopping = False
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            nonlocal stopping
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    if stopping:
                        if signum == signal.SIGINT:
                            log.warning("second interrupt: exiting now")
                            os._exit(130)
                        continue
                    stopping = True
                    log.info(
                        "%s: shutting down (at most %g s)",
                        signal.Signals(signum).name,
                        settings.shutdown_timeout,
                    )
                    # Components clean up (shielded, bounded) as they are cancelled; the
                    # deadline caps the whole shutdown.
                    nursery.cancel_scope.deadline = trio.current_time() + settings.shutdown_timeout
                    nursery.cancel_scope.cancel()

        nursery.start_soon(watch_signals)
        await nursery.start(serve_daemon, settings)
    log.info("stopped")
    return 0


def _raise_descriptor_limit() -> None:
    # Connections, sessions and their pipes all take descriptors: the soft limit (often 1024)
    # goes up to the hard one, so a flood meets max_connections, not EMFILE.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 16, hard)
            )


def run_daemon(settings: Settings) -> int:
    """The ``trio-bridge daemon`` command: runs in the foreground, logs to stderr."""
    from ._lock import AlreadyRunningError
    from ._logging import setup_logging
    from .api import ApiBindError

    fatal: tuple[type[Exception], ...] = (
        AlreadyRunningError, CrashLoopError, ApiBindError, UnsafeDirectoryError, TokenFileError,
    )  # fmt: skip
    if settings.redis is not None:
        from .mesh import DuplicateComputerError, RedisUnavailableError

        fatal += (DuplicateComputerError, RedisUnavailableError)
    setup_logging(settings.log_format)
    # Read once; from here on no child of ours (tmux, hooks, sessions) inherits a secret, and
    # everything the daemon creates is private to its user (umask applies to tmux too).
    for name in secret_env_names():
        os.environ.pop(name, None)
    _raise_descriptor_limit()
    failure: list[BaseException] = []
    try:
        return trio.run(_main, settings)
    except* fatal as group:
        failure.extend(group.exceptions)
    while isinstance(failure[0], BaseExceptionGroup):
        failure[:] = failure[0].exceptions
    print(f"trio-bridge daemon: {failure[0]}", file=sys.stderr)
    return 1
