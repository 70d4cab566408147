"""Sessions: the manager that starts, watches and re-adopts them, agent tracking, events,
and the store of their records (the daemon's memory of every session it started)."""

from ._answers import ANSWERS_KEPT, Answer
from ._stdin import StdinFed, StdinPipe
from .manager import EventKind, SessionEndedError, SessionEvent, SessionManager, UnknownSessionError
from .store import SessionRecord, SessionState, SessionStore, open_session_store
from .tuning import SessionTuning

__all__ = [
    "ANSWERS_KEPT",
    "Answer",
    "EventKind",
    "SessionEndedError",
    "SessionEvent",
    "SessionManager",
    "SessionRecord",
    "SessionState",
    "SessionStore",
    "SessionTuning",
    "StdinFed",
    "StdinPipe",
    "UnknownSessionError",
    "open_session_store",
]
