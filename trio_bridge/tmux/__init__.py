"""The tmux session engine: trio-bridge's own tmux server and its control-mode client."""

from ._keys import KEYS, InvalidKeyError
from ._protocol import InvalidTextError
from .control import ControlClient, ControlClientClosedError, TmuxCommandError, open_control_client
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
    "KEYS",
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
    "TmuxUnavailableError",
    "new_session_id",
    "open_control_client",
]
