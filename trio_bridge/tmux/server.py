"""trio-bridge's own tmux server, driven through the bounded process helper.

Each method runs one ``tmux`` command (``tmux -L <socket> -f <our config>``)
through :func:`trio_bridge.process.run_process`, so every call has a deadline
and a timeout raises :class:`~trio_bridge.process.SubprocessTimeoutError`;
no method ever turns a timeout into "no such session".

User data never travels as a separate tmux argument that tmux could read as
a command separator (an argument ending in ``;``): the command, its
arguments, working directory and environment are packed into one POSIX shell
script, quoted with :func:`shlex.quote`.
"""

from __future__ import annotations

import os
import re
import shlex
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs
import trio

from ..config import DEFAULT_TIMEOUTS, Timeouts, secret_env_names
from ..process import ProcessResult, SubprocessFailedError, run_process
from . import _protocol
from ._keys import check_keys

__all__ = [
    "TMUX_COMMAND_MAX",
    "CommandTooLongError",
    "PaneStatus",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionSpec",
    "TmuxError",
    "TmuxServer",
    "TmuxUnavailableError",
    "new_session_id",
]

#: the user option that marks a tmux session as created by trio-bridge
ID_OPTION = "@trio_bridge_id"
#: how many times (10 ms apart) a start wrapper asks tmux whether it has read the pane to its
#: end before it exits anyway (a background process holds the terminal)
_END_POLLS = 50
#: exit status of the start wrapper when it cannot hand over to the command
START_FAILED_STATUS = 125

# \Z, not $: "$" also matches before a final newline, and a name "touch\n" would have run
# `touch` from the session's environment file
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DRAIN_CHECK_INTERVAL = 0.002
# Variables the pane must get from tmux (or trio-bridge) itself, never from the caller: a
# TRIO_BRIDGE_SESSION_ID inherited from an outer session would send a nested agent's hooks there.
_TMUX_OWNED_ENV = frozenset({"TMUX", "TMUX_PANE", "TERM", "COLUMNS", "LINES", "TRIO_BRIDGE_SESSION_ID"})

_NO_SERVER = ("no server running", "error connecting to", "server exited unexpectedly")
_NO_SESSION = ("can't find session", "no such session", "can't find pane", "can't find window")

#: trio-bridge's own minimal tmux configuration, read when our server starts
TMUX_CONFIG = """\
# trio-bridge's private tmux server: written by trio-bridge, do not edit.
set-option -g default-shell /bin/sh
set-option -g history-limit 50000
set-option -g remain-on-exit on
set-option -g status off
set-option -g exit-empty on
set-option -g escape-time 0
"""


class TmuxError(Exception):
    """tmux refused or failed a command (the message carries tmux's own words)."""


#: bytes a tmux command's arguments may take, each with its NUL (tmux 3.3a packs them into one
#: imsg of at most 16384 bytes: 16 of header, 4 of argument count; measured: 16364 passes, one
#: byte more fails with "failed to send command" or "command too long")
TMUX_COMMAND_MAX = 16384 - 16 - 4


class CommandTooLongError(TmuxError):
    """A session's start command is larger than tmux takes (see :data:`TMUX_COMMAND_MAX`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.limit = TMUX_COMMAND_MAX
        super().__init__(
            f"the session's start command is {size} bytes; tmux takes at most {TMUX_COMMAND_MAX} "
            "(the command or shell line, cwd and agent arguments together)"
        )


class TmuxUnavailableError(TmuxError):
    """The tmux executable cannot be run."""


class SessionNotFoundError(TmuxError):
    """The named session does not exist on trio-bridge's tmux server."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no tmux session named {name!r}")


def new_session_id() -> str:
    """A fresh session id: 12 hex digits, safe in names, paths and URLs."""
    return uuid.uuid4().hex[:12]


def _to_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _env_file_text(env: Mapping[str, str]) -> str:
    return "".join(
        f"{name}={shlex.quote(value)}\n"
        for name, value in sorted(env.items())
        if name not in _TMUX_OWNED_ENV and name not in secret_env_names()
    )


def _write_private(path: Path, text: str) -> None:
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
        return f"tb-go-{self.session_id}"


