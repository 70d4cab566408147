"""Session output: the durable per-session log (segment files written by tmux's pipe)."""

from .log import OffsetDroppedError, SegmentLog, split_command

__all__ = ["OffsetDroppedError", "SegmentLog", "split_command"]
