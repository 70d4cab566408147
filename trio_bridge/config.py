"""Settings: defaults < config file < environment < command-line flags, with provenance.

Every setting has one entry in :data:`SETTINGS`: its name, how a value is parsed and checked,
and a one-line description. From that table come the config file keys (TOML, dotted names
as tables: ``[timeouts] tmux = 5``), the environment variables (``TRIO_BRIDGE_`` + the name
upper-cased, dots as underscores, ``timeouts.tmux`` -> ``TRIO_BRIDGE_TIMEOUT_TMUX``), the
command-line flags (``--tmux-socket``, ``--timeout-tmux``) and ``trio-bridge config``.

Paths follow the XDG base directory conventions: state (database, logs) in
``$XDG_STATE_HOME/trio-bridge``, sockets in ``$XDG_RUNTIME_DIR/trio-bridge`` (falling back to
the state directory), configuration in ``$XDG_CONFIG_HOME/trio-bridge/config.toml``.

This module imports only the standard library: every command loads it, and start-up time
matters (its classes are frozen dataclasses, not attrs classes: attrs costs ~40 ms to import).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .agents.profiles import DEFAULT_PROFILES, AgentProfile, parse_profiles

__all__ = [
    "DEFAULT_TIMEOUTS",
    "SETTINGS",
    "ConfigError",
    "Resolved",
    "Settings",
    "Timeouts",
    "load_settings",
    "resolve_settings",
    "secret_env_names",
]

ENV_PREFIX = "TRIO_BRIDGE_"
#: the key under which the file's parsed [agents] tables travel (not a setting of its own)
_AGENTS = "\0agents"


class ConfigError(ValueError):
    """A setting has a bad value. The message is one line and names the setting and its source."""


@dataclasses.dataclass(frozen=True)
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
    #: a session started with a stdin pipe waits this long for its feeder (``PUT .../stdin``)
    #: before the daemon closes the pipe: the command's EOF
    stdin_attach: float = 10.0


DEFAULT_TIMEOUTS = Timeouts()


@dataclasses.dataclass(frozen=True)
class Settings:
    """The effective settings of one trio-bridge process."""

    #: where state (database, logs, run files) lives
    state_dir: Path
    #: where sockets live
    runtime_dir: Path
    #: name of trio-bridge's own tmux server (``tmux -L <name>``); never the user's default
    tmux_socket: str = "trio-bridge"
    #: the tmux executable
    tmux_binary: str = "tmux"
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    #: daemon log lines: "text" or "json" (one object per line)
    log_format: str = "text"
    #: seconds the daemon's graceful shutdown may take before the rest is cancelled
    shutdown_timeout: float = 5.0
    #: ended sessions kept (newest first), and for how many days at most
    retention_count: int = 200
    retention_days: float = 7.0
    #: output bytes kept per session (whole 1 MiB segments; the oldest are dropped)
    output_max_bytes: int = 64 << 20
    #: an extra TCP listener for the API ("HOST:PORT"); the unix socket is always there
    bind: str | None = None
    #: the API's bearer token: required by the daemon from every request when set, sent by clients
    token: str | None = dataclasses.field(default=None, repr=False)
    #: where clients find the daemon: "http://HOST:PORT"; unset means the unix socket
    url: str | None = None
    #: seconds a client (run, tail -f, wait, attach) keeps reconnecting to a daemon that went away
    reconnect_timeout: float = 30.0
    #: largest request body the API accepts (413 beyond)
    max_body_bytes: int = 1 << 20
    #: largest text one input request may type into a session (413 beyond)
    max_input_bytes: int = 256 << 10
    #: the Redis of a mesh of computers ("redis://[:password@]host:port/db", "rediss://" for
    #: TLS); unset: this computer alone, and Redis is never loaded
    redis: str | None = dataclasses.field(default=None, repr=False)
    #: this computer's name in the mesh (default: :func:`default_computer_name`)
    computer: str | None = None
    #: seconds between heartbeats, and how long one is valid
    heartbeat_interval: float = 5.0
    heartbeat_ttl: float = 15.0
    #: a secret shared by the mesh's computers: every request and reply is signed with it
    #: (HMAC-SHA256) and unsigned or forged ones are refused
    mesh_secret: str | None = dataclasses.field(default=None, repr=False)
    #: files holding the secrets above (one line each), so that no secret sits in the
    #: process table or the environment; read at start, the value then treated as given
    token_file: Path | None = None
    redis_file: Path | None = None
    mesh_secret_file: Path | None = None
    #: TCP requests must name this daemon in ``Host``: its listening address, ``localhost``,
    #: an IP address, or one of these names (a DNS-rebinding page names its own domain)
    allowed_hosts: tuple[str, ...] = ()
    #: origins (``scheme://host[:port]``) whose pages may call the API from a browser, beyond
    #: the daemon's own listener; any other ``Origin`` is refused with 403
    allowed_origins: tuple[str, ...] = ()
    #: open connections per TCP listener at most (more are closed at once); the unix socket
    #: has its own allowance, so the owner gets in while TCP is flooded
    max_connections: int = 256
    #: agent profiles by name: the defaults, changed by the config file's ``[agents.NAME]``
    #: tables (see :mod:`trio_bridge.agents.profiles`)
    agents: Mapping[str, AgentProfile] = dataclasses.field(default_factory=lambda: dict(DEFAULT_PROFILES))
    #: the Telegram bot's token (from BotFather); unset: no Telegram front end, nothing of it loaded
    telegram_token: str | None = dataclasses.field(default=None, repr=False)
    #: a file holding the token instead (read at start; must not be readable by group or others)
    telegram_token_file: Path | None = None
    #: the forum supergroup whose topics show the sessions (its id, e.g. -1001234567890)
    telegram_chat: int | None = None
    #: the Telegram user ids allowed to act; everyone else is ignored
    telegram_users: tuple[int, ...] = ()
    #: the Bot API's base URL (requests go to ``{url}/bot{token}/{method}``)
    telegram_api_url: str = "https://api.telegram.org"
    #: serve the web dashboard at ``/`` of the TCP listener (``trio-bridge web`` prints a login link)
    web: bool = False

    @property
    def api_socket(self) -> Path:
        """The daemon's API unix socket (mode 0600, in a 0700 directory)."""
        return self.runtime_dir / "api.sock"

    @property
    def token_path(self) -> Path:
        """Where a daemon with a TCP listener and no configured token keeps the token it made
        (mode 0600): the owner's CLI reads it, nobody else can."""
        return self.state_dir / "api.token"

    def client_token(self) -> str | None:
        """The token a client sends: the configured one; else, to a TCP ``url``, the one the
        daemon made (if this user can read it)."""
        if self.token is not None or self.url is None:
            return self.token
        try:
            return read_secret_file(self.token_path)
        except ValueError:
            return None


