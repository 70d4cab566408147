"""The settings a command line gives: its settings flags (as the parser stores them) and the
settings they resolve to. Below the parser, the dispatch and the completers, which all use it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Resolved

__all__ = ["dest", "resolve", "settings_flags"]


def dest(name: str) -> str:
    """The attribute of the parsed arguments that holds setting ``name``'s flag."""
    return "setting__" + name.replace(".", "__")


def settings_flags(args: argparse.Namespace) -> dict[str, object]:
    """The settings given as flags, by setting name."""
    from ..config import SETTINGS

    return {s.name: getattr(args, dest(s.name)) for s in SETTINGS if hasattr(args, dest(s.name))}


def resolve(args: argparse.Namespace) -> Resolved:
    """The settings for ``args`` (its settings flags and ``--config``).

    Raises:
        ConfigError: a bad value, an unknown key or an unreadable file (one line).
    """
    from ..config import resolve_settings

    config_file = getattr(args, "config", None)
    return resolve_settings(
        flags=settings_flags(args), config_file=Path(config_file).expanduser() if config_file else None
    )
