"""The tmux session engine: trio-bridge's own tmux server and its control-mode client."""

from ._keys import KEY_NAMES, KEY_PATTERN, InvalidKeyError
from ._protocol import InvalidTextError
from .control import (
    ControlClient,
    ControlClientClosedError,
    TmuxCommandError,
    TmuxTimeoutError,
    open_control_client,
)
from .server import (
    PaneStatus,
    SessionInfo,
    SessionNotFoundError,
    SessionSpec,
    TmuxError,
    TmuxServer,
    TmuxUnavailableError,
    new_session_id,
)

__all__ = [
    "KEY_NAMES",
    "KEY_PATTERN",
    "ControlClient",
    "ControlClientClosedError",
    "InvalidKeyError",
    "InvalidTextError",
    "PaneStatus",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionSpec",
    "TmuxCommandError",
    "TmuxError",
    "TmuxServer",
    "TmuxTimeoutError",
    "TmuxUnavailableError",
    "new_session_id",
    "open_control_client",
]
