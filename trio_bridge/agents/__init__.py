"""AI coding agents as sessions: their state (from their hooks). Profiles, prompt submission
and the real agents come with the rest of the agents issue."""

from .state import AgentState, AgentTracker

__all__ = ["AgentState", "AgentTracker"]
