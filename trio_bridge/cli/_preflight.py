"""Checks made before a command is started (by ``run``, and by ``new`` before it creates
anything): light on imports, so that the client commands stay fast."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ._exit import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_START_FAILED

__all__ = ["StartFailed", "check_command", "env_pairs"]


class StartFailed(Exception):
    """A one-line reason why the command cannot be started, and the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_START_FAILED) -> None:
        super().__init__(message)
        self.code = code


def check_command(argv0: str, cwd: Path, path: str | None) -> None:
    """Refuse, with the shell's exit codes, a command that cannot be executed.

    Raises:
        StartFailed: not found (127) or not executable (126).
    """
    if "/" in argv0:
        target = cwd / argv0
        if not target.exists():
            raise StartFailed(f"no such file: {argv0}", EXIT_NOT_FOUND)
        if target.is_dir() or not os.access(target, os.X_OK):
            raise StartFailed(f"not executable: {argv0}", EXIT_NOT_EXECUTABLE)
    elif shutil.which(argv0, path=path) is None:
        raise StartFailed(f"command not found: {argv0}", EXIT_NOT_FOUND)


def env_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``--env NAME=VALUE`` arguments (``run``, ``new``) as a mapping.

    Raises:
        StartFailed: an argument without ``=`` or with a name that is not a variable name.
    """
    from ..tmux.server import is_env_name

    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not is_env_name(name):
            raise StartFailed(f"--env expects NAME=VALUE with a valid variable name, got {pair!r}")
        env[name] = value
    return env