def default_computer_name() -> str:
    """What this computer is called when the ``computer`` setting is unset: the host name's
    first label (``localhost`` for an empty one)."""
    import socket

    return socket.gethostname().split(".")[0] or "localhost"


# -- parsers: each takes the raw value (str from env/flags, TOML types from the file) ----------

_SOCKET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _socket_name(raw: object) -> str:
    if not isinstance(raw, str) or not _SOCKET_NAME.match(raw):
        raise ValueError(f"expected 1-64 letters, digits, '.', '_' or '-', got {raw!r}")
    return raw


def _nonempty(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"expected a non-empty string, got {raw!r}")
    return raw


def _path(raw: object) -> Path:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"expected a path, got {raw!r}")
    return Path(raw).expanduser()


def _seconds(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"expected a number of seconds, got {raw!r}")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {raw!r}") from None
    else:
        raise ValueError(f"expected a number of seconds, got {raw!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive number of seconds, got {raw!r}")
    return value


def _log_format(raw: object) -> str:
    if raw not in ("text", "json"):
        raise ValueError(f"expected 'text' or 'json', got {raw!r}")
    return str(raw)


def _count(raw: object) -> int:
    try:
        value = int(str(raw)) if not isinstance(raw, bool) else -1
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {raw!r}")
    return value


