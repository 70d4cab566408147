"""How the session manager is tuned: one frozen value, passed to its constructor."""

from __future__ import annotations

import attrs

__all__ = ["SessionTuning"]


@attrs.frozen
class SessionTuning:
    """The session manager's knobs (seconds unless said otherwise). Tests pass shorter ones;
    on a running manager a test may replace the whole value (``attrs.evolve``), never a field."""

    #: bytes per segment of a session's output log
    segment_size: int = 1 << 20
    #: bytes of output a session's log keeps (older segments are dropped)
    log_max_bytes: int = 64 << 20
    #: an agent ``working`` with no output and no hook for this long is ``stuck``
    agent_stuck_after: float = 120.0
    #: prompt submission: how long to wait for a sign that a paste / an Enter was taken
    prompt_paste_timeout: float = 2.0
    #: how long a prompt waits for an agent that is still ``starting`` (its start hook)
    prompt_ready_timeout: float = 30.0
    #: how long a prompt's submission waits for its sign (hook or output) after each Enter
    prompt_confirm_timeout: float = 5.0
    #: quiet output for this long after a paste means the agent has taken it in
    prompt_paste_settle: float = 0.3
    #: how long an agent is quiet before a screen showing its prompt box (or a dialog) is
    #: believed (a turn's pause between words is shorter)
    agent_screen_after: float = 1.5
    #: how often agents' states are checked (the clock, transcripts, screens)
    agent_check_interval: float = 0.5
    #: a prompt given to a busy agent that queued it: how long to wait for the agent to take it
    #: (then confirmed) before answering "queued" (``PromptQueuedError``)
    prompt_queue_wait: float = 30.0
