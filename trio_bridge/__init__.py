"""trio-bridge: supervised terminal sessions in tmux, built on Trio.

The public surface is re-exported here lazily, so that ``import trio_bridge``
(and so every CLI command) stays cheap: each name is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .config import ConfigError, Settings, Timeouts, load_settings
    from .process import (
        ProcessResult,
        SubprocessError,
        SubprocessFailedError,
        SubprocessStartError,
        SubprocessTimeoutError,
        open_process_group,
        run_process,
    )
    from .runner import RunResult, run_session
    from .tmux import SessionSpec, TmuxServer, open_control_client

_EXPORTS = {
    "ConfigError": "config",
    "Settings": "config",
    "Timeouts": "config",
    "load_settings": "config",
    "ProcessResult": "process",
    "SubprocessError": "process",
    "SubprocessFailedError": "process",
    "SubprocessStartError": "process",
    "SubprocessTimeoutError": "process",
    "open_process_group": "process",
    "run_process": "process",
    "RunResult": "runner",
    "run_session": "runner",
    "SessionSpec": "tmux",
    "TmuxServer": "tmux",
    "open_control_client": "tmux",
}

__all__ = [
    "ConfigError",
    "ProcessResult",
    "RunResult",
    "SessionSpec",
    "Settings",
    "SubprocessError",
    "SubprocessFailedError",
    "SubprocessStartError",
    "SubprocessTimeoutError",
    "Timeouts",
    "TmuxServer",
    "__version__",
    "load_settings",
    "open_control_client",
    "open_process_group",
    "run_process",
    "run_session",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trio_bridge' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
