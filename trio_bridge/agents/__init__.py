"""AI coding agents as sessions: profiles (how each CLI starts, with its hooks configured per
session) and their state (from hooks, output, transcripts and the screen).

Standard library only, so that the CLI can read profiles from the configuration cheaply."""

from .profiles import DEFAULT_PROFILES, AgentLaunch, AgentProfile, keep_agent_files, launch, parse_profiles
from .state import AgentState, AgentTracker

__all__ = [
    "DEFAULT_PROFILES", "AgentLaunch", "AgentProfile", "AgentState", "AgentTracker",
    "keep_agent_files", "launch", "parse_profiles",
]  # fmt: skip