@attrs.frozen
class SessionInfo:
    """A trio-bridge session as tmux sees it."""

    name: str
    session_id: str
    pane_id: str
    pane_pid: int


@attrs.frozen
class PaneStatus:
    """Whether a session's command has ended, and how."""

    dead: bool
    exit_status: int | None
    exit_signal: int | None

    @property
    def exit_code(self) -> int | None:
        """The shell convention: the status, or 128+N for death by signal N."""
        if not self.dead:
            return None
        if self.exit_signal is not None:
            return 128 + self.exit_signal
        return self.exit_status


def _int_or_none(text: str) -> int | None:
    return int(text) if text.strip() else None


@attrs.frozen
class TmuxServer:
    """trio-bridge's own tmux server (``tmux -L socket_name``), never the user's.

    Owns no tasks and no long-lived processes: every method runs one bounded
    tmux command. Long-lived clients live in :mod:`trio_bridge.tmux.control`.
    """

    socket_name: str = "trio-bridge"
    binary: str = "tmux"
    config_path: Path | None = None
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    # -- plumbing ---------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        """The full command line for ``tmux <args>`` on our server."""
        config = str(self.config_path) if self.config_path is not None else "/dev/null"
        return [self.binary, "-L", self.socket_name, "-f", config, *args]

    @property
    def client_env(self) -> dict[str, str]:
        """The environment our tmux clients run with (never inside someone's tmux). The first
        one starts the server, whose environment every pane inherits: no secret of ours in it."""
        dropped = {"TMUX", "TMUX_PANE", *secret_env_names()}
        return {k: v for k, v in os.environ.items() if k not in dropped}

    async def run(
        self, *args: str, operation: str | None = None, input: bytes | None = None
    ) -> ProcessResult:
        """Run one tmux command on our server; see the module docstring for errors."""
        operation = operation or f"tmux {args[0]}"
        timeout = self.timeouts.tmux_load_buffer if input is not None else self.timeouts.tmux
        return await run_process(
            self.argv(*args),
            operation=operation,
            timeout=timeout,
            input=input,
            env=self.client_env,
            kill_grace=self.timeouts.kill_grace,
        )

    async def _run_on_session(self, name: str, *args: str, input: bytes | None = None) -> ProcessResult:
        try:
            return await self.run(*args, input=input)
        except SubprocessFailedError as exc:
            message = exc.stderr.decode("utf-8", "replace").lower()
            if any(marker in message for marker in _NO_SESSION + _NO_SERVER):
                raise SessionNotFoundError(name) from exc
            raise TmuxError(str(exc)) from exc

    def write_config(self) -> None:
        """Write :data:`TMUX_CONFIG` to ``config_path`` (atomically, only if it changed)."""
        if self.config_path is None:
            return
        path = self.config_path
        if path.exists() and path.read_text() == TMUX_CONFIG:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(TMUX_CONFIG)
        tmp.replace(path)

    # -- sessions ---------------------------------------------------------

    def _start_script(self, spec: SessionSpec) -> str:
        """The POSIX sh script a new pane runs: gate, cwd, environment (unset, then set),
        command, status.

        The script stays the pane's process while the command runs as its
        child, so that it can record the command's exit status in a file:
        tmux 3.3a's own ``pane_dead_status`` is lost in a fraction of runs
        (measured: 2-8 of 20 short-lived panes), see docs/decisions.md.
        It catches (not ignores, so the command still gets the default
        handling) the signals that would otherwise stop it before it records.
        """
        q = shlex.quote
        has_env = bool(_env_file_text(spec.env))
        lines = [
            # Not HUP: when the session is killed the wrapper must die of the hang-up,
            # so that the kernel hangs up the command too (tmux's usual semantics).
            "trap : INT QUIT TERM",
            # Wait until the caller has attached its readers (no byte missed).
            f'"$TB_TMUX" wait-for {q(spec.gate_channel)} || exit {START_FAILED_STATUS}',
            # Kept (not exported) for the end: the session's environment may set TMUX*.
            "tb_tmux=$TB_TMUX tb_socket=${TMUX%%,*} tb_pane=$TMUX_PANE",
            "unset TB_TMUX",
            f"cd -- {q(str(spec.cwd))} || exit {START_FAILED_STATUS}",
        ]
        # Our secrets never reach a session, even from a tmux server started by someone else.
        lines.append("unset " + " ".join((*secret_env_names(), *spec.unset_env)))
        if has_env:
            # The environment comes from a private file, not the command line,
            # which every local user can read in the process table.
            env_file = q(str(spec.env_path))
            lines.append(f"set -a; . {env_file}; set +a; rm -f -- {env_file}")
        lines += [
            # The command runs in a subshell that restores stderr and execs it;
            # the wrapper itself waits with stderr on /dev/null, so the shell's
            # own "Killed"/"Terminated" notice never reaches the output.
            f"{{ (exec 2>&3 3>&-; exec {shlex.join(spec.argv)}); tb_status=$?; }} 3>&2 2>/dev/null",
            f'printf "%d\\n" "$tb_status" > {q(str(spec.status_path))}',
            # Let go of the terminal, and exit only once tmux has read it to its end (the pane
            # is dead). tmux ends a pane when its process exits and the pty *looks* empty; the
            # kernel may still hold the command's last bytes on their way to the pty's reading
            # side, and they were lost (measured: 6 of 200 bare-tmux runs of a 128 KiB
            # printenv lost up to 4 KiB). Reading to EIO gets them all: the kernel flushes
            # first. Bounded: a background process may keep the terminal open.
            "exec 0<&- 1>&- 2>&-",
            "tb_n=0",
            f'while [ "$tb_n" -lt {_END_POLLS} ] && [ "$("$tb_tmux" -S "$tb_socket" display-message -p '
            '-t "$tb_pane" "#{pane_dead}" 2>/dev/null)" != 1 ]; do sleep 0.01; tb_n=$((tb_n + 1)); done',
            'exit "$tb_status"',
        ]
        # A trailing newline: the script never ends in ';', which tmux would
        # take as a command separator.
        return "\n".join(lines) + "\n"

    async def new_session(self, spec: SessionSpec) -> SessionInfo:
        """Create a detached session whose command waits at the start gate.

        The session keeps its pane after the command ends (``remain-on-exit``),
        so its last screen stays readable; the pane's process (``pane_pid``)
        exits when the command has ended and its status is recorded.

        Raises:
            TmuxUnavailableError: tmux cannot be started.
            CommandTooLongError: the start command is larger than tmux takes (tmux not called).
            TmuxError: tmux refused to create the session.
            SubprocessTimeoutError: tmux did not answer in time.
        """
        from ..process import SubprocessStartError

        if not spec.cwd.is_dir():
            raise NotADirectoryError(f"working directory does not exist: {spec.cwd}")
        self.write_config()
        tmux_path = self.binary if os.sep in self.binary else (_which(self.binary) or self.binary)
        command = (
            "new-session", "-d", "-s", spec.name, "-x", str(spec.width), "-y", str(spec.height),
            "-e", f"TRIO_BRIDGE_SESSION_ID={spec.session_id}", "-e", f"TB_TMUX={tmux_path}",
            "-P", "-F", "#{pane_id} #{pane_pid}", "--", "/bin/sh", "-c", self._start_script(spec),
        )  # fmt: skip
        # tmux would refuse it only after the environment file is written, with words
        # ("command too long") that name no limit
        size = sum(len(arg.encode("utf-8", "surrogatepass")) + 1 for arg in command)
        if size > TMUX_COMMAND_MAX:
            raise CommandTooLongError(size)
        env_text = _env_file_text(spec.env)
        if env_text:
            await trio.to_thread.run_sync(_write_private, spec.env_path, env_text)
        try:
            result = await self.run(*command)
        except SubprocessStartError as exc:
            raise TmuxUnavailableError(f"cannot run tmux ({self.binary}): {exc.cause.strerror}") from exc
        except SubprocessFailedError as exc:
            raise TmuxError(f"tmux could not create the session: {exc}") from exc
        pane_id, pane_pid = result.stdout.decode().split()
        try:
            target = f"={spec.name}:"
            # With a pipe attached, tmux reads the pane's pty to its end before
            # it closes it; without one, tmux 3.3a can close the pty on the
            # child's exit with the last output still unread. The pipe is the
            # session's output sink. One tmux call: every argument here is
            # ours (no user data), so none can end in a ';' by accident.
            await self.run(
                "set-option", "-t", target, ID_OPTION, spec.session_id, ";",
                "set-option", "-t", target, "remain-on-exit", "on", ";",
                "pipe-pane", "-t", pane_id, spec.pipe_command,
                operation="tmux set-option/pipe-pane",
            )  # fmt: skip
        except BaseException:
            # Half-made: do not leave a gated shell behind.
            await self.kill_session(spec.name, missing_ok=True)
            raise
        return SessionInfo(spec.name, spec.session_id, pane_id, int(pane_pid))

    async def release(self, spec: SessionSpec) -> None:
        """Open the start gate: the session's command starts now."""
        await self.run("wait-for", "-S", spec.gate_channel)

    async def list_sessions(self) -> list[SessionInfo]:
        """Every session on our server that trio-bridge created (others are ignored).

        An absent server means no sessions; any other failure raises.
        """
        fmt = "#{session_name}\t#{" + ID_OPTION + "}\t#{pane_id}\t#{pane_pid}"
        try:
            result = await self.run("list-panes", "-a", "-F", fmt)
        except SubprocessFailedError as exc:
            if any(m in exc.stderr.decode("utf-8", "replace").lower() for m in _NO_SERVER):
                return []
            raise TmuxError(str(exc)) from exc
        sessions = []
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            name, session_id, pane_id, pane_pid = line.split("\t")
            if session_id and name == f"tb-{session_id}":
                sessions.append(SessionInfo(name, session_id, pane_id, int(pane_pid)))
        return sessions

    async def has_session(self, name: str) -> bool:
        """Whether our server has a session with exactly this name.

        Only tmux's own "no such session"/"no server" answers mean False; a
        timeout raises :class:`~trio_bridge.process.SubprocessTimeoutError`.
        """
        _protocol.check_session_name(name)
        try:
            await self._run_on_session(name, "has-session", "-t", f"={name}")
        except SessionNotFoundError:
            return False
        return True

    async def display(self, name: str, *formats: str) -> list[str]:
        """Expand tmux formats (``#{...}``) for the session's current pane.

        tmux's ``display-message -t`` prints an empty line, with success, for a session that
        does not exist; this checks that the session it described is the one asked for.

        Raises:
            SessionNotFoundError: no such session.
        """
        _protocol.check_session_name(name)
        fmt = "\t".join(("#{session_name}", *formats))
        result = await self._run_on_session(name, "display-message", "-p", "-t", f"={name}:", fmt)
        fields = result.stdout.decode("utf-8", "replace").rstrip("\n").split("\t")
        if fields[0] != name:
            raise SessionNotFoundError(name)
        return fields[1:]

    async def pane_status(self, name: str) -> PaneStatus:
        """Whether the session's command ended, with its exit status or signal."""
        fields = await self.display(name, "#{pane_dead}", "#{pane_dead_status}", "#{pane_dead_signal}")
        return parse_pane_status("\t".join(fields))

    async def wait_drained(self, name: str) -> None:
        """Wait (at most ``timeouts.tmux``) until tmux has marked the pane dead.

        tmux does so only after it has read the pane's pty to its end and, with a pipe
        attached, flushed it into the pipe. A missing session counts as drained. A short
        poll, once per session end: tmux has no event for it.
        """
        with trio.move_on_after(self.timeouts.tmux):
            while True:
                try:
                    if (await self.pane_status(name)).dead:
                        return
                except SessionNotFoundError:
                    return
                await trio.sleep(_DRAIN_CHECK_INTERVAL)

    async def capture(self, name: str, *, history: int = 0, escapes: bool = False) -> str:
        """The rendered screen (plus up to ``history`` lines of scrollback)."""
        _protocol.check_session_name(name)
        if history < 0:
            raise ValueError("history must be >= 0")
        args = ["capture-pane", "-p", "-t", f"={name}:"]
        if history:
            args += ["-S", f"-{history}"]
        if escapes:
            args.append("-e")
        result = await self._run_on_session(name, *args)
        return result.stdout.decode("utf-8", "replace")

    async def send_text(self, name: str, text: str, *, enter: bool = False) -> None:
        """Type ``text`` into the session, as a bracketed paste when the program asked for it.

        The text goes through a tmux buffer loaded from stdin, so no part of it
        is ever parsed by tmux. Enter, if asked for, is sent as a separate key
        after the paste, so it cannot be swallowed by the paste.

        Raises:
            InvalidTextError: control characters or invalid Unicode (see :func:`check_text`).
        """
        _protocol.check_session_name(name)
        data = _protocol.check_text(text)
        if data:
            buffer = f"tb-{uuid.uuid4().hex}"
            await self._run_on_session(name, "load-buffer", "-b", buffer, "-", input=data)
            target = f"={name}:"
            try:
                # -p: bracketed paste if the program enabled it; -r: keep LF
                # as LF (a multi-line paste stays one paste); -d: delete after.
                # Only into a live pane: tmux 3.3a's server crashes (taking every session
                # along) on a paste into a dead one, which a session's pane is from its
                # command's end until its window is killed. The check and the paste are
                # one tmux command, so the pane cannot die in between.
                result = await self._run_on_session(
                    name, "if-shell", "-F", "-t", target, "#{pane_dead}",
                    f"delete-buffer -b {buffer} ; display-message -p dead",
                    f"paste-buffer -p -r -d -b {buffer} -t {target}",
                )  # fmt: skip
            except BaseException:
                await self.run("delete-buffer", "-b", buffer)
                raise
            if result.stdout.strip() == b"dead":
                raise SessionNotFoundError(name)
        if enter:
            await self.send_keys(name, ["Enter"])

    async def send_keys(self, name: str, keys: Sequence[str]) -> None:
        """Send named keys (see :data:`trio_bridge.tmux.KEY_NAMES`); anything else is refused."""
        _protocol.check_session_name(name)
        checked = check_keys(tuple(keys))
        if checked:
            await self._run_on_session(name, "send-keys", "-t", f"={name}:", *checked)

    async def kill_session(self, name: str, *, missing_ok: bool = False) -> None:
        """Destroy the session (tmux hangs up its processes)."""
        _protocol.check_session_name(name)
        try:
            await self._run_on_session(name, "kill-session", "-t", f"={name}")
        except SessionNotFoundError:
            if not missing_ok:
                raise

    async def session_info(self, name: str) -> SessionInfo:
        session_id, pane_id, pane_pid = await self.display(
            name, "#{" + ID_OPTION + "}", "#{pane_id}", "#{pane_pid}"
        )
        return SessionInfo(name, session_id, pane_id, int(pane_pid))

    async def kill_server(self) -> None:
        """Stop our tmux server and every session in it (used by tests and `reset`)."""
        try:
            await self.run("kill-server")
        except SubprocessFailedError as exc:
            if not any(m in exc.stderr.decode("utf-8", "replace").lower() for m in _NO_SERVER):
                raise TmuxError(str(exc)) from exc


