"""The tmux session engine: trio-bridge's own tmux server (every tmux command, typed errors),
what a session runs (spec.py), and the control-mode client."""

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
    DuplicateSessionError,
    PaneStatus,
    SessionInfo,
    SessionNotFoundError,
    SessionSpec,
    TmuxError,
    TmuxServer,
    TmuxUnavailableError,
)
from .spec import gate_channel, new_session_id

__all__ = [
    "KEY_NAMES",
    "KEY_PATTERN",
    "ControlClient",
    "ControlClientClosedError",
    "DuplicateSessionError",
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
    "gate_channel",
    "new_session_id",
    "open_control_client",
]
