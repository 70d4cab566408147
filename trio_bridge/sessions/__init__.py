"""Session records and their store (the daemon's memory of every session it started)."""

from .store import SessionRecord, SessionState, SessionStore, open_session_store

__all__ = ["SessionRecord", "SessionState", "SessionStore", "open_session_store"]