def read_exit_status(path: Path) -> int | None:
    """The exit status a session's start wrapper recorded, or None if it recorded none.

    None means the wrapper itself was killed (e.g. SIGKILL after a timeout)
    before the command ended normally.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse_pane_status(text: str) -> PaneStatus:
    dead, status, sig = text.rstrip("\n").split("\t")
    return PaneStatus(dead == "1", _int_or_none(status), _int_or_none(sig))


def _which(binary: str) -> str | None:
    import shutil

    return shutil.which(binary)


def unix_session_members(sid: int) -> Iterable[int]:
    """PIDs whose Unix session id is ``sid`` (Linux /proc; empty elsewhere)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # Fields after the parenthesised command name: state ppid pgrp session ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        # Zombies are already dead; they only wait for their parent to reap them.
        if int(fields[3]) == sid and fields[0] != b"Z":
            yield int(entry)


def signal_unix_session(sid: int, sig: int) -> int:
    """Signal every live process in Unix session ``sid`` (a pane's processes).

    Returns how many were signalled; signal 0 just counts the live ones.
    """
    count = 0
    pids = set(unix_session_members(sid))
    if sig and not pids:
        try:
            os.killpg(sid, sig)  # no /proc (not Linux): the pane's own group
        except (ProcessLookupError, PermissionError):
            pass  # the group is already gone
    for pid in pids:
        try:
            os.kill(pid, sig)
            count += 1
        except (ProcessLookupError, PermissionError):
            continue  # exited meanwhile
    return count
