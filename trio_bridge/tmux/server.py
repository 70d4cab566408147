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
import shlex
import uuid
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from ..config import DEFAULT_TIMEOUTS, Timeouts, secret_env_names

# (re-exported: callers found them here before they moved to process.py)
from ..process import (
    ProcessResult,
    SubprocessFailedError,
    run_process,
    signal_unix_session,
    unix_session_members,
)
from . import _protocol
from ._keys import check_keys

# (SessionSpec, is_env_name, new_session_id re-exported: callers found them here before spec.py)
from .spec import SessionSpec, gate_channel, is_env_name, new_session_id
from .spec import env_file_text as _env_file_text
from .spec import write_private as _write_private

__all__ = [
    "TMUX_COMMAND_MAX",
    "CommandTooLongError",
    "DuplicateSessionError",
    "PaneStatus",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionSpec",
    "TmuxError",
    "TmuxServer",
    "TmuxUnavailableError",
    "gate_channel",
    "is_env_name",
    "new_session_id",
    "signal_unix_session",
    "unix_session_members",
]

#: the user option that marks a tmux session as created by trio-bridge
ID_OPTION = "@trio_bridge_id"
#: how many times (10 ms apart) a start wrapper asks tmux whether it has read the pane to its
#: end before it exits anyway (a background process holds the terminal)
_END_POLLS = 50
#: exit status of the start wrapper when it cannot hand over to the command
START_FAILED_STATUS = 125

_DRAIN_CHECK_INTERVAL = 0.002

_NO_SERVER = ("no server running", "error connecting to", "server exited unexpectedly")
#: (a server with no session left, about to exit, answers a lookup with "no current target":
#: an embedded `run` killing its session a second time met it, in 1 of ~6 suite runs)
_NO_SESSION = (
    "can't find session",
    "no such session",
    "can't find pane",
    "can't find window",
    "no current target",
)

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


class DuplicateSessionError(TmuxError):
    """A session with this name exists already."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a tmux session named {name!r} exists already")


class SessionNotFoundError(TmuxError):
    """The named session does not exist on trio-bridge's tmux server."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no tmux session named {name!r}")


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
        stdin = "" if spec.stdin_path is None else f" <{q(str(spec.stdin_path))}"
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
            # (stdin from a FIFO when asked: the shell's open waits for its writer)
            f"{{ (exec 2>&3 3>&-{stdin}; exec {shlex.join(spec.argv)}); tb_status=$?; }} 3>&2 2>/dev/null",
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
        await self.release_gate(spec.session_id)

    async def release_gate(self, session_id: str) -> None:
        """Open the start gate of the session with this id (see :attr:`SessionSpec.gate_channel`)."""
        await self.run("wait-for", "-S", gate_channel(session_id))

    async def ensure_hub(self, name: str) -> None:
        """Make sure the hub session ``name`` exists: an idle session into which sessions'
        windows are linked (:meth:`link_window`), so that one control client sees all their
        output. Its own window just sleeps; it carries no id option (not a session of ours)."""
        self.write_config()
        if await self.has_session(name):
            return
        try:
            await self._new_idle_session(name)
        except DuplicateSessionError:
            pass  # made meanwhile by someone else: as good

    async def _new_idle_session(self, name: str) -> None:
        """Raises DuplicateSessionError, TmuxError."""
        try:
            await self.run("new-session", "-d", "-s", name, "--", "sleep", "infinity")
        except SubprocessFailedError as exc:
            if b"duplicate session" in exc.stderr:
                raise DuplicateSessionError(name) from exc
            raise TmuxError(str(exc)) from exc

    async def link_window(self, name: str, into: str) -> None:
        """Link session ``name``'s window into session ``into`` (once: a linked one stays).

        Raises:
            SessionNotFoundError: either session is gone.
        """
        window_id, linked = await self.display(name, "#{window_id}", "#{window_linked_sessions}")
        if int(linked) < 2:
            await self._run_on_session(name, "link-window", "-d", "-s", window_id, "-t", f"={into}:")

    async def kill_window(self, name: str) -> None:
        """Kill session ``name``'s window: from every session it is linked into (which
        kill-session would leave running), hanging up its processes; the emptied session goes
        too. A window already gone is not an error."""
        try:
            (window_id,) = await self.display(name, "#{window_id}")
            await self._run_on_session(name, "kill-window", "-t", window_id)
        except SessionNotFoundError:
            return  # already gone

    async def pane_dead(self, name: str) -> bool:
        """Whether tmux has marked the session's pane dead (read its pty to the end); a
        missing session's is."""
        try:
            return (await self.pane_status(name)).dead
        except SessionNotFoundError:
            return True

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

    async def resize_window(self, name: str, width: int, height: int) -> None:
        """Resize session ``name``'s window to ``width`` x ``height`` (each 2..1000: an
        attached terminal's new size; the daemon resizes through its hub's client instead).
        Raises SessionNotFoundError."""
        _protocol.check_session_name(name)
        if not (2 <= width <= 1000 and 2 <= height <= 1000):
            raise ValueError(f"a window size is 2..1000 each, not {width}x{height}")
        await self._run_on_session(
            name, "resize-window", "-t", f"={name}:", "-x", str(width), "-y", str(height)
        )

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