def _switch(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _days(raw: object) -> float:
    return _seconds(raw)


def _size(raw: object) -> int:
    value = _count(raw)
    if value < 1:
        raise ValueError(f"expected a number of bytes >= 1, got {raw!r}")
    return value


def parse_bind(raw: object) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) as (host, port)."""
    if not isinstance(raw, str):
        raise ValueError(f"expected HOST:PORT, got {raw!r}")
    host, sep, port_text = raw.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"expected HOST:PORT with an IPv6 host in brackets, got {raw!r}")
    if (
        not sep
        or not host
        or not (port_text.isascii() and port_text.isdigit())
        or not 0 <= int(port_text) <= 65535
    ):
        raise ValueError(f"expected HOST:PORT (port 0-65535), got {raw!r}")
    return host, int(port_text)


def _bind(raw: object) -> str:
    parse_bind(raw)
    return str(raw)


def _token(raw: object) -> str:
    if not isinstance(raw, str) or len(raw) < 16 or not raw.isprintable() or " " in raw:
        raise ValueError("expected at least 16 printable characters without spaces")
    return raw


def _redis_url(raw: object) -> str:
    if not isinstance(raw, str) or not re.match(r"^(redis|rediss|unix)://\S+$", raw):
        raise ValueError("expected redis://[:PASSWORD@]HOST:PORT[/DB] (rediss:// for TLS)")
    return raw


def _computer(raw: object) -> str:
    if not isinstance(raw, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", raw):
        raise ValueError(f"expected 1-63 letters, digits, '.', '_' or '-', got {raw!r}")
    return raw


_TELEGRAM_TOKEN = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$")


def _telegram_token(raw: object) -> str:
    if not isinstance(raw, str) or not _TELEGRAM_TOKEN.match(raw.strip()):
        raise ValueError("expected a bot token as BotFather gives it: DIGITS:LETTERS")
    return raw.strip()


def _chat_id(raw: object) -> int:
    try:
        value = int(str(raw)) if not isinstance(raw, bool) else 0
    except ValueError:
        raise ValueError(f"expected a chat id (a whole number), got {raw!r}") from None
    if value == 0:
        raise ValueError(f"expected a chat id (a whole number), got {raw!r}")
    return value


def _user_ids(raw: object) -> tuple[int, ...]:
    items = raw.replace(",", " ").split() if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str | int) for i in items):
        raise ValueError(f"expected user ids (a list, or separated by commas), got {raw!r}")
    ids = []
    for item in items:
        if isinstance(item, bool) or not str(item).isdigit() or int(item) <= 0:
            raise ValueError(f"expected positive user ids, got {item!r}")
        ids.append(int(item))
    return tuple(ids)


def _api_url(raw: object) -> str:
    match = isinstance(raw, str) and re.match(
        r"^(https?)://(\[[0-9a-fA-F:]+\]|[^/\s:\[\]]+)(:\d+)?(/\S*)?$", raw
    )
    if not match:
        raise ValueError(f"expected https://HOST[:PORT][/PATH], got {raw!r}")
    # the token travels in the URL's path: in clear text only to this computer itself
    if match.group(1) == "http" and match.group(2) not in ("127.0.0.1", "localhost", "[::1]"):
        raise ValueError(f"plain http is for a loopback address only (the token is in the URL), got {raw!r}")
    return str(raw).rstrip("/")


def _url(raw: object) -> str:
    if not isinstance(raw, str) or not re.match(r"^https?://[^/\s]+/?$", raw):
        raise ValueError(f"expected http://HOST:PORT or https://HOST:PORT, got {raw!r}")
    return raw.rstrip("/")


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_ORIGIN = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


def _list(raw: object) -> list[str]:
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return [item.strip() for item in raw]
    raise ValueError(f"expected a list of strings (or a comma-separated string), got {raw!r}")


def _hosts(raw: object) -> tuple[str, ...]:
    names = _list(raw)
    for name in names:
        if not _HOST_NAME.match(name):
            raise ValueError(f"expected host names (no port, no scheme), got {name!r}")
    return tuple(name.lower() for name in names)


def _origins(raw: object) -> tuple[str, ...]:
    origins = _list(raw)
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ValueError(f"expected origins like http://HOST[:PORT], got {origin!r}")
    return tuple(origin.lower() for origin in origins)


def _connections(raw: object) -> int:
    value = _count(raw)
    if not 1 <= value <= 65536:
        raise ValueError(f"expected a number of connections from 1 to 65536, got {raw!r}")
    return value


def read_secret_file(path: Path) -> str:
    """The secret in ``path`` (its first line). The file must be the user's own and private.

    Raises:
        ValueError: unreadable, empty, or readable by others (one line, saying which).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY)
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & 0o077:
            raise ValueError(f"{str(path)!r} is readable by others (mode {mode & 0o777:o}); chmod 600 it")
        data = f.read(4096)
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{str(path)!r} is empty")
    return lines[0].strip()


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    parse: Callable[[object], Any]
    help: str
    #: never shown: ``trio-bridge config`` prints only whether it is set
    secret: bool = False
    #: this setting names a file holding the value of that (secret) setting
    file_for: str | None = None
    #: an on/off setting: its flag takes no value (``--web``)
    switch: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.replace("timeouts.", "timeout.").replace(".", "_").upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("timeouts.", "timeout.").replace(".", "-").replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("tmux_socket", _socket_name, "name of trio-bridge's own tmux server (tmux -L NAME)"),
    Setting("tmux_binary", _nonempty, "the tmux executable"),
    Setting("state_dir", _path, "state directory (database, logs, run files)"),
    Setting("runtime_dir", _path, "runtime directory (sockets)"),
    Setting("timeouts.tmux", _seconds, "seconds one tmux command may take"),
    Setting("timeouts.tmux_load_buffer", _seconds, "seconds loading text into a tmux buffer may take"),
    Setting("timeouts.kill_grace", _seconds, "seconds between SIGTERM and SIGKILL"),
    Setting("timeouts.control_close", _seconds, "seconds a control client gets to exit"),
    Setting("timeouts.stdin_attach", _seconds, "seconds a session's stdin pipe waits for its feeder"),
    Setting("log_format", _log_format, "daemon log format: text or json"),
    Setting("shutdown_timeout", _seconds, "seconds the daemon's graceful shutdown may take"),
    Setting("retention_count", _count, "ended sessions kept, newest first"),
    Setting("retention_days", _days, "days an ended session is kept at most"),
    Setting("output_max_bytes", _count, "output bytes kept per session"),
    Setting("bind", _bind, "also serve the API on TCP HOST:PORT (always with a token)"),
    Setting("token", _token, "API bearer token (daemon: required from clients; client: sent)", secret=True),
    Setting("url", _url, "daemon URL for clients, http://HOST:PORT (default: the unix socket)"),
    Setting("reconnect_timeout", _seconds, "seconds clients keep reconnecting to a daemon that went away"),
    Setting("max_body_bytes", _size, "largest API request body, in bytes"),
    Setting("max_input_bytes", _size, "largest text one input request may type, in bytes"),
    Setting(
        "redis", _redis_url, "Redis URL of a mesh of computers (unset: this computer alone)", secret=True
    ),
    Setting("computer", _computer, "this computer's name in the mesh (default: the host name)"),
    Setting("heartbeat_interval", _seconds, "seconds between this computer's heartbeats"),
    Setting("heartbeat_ttl", _seconds, "seconds a heartbeat stays valid (offline after)"),
    Setting("mesh_secret", _token, "shared secret signing every mesh message (HMAC)", secret=True),
    Setting("token_file", _path, "a file holding the token (instead of token)", file_for="token"),
    Setting("redis_file", _path, "a file holding the Redis URL (instead of redis)", file_for="redis"),
    Setting("mesh_secret_file", _path, "a file holding the mesh secret", file_for="mesh_secret"),
    Setting("allowed_hosts", _hosts, "extra host names TCP requests may carry in Host (comma-separated)"),
    Setting("allowed_origins", _origins, "extra browser origins allowed to call the API (comma-separated)"),
    Setting("max_connections", _connections, "open connections per TCP listener at most"),
    Setting(
        "telegram_token", _telegram_token, "Telegram bot token (unset: no Telegram front end)", secret=True
    ),
    Setting("telegram_token_file", _path, "a file holding the Telegram bot token", file_for="telegram_token"),
    Setting("telegram_chat", _chat_id, "the Telegram forum supergroup's chat id"),
    Setting("telegram_users", _user_ids, "Telegram user ids allowed to act (comma-separated)"),
    Setting("telegram_api_url", _api_url, "the Telegram Bot API's base URL"),
    Setting("web", _switch, "serve the web dashboard on the TCP listener (see trio-bridge web)", switch=True),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Settings together with where each value came from."""

    settings: Settings
    #: setting name -> "default", "file <path>", "env NAME" or "flag --name"
    sources: Mapping[str, str]
    config_file: Path


def secret_env_names() -> tuple[str, ...]:
    """The environment variables that carry secrets: a daemon drops them from its own
    environment once read, and no session ever inherits them."""
    return tuple(s.env for s in SETTINGS if s.secret)


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var)
    # The XDG spec: relative paths are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path(env.get("HOME") or Path.home()) / fallback


def _defaults(env: Mapping[str, str]) -> dict[str, Any]:
    state = _xdg(env, "XDG_STATE_HOME", ".local/state") / "trio-bridge"
    runtime_base = env.get("XDG_RUNTIME_DIR")
    runtime = Path(runtime_base) / "trio-bridge" if runtime_base and os.path.isabs(runtime_base) else state
    values: dict[str, Any] = {"tmux_socket": "trio-bridge", "tmux_binary": "tmux"}
    values.update(state_dir=state, runtime_dir=runtime)
    for field in dataclasses.fields(Timeouts):
        values[f"timeouts.{field.name}"] = getattr(DEFAULT_TIMEOUTS, field.name)
    for field in dataclasses.fields(Settings):
        if field.name not in ("state_dir", "runtime_dir", "timeouts", "agents") and field.name not in values:
            values[field.name] = field.default
    return values


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _read_file(path: Path, explicit: bool) -> dict[str, Any]:
    import tomllib

    try:
        with path.open("rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path}: not found") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    agents = table.pop("agents", {})
    if not isinstance(agents, dict):
        raise ConfigError(f"config file {path}: agents must be a table of [agents.NAME] tables")
    try:
        profiles = parse_profiles(agents)
    except ValueError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    values = _flatten(table)
    values[_AGENTS] = profiles
    for name in values:
        if name == _AGENTS:
            continue
        if name not in _BY_NAME:
            import difflib

            close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"config file {path}: unknown setting {name!r}{hint}")
    return values


def resolve_settings(
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    config_file: Path | None = None,
) -> Resolved:
    """Build the effective settings: defaults < config file < ``TRIO_BRIDGE_*`` < ``flags``.

    ``flags`` maps setting names to raw values given on the command line. The config file is
    ``config_file``, else ``$TRIO_BRIDGE_CONFIG``, else ``$XDG_CONFIG_HOME/trio-bridge/config.toml``
    (a missing default file is fine; a missing named one is an error).

    Raises:
        ConfigError: a bad value, an unknown key or an unreadable file (one line, naming it).
    """
    env = os.environ if env is None else env
    explicit = config_file is not None or bool(env.get(ENV_PREFIX + "CONFIG"))
    if config_file is None:
        named = env.get(ENV_PREFIX + "CONFIG")
        config_file = (
            Path(named).expanduser()
            if named
            else _xdg(env, "XDG_CONFIG_HOME", ".config") / "trio-bridge" / "config.toml"
        )
    values = _defaults(env)
    sources = dict.fromkeys(values, "default")
    from_file = _read_file(config_file, explicit)
    agents = from_file.pop(_AGENTS, None) or dict(DEFAULT_PROFILES)
    layers: list[tuple[str, Mapping[str, object]]] = [
        (f"file {config_file}", from_file),
        ("env", {s.name: env[s.env] for s in SETTINGS if s.env in env}),
        ("flag", dict(flags or {})),
    ]
    for origin, raw_values in layers:
        for name, raw in raw_values.items():
            setting = _BY_NAME[name]
            where = {"env": f"env {setting.env}", "flag": f"flag {setting.flag}"}.get(origin, origin)
            try:
                values[name] = setting.parse(raw)
                if setting.file_for is not None:
                    # The file gives the secret at this layer, as if it were given here.
                    target = _BY_NAME[setting.file_for]
                    values[target.name] = target.parse(read_secret_file(values[name]))
                    sources[target.name] = where
            except ValueError as exc:
                label = {"env": setting.env, "flag": setting.flag}.get(origin, f"{origin}: {name}")
                raise ConfigError(f"{label}: {exc}") from None
            sources[name] = where
    timeouts = Timeouts(**{f.name: values[f"timeouts.{f.name}"] for f in dataclasses.fields(Timeouts)})
    settings = Settings(
        timeouts=timeouts, agents=agents, **{k: v for k, v in values.items() if not k.startswith("timeouts.")}
    )
    if settings.heartbeat_ttl <= settings.heartbeat_interval:
        raise ConfigError(
            f"heartbeat_ttl ({settings.heartbeat_ttl:g} s) must be longer than "
            f"heartbeat_interval ({settings.heartbeat_interval:g} s)"
        )
    settings = _telegram(settings, sources)
    return Resolved(settings, sources, config_file)


def _telegram(settings: Settings, sources: dict[str, str]) -> Settings:
    """A chat required with a token."""
    if settings.telegram_token is not None and settings.telegram_chat is None:
        raise ConfigError("telegram_token is set but telegram_chat is not (the forum group's chat id)")
    return settings


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The effective settings from defaults, the config file and the environment."""
    return resolve_settings(env).settings


def setting_value(settings: Settings, name: str) -> object:
    """The value of a dotted setting name, e.g. ``timeouts.tmux``."""
    value: object = settings
    for part in name.split("."):
        value = getattr(value, part)
    return value
