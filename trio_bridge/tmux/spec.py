"""What a new session runs: its command, directory, environment, size and start gate.

Checked when made (names, NUL bytes, sizes), so that :class:`~trio_bridge.tmux.TmuxServer`
never hands tmux anything it could misread.
"""

from __future__ import annotations

import os
import re
import shlex
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from ..config import secret_env_names

__all__ = ["SessionSpec", "env_file_text", "gate_channel", "is_env_name", "new_session_id", "write_private"]

# \Z, not $: "$" also matches before a final newline, and a name "touch\n" would have run
# `touch` from the session's environment file
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Variables the pane must get from tmux (or trio-bridge) itself, never from the caller: a
# TRIO_BRIDGE_SESSION_ID inherited from an outer session would send a nested agent's hooks there.
_TMUX_OWNED_ENV = frozenset({"TMUX", "TMUX_PANE", "TERM", "COLUMNS", "LINES", "TRIO_BRIDGE_SESSION_ID"})


def new_session_id() -> str:
    """A fresh session id: 12 hex digits, safe in names, paths and URLs."""
    return uuid.uuid4().hex[:12]


def _to_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def env_file_text(env: Mapping[str, str]) -> str:
    return "".join(
        f"{name}={shlex.quote(value)}\n"
        for name, value in sorted(env.items())
        if name not in _TMUX_OWNED_ENV and name not in secret_env_names()
    )


def write_private(path: Path, text: str) -> None:
    # Never through a link planted where the file goes.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def is_env_name(name: str) -> bool:
    """Whether ``name`` can be an environment variable of a session (a POSIX shell name)."""
    return bool(_ENV_NAME.match(name))


def _check_env(env: Mapping[str, str]) -> dict[str, str]:
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name {name!r}")
        if "\0" in value:
            raise ValueError(f"environment variable {name} contains a NUL byte")
    return dict(env)


@attrs.frozen
class SessionSpec:
    """What to start in a new session.

    ``env`` is applied on top of the tmux server's environment (the pane keeps
    tmux's own ``TERM``/``TMUX``). The command starts only when the caller
    releases the gate (:meth:`TmuxServer.release`), so readers can attach first
    and miss no byte. When it ends, its exit status is written to
    ``status_path`` (see :func:`read_exit_status`).
    """

    argv: tuple[str, ...] = attrs.field(converter=_to_tuple)
    cwd: Path = attrs.field(converter=Path)
    #: where the session's start wrapper writes the command's exit status
    status_path: Path = attrs.field(converter=Path)
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_check_env)
    width: int = attrs.field(default=80)
    height: int = attrs.field(default=24)
    #: the shell command tmux pipes the pane's output to (``pipe-pane``)
    pipe_command: str = "exec cat >/dev/null"
    session_id: str = attrs.field(factory=new_session_id)
    #: variables of the tmux server's environment the command does not inherit (``env`` is
    #: applied after: what it sets stays)
    unset_env: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    #: a FIFO the command reads as its stdin instead of the pane's terminal (its stdout and
    #: stderr stay the terminal); None: the terminal
    stdin_path: Path | None = None

    @argv.validator
    def _check_argv(self, _attribute: object, value: tuple[str, ...]) -> None:
        if not value:
            raise ValueError("the command must not be empty")
        for arg in value:
            if "\0" in arg:
                raise ValueError("command arguments cannot contain a NUL byte")

    @unset_env.validator
    def _check_unset(self, _attribute: object, value: tuple[str, ...]) -> None:
        for name in value:
            if not _ENV_NAME.match(name) or name in _TMUX_OWNED_ENV:
                raise ValueError(f"invalid environment variable name to unset {name!r}")

    @width.validator
    @height.validator
    def _check_size(self, attribute: attrs.Attribute[int], value: int) -> None:
        if not 2 <= value <= 1000:
            raise ValueError(f"session {attribute.name} must be between 2 and 1000, not {value}")

    @property
    def name(self) -> str:
        return f"tb-{self.session_id}"

    @property
    def env_path(self) -> Path:
        """The private (0600) file the start wrapper reads ``env`` from, then deletes."""
        return self.status_path.with_name(f"{self.session_id}.env")

    @property
    def gate_channel(self) -> str:
        return gate_channel(self.session_id)


def gate_channel(session_id: str) -> str:
    """The tmux ``wait-for`` channel a session's command waits on before it starts."""
    return f"tb-go-{session_id}"
