"""Session records and their store (the daemon's memory of every session it started)."""

from .manager import EventKind, SessionEndedError, SessionEvent, SessionManager, UnknownSessionError
from .store import SessionRecord, SessionState, SessionStore, open_session_store

__all__ = [
    "EventKind",
    "SessionEndedError",
    "SessionEvent",
    "SessionManager",
    "SessionRecord",
    "SessionState",
    "SessionStore",
    "UnknownSessionError",
    "open_session_store",
]
