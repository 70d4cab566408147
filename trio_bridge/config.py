"""Settings: named defaults, overridable from the environment (``TRIO_BRIDGE_<NAME>``).

Every timeout the project uses is a named constant in :class:`Timeouts`; nothing
else in the package hard-codes a number of seconds for an external command.

This module imports only the standard library and attrs: it sits on the lowest
floor and is loaded by every command, including the fast CLI client ones.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import attrs

__all__ = [
    "DEFAULT_TIMEOUTS",
    "ConfigError",
    "Settings",
    "Timeouts",
    "load_settings",
]

ENV_PREFIX = "TRIO_BRIDGE_"


class ConfigError(ValueError):
    """A setting has a bad value. The message is one line and names the setting."""


@attrs.frozen
class Timeouts:
    """Named limits, in seconds, for everything trio-bridge waits on."""

    #: one short tmux command (new-session, send-keys, capture-pane, ...)
    tmux: float = 5.0
    #: loading a (possibly 100 KB) text into a tmux buffer
    tmux_load_buffer: float = 10.0
    #: between SIGTERM and SIGKILL when a process group is stopped
    kill_grace: float = 1.0
    #: a long-lived child (control client) gets this long to exit after stdin closes
    control_close: float = 2.0


DEFAULT_TIMEOUTS = Timeouts()

_SOCKET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _default_state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local/state")
    return Path(base) / "trio-bridge"


@attrs.frozen
class Settings:
    """The effective settings of one trio-bridge process."""

    #: name of trio-bridge's own tmux server (``tmux -L <name>``); never the user's default
    tmux_socket: str = "trio-bridge"
    #: the tmux executable
    tmux_binary: str = "tmux"
    #: where state (database, logs) lives
    state_dir: Path = attrs.field(factory=lambda: _default_state_dir(os.environ))
    timeouts: Timeouts = DEFAULT_TIMEOUTS


def _parse_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: expected a positive number of seconds, got {raw!r}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from defaults overridden by ``TRIO_BRIDGE_*`` variables.

    Raises:
        ConfigError: a variable holds a bad value (the message names it).
    """
    env = os.environ if env is None else env
    kwargs: dict[str, object] = {"state_dir": _default_state_dir(env)}

    socket = env.get(ENV_PREFIX + "TMUX_SOCKET")
    if socket is not None:
        if not _SOCKET_NAME.match(socket):
            raise ConfigError(
                f"{ENV_PREFIX}TMUX_SOCKET: expected 1-64 letters, digits, '.', '_' or '-', got {socket!r}"
            )
        kwargs["tmux_socket"] = socket
    binary = env.get(ENV_PREFIX + "TMUX_BINARY")
    if binary is not None:
        if not binary.strip():
            raise ConfigError(f"{ENV_PREFIX}TMUX_BINARY: must not be empty")
        kwargs["tmux_binary"] = binary
    state_dir = env.get(ENV_PREFIX + "STATE_DIR")
    if state_dir is not None:
        kwargs["state_dir"] = Path(state_dir).expanduser()

    timeout_overrides: dict[str, float] = {}
    for field in attrs.fields(Timeouts):
        name = f"{ENV_PREFIX}TIMEOUT_{field.name.upper()}"
        raw = env.get(name)
        if raw is not None:
            timeout_overrides[field.name] = _parse_seconds(name, raw)
    if timeout_overrides:
        kwargs["timeouts"] = attrs.evolve(DEFAULT_TIMEOUTS, **timeout_overrides)
    return Settings(**kwargs)  # type: ignore[arg-type]
