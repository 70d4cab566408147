"""Session output: the durable per-session log (segment files written by tmux's pipe)."""

from .feed import Chunk, OutputFeed, Resync
from .log import OffsetDroppedError, SegmentLog, split_command
from .watch import LogChanges, LogWatch

__all__ = [
    "Chunk", "LogChanges", "LogWatch", "OffsetDroppedError", "OutputFeed", "Resync", "SegmentLog",
    "split_command",
]  # fmt: skip
