#!/usr/bin/env python3
"""A fake AI coding agent CLI for tests: a prompt box in a raw-mode terminal, with real-looking hooks.

Standard library only. Run it in a terminal (a tmux pane)::

    python3 tests/fake_agent.py --flavor claude|codex|gemini [options] [PROMPT]

It behaves like Claude Code, Codex or Gemini CLI in the ways a terminal bridge cares about:

* The tty is put in raw mode (no echo, no signals from keys, Enter arrives as ``\\r``) and
  bracketed paste is enabled (``ESC[?2004h``); both are restored on exit.
* Screen: a banner line ``FAKE-AGENT <flavor> ready[ model=M][ resumed ID]``, then the prompt box
  ``> `` with what is typed or pasted echoed into it.
* A paste (between ``ESC[200~`` and ``ESC[201~``) goes into the box whole, newlines kept. Enter
  outside a paste submits the box, except that an Enter read less than ``--paste-settle`` seconds
  after the end of a paste is dropped silently, as are the first ``--drop-enters`` Enters.
* A turn: ``WORKING on: <first 40 chars>``, a few progress lines over ``--busy`` seconds, then
  ``ANSWER: <first 40 chars>`` and the prompt box again (newlines in the prompt shown as spaces).
  A prompt containing ``PERMISSION`` asks ``Do you want to proceed?`` / ``1. Yes`` / ``2. No``
  after the busy phase (``1`` or Enter: ``Proceeding``, the turn finishes; ``2`` or Escape:
  ``Denied``, the turn ends without its "turn done" hook, like a user interruption). ``HANG``:
  silence after ``WORKING on:`` until interrupted. ``EXIT``: the turn finishes, then exit 0.
* Ctrl-C or Escape while a turn runs interrupts it (``Interrupted``, no "turn done" hook).
  Ctrl-C twice (within 2 s) or Ctrl-D on an empty box exits 0.
* Hooks run synchronously (bounded) exactly where the real CLIs take them from: Claude's
  ``--settings FILE``, Gemini's ``$GEMINI_CLI_HOME/.gemini/settings.json``, Codex's ``-c notify=[...]``.
* Every event (hook runs included) is appended as a JSON line to
  ``$HOME/.fake-agent/<session_id>.jsonl``, the ``transcript_path`` of the hook payloads.
"""

from __future__ import annotations

import argparse
import codecs
import datetime
import json
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time
import tomllib
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"
ESC = "\x1b"
ESC_TIMEOUT = 0.05  # a lone ESC not followed by more bytes within this is the Escape key
HOOK_TIMEOUT = 10.0
BUSY_LINES = 3
DOUBLE_CTRL_C = 2.0
DEFAULT_MODELS = {"claude": "claude-fake-1", "codex": "gpt-fake-1", "gemini": "gemini-fake-1"}
TOOL_NAMES = {"claude": "Bash", "codex": "shell", "gemini": "run_shell_command"}


def summary(prompt: str) -> str:
    """The first 40 characters of a prompt, on one line."""
    return prompt.replace("\r", " ").replace("\n", " ")[:40]


def now_iso() -> str:
    """The current UTC time as ISO 8601 with a ``Z``."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line; ``-c key=value`` may repeat (only ``notify`` is used)."""
    p = argparse.ArgumentParser(prog="fake_agent.py", description="A fake AI coding agent CLI for tests.")
    p.add_argument("--flavor", choices=sorted(DEFAULT_MODELS), required=True)
    p.add_argument("--settings", metavar="FILE", help="claude: JSON settings file with hooks")
    p.add_argument(
        "-c",
        "--config",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="codex: a config override; notify=<TOML array> is the turn-complete hook",
    )
    p.add_argument("-m", "--model", help="model name, shown in the banner")
    p.add_argument("-r", "--resume", metavar="ID", help="resume session ID (used as the session id)")
    p.add_argument("--busy", type=float, default=0.5, metavar="SECONDS", help="length of a turn's work")
    p.add_argument(
        "--paste-settle",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="an Enter read sooner than this after a paste ends is lost",
    )
    p.add_argument("--drop-enters", type=int, default=0, metavar="N", help="lose the first N Enters")
    p.add_argument("prompt", nargs="?", help="a prompt submitted at start, as if typed")
    return p.parse_args(argv)


class Agent:
    """The agent's state machine, driven by terminal input and timers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.flavor: str = args.flavor
        self.model: str = args.model or DEFAULT_MODELS[self.flavor]
        self.busy: float = args.busy
        self.paste_settle: float = args.paste_settle
        self.session_id: str = args.resume or str(uuid.uuid4())
        self.cwd = os.getcwd()
        home = Path(os.environ.get("HOME") or Path.home())
        self.transcript = home / ".fake-agent" / f"{self.session_id}.jsonl"
        self.transcript.parent.mkdir(parents=True, exist_ok=True)
        self.hooks = self._load_hooks()
        self.notify = self._load_notify()
        # input
        self.fd_in = sys.stdin.fileno()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""
        self.pending_since = 0.0
        self.in_paste = False
        self.paste_ended_at = -1e9
        self.enters_to_drop: int = args.drop_enters
        self.last_ctrl_c = -1e9
        # turn
        self.box = ""
        self.state = "idle"  # idle | busy | permission | hang
        self.prompt = ""
        self.prompt_id = ""
        self.busy_start = 0.0
        self.busy_shown = 0

    # --- configuration ---------------------------------------------------------------------

    def _load_hooks(self) -> dict[str, list[dict[str, Any]]]:
        """The ``hooks`` table of the flavor's settings file (Claude, Gemini), else empty."""
        if self.flavor == "claude":
            path = self.args.settings
        elif self.flavor == "gemini":
            # as Gemini CLI: $GEMINI_CLI_HOME relocates the home whose .gemini/ it reads
            home = os.environ.get("GEMINI_CLI_HOME") or os.path.expanduser("~")
            path = os.path.join(home, ".gemini", "settings.json")
            if not os.path.exists(path):
                return {}
        else:
            path = None
        if not path:
            return {}
        with open(path, encoding="utf-8") as f:
            hooks = json.load(f).get("hooks") or {}
        return hooks if isinstance(hooks, dict) else {}

    def _load_notify(self) -> list[str]:
        """Codex's ``notify`` argv from ``-c notify=[...]`` (the last one wins)."""
        argv: list[str] = []
        if self.flavor != "codex":
            return argv
        for item in self.args.config:
            key, sep, value = item.partition("=")
            if sep and key.strip() == "notify":
                parsed = tomllib.loads("notify = " + value)["notify"]
                if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
                    raise SystemExit(f"notify must be an array of strings, got {value!r}")
                argv = parsed
        return argv

    # --- output ------------------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Write to the terminal at once."""
        sys.stdout.write(text)
        sys.stdout.flush()

    def show_box(self) -> None:
        """Draw the prompt box on a new line, with what is already in it."""
        self.write("\n> " + self.box)

    def record(self, kind: str, **fields: Any) -> None:
        """Append one event to the transcript."""
        line = {"type": kind, "timestamp": now_iso(), "session_id": self.session_id, **fields}
        with self.transcript.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    # --- hooks -------------------------------------------------------------------------------

    def base_payload(self, event: str) -> dict[str, Any]:
        """The fields every hook payload of this flavor has."""
        payload: dict[str, Any] = {
            "session_id": self.session_id,
            "transcript_path": str(self.transcript),
            "cwd": self.cwd,
            "hook_event_name": event,
        }
        if self.flavor == "gemini":
            payload["timestamp"] = now_iso()
        return payload

    def fire(self, event: str, match: str = "", **fields: Any) -> None:
        """Run the commands configured for ``event`` (Claude, Gemini) with the payload on stdin."""
        payload = {**self.base_payload(event), **fields}
        data = json.dumps(payload).encode()
        for group in self.hooks.get(event) or []:
            matcher = group.get("matcher") or ""
            if matcher not in ("", "*") and match:
                try:
                    if not re.fullmatch(matcher, match):
                        continue
                except re.error:
                    if matcher != match:
                        continue
            for hook in group.get("hooks") or []:
                if hook.get("type", "command") != "command" or not hook.get("command"):
                    continue
                timeout = HOOK_TIMEOUT
                if isinstance(hook.get("timeout"), int | float):  # Claude: seconds, Gemini: ms
                    timeout = hook["timeout"] / (1000 if self.flavor == "gemini" else 1)
                self.run_hook(event, ["sh", "-c", hook["command"]], data, timeout)

    def fire_notify(self) -> None:
        """Codex: run the notify argv with the turn-complete JSON as one more argument."""
        if not self.notify:
            return
        message = {
            "type": "agent-turn-complete",
            "thread-id": self.session_id,
            "turn-id": str(uuid.uuid4()),
            "cwd": self.cwd,
            "client": "codex-tui",
            "input-messages": [self.prompt],
            "last-assistant-message": "ANSWER: " + summary(self.prompt),
        }
        self.run_hook("notify", [*self.notify, json.dumps(message)], None, HOOK_TIMEOUT)

    def run_hook(self, event: str, argv: list[str], stdin: bytes | None, timeout: float) -> None:
        """Run one hook command and wait for it (bounded); its output never reaches the screen."""
        env = dict(os.environ)
        if self.flavor == "claude":
            env["CLAUDE_PROJECT_DIR"] = self.cwd
        elif self.flavor == "gemini":
            env["GEMINI_PROJECT_DIR"] = self.cwd
            env["CLAUDE_PROJECT_DIR"] = self.cwd
        start = time.monotonic()
        returncode: int | None = None
        error = ""
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            error = str(exc)
        else:
            try:
                proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                error = f"timed out after {timeout} s"
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.communicate()
            returncode = proc.returncode
        self.record(
            "hook",
            event=event,
            argv=argv,
            returncode=returncode,
            error=error,
            duration=round(time.monotonic() - start, 3),
        )

    def fire_turn_done(self) -> None:
        """The flavor's "turn done" hook."""
        answer = "ANSWER: " + summary(self.prompt)
        if self.flavor == "claude":
            self.fire(
                "Stop",
                prompt_id=self.prompt_id,
                permission_mode="default",
                stop_hook_active=False,
                last_assistant_message=answer,
            )
        elif self.flavor == "gemini":
            self.fire("AfterAgent", prompt=self.prompt, prompt_response=answer, stop_hook_active=False)
        else:
            self.fire_notify()

    # --- the session -------------------------------------------------------------------------

    def start(self) -> None:
        """Session start: hooks, banner, prompt box, the PROMPT argument."""
        source = "resume" if self.args.resume else "startup"
        self.record("session-start", source=source, flavor=self.flavor, model=self.model, cwd=self.cwd)
        if self.flavor == "claude":
            self.fire("SessionStart", match=source, source=source, model=self.model)
        elif self.flavor == "gemini":
            self.fire("SessionStart", match=source, source=source)
        banner = f"FAKE-AGENT {self.flavor} ready"
        if self.args.model:
            banner += f" model={self.args.model}"
        if self.args.resume:
            banner += f" resumed {self.args.resume}"
        self.write(banner)
        self.show_box()
        if self.args.prompt:
            self.box = self.args.prompt
            self.write(self.box)
            self.submit()

    def end(self, reason: str) -> None:
        """Session end hooks (Claude, Gemini)."""
        self.record("session-end", reason=reason)
        if self.flavor in ("claude", "gemini"):
            self.fire("SessionEnd", match=reason, reason=reason)

    def submit(self) -> None:
        """Submit the box as a prompt: hooks, then the busy phase."""
        self.prompt, self.box = self.box, ""
        self.prompt_id = str(uuid.uuid4())
        self.record("user", prompt=self.prompt, prompt_id=self.prompt_id)
        if self.flavor == "claude":
            self.fire(
                "UserPromptSubmit", prompt=self.prompt, prompt_id=self.prompt_id, permission_mode="default"
            )
        elif self.flavor == "gemini":
            self.fire("BeforeAgent", prompt=self.prompt)
        self.write(f"\nWORKING on: {summary(self.prompt)}")
        if "HANG" in self.prompt:
            self.state = "hang"
            return
        self.state = "busy"
        self.busy_start = time.monotonic()
        self.busy_shown = 0

    def tick(self) -> None:
        """Advance the busy phase by the clock."""
        if self.state != "busy":
            return
        elapsed = time.monotonic() - self.busy_start
        while self.busy_shown < BUSY_LINES and elapsed >= self.busy * self.busy_shown / BUSY_LINES:
            self.busy_shown += 1
            self.write(f"\n  ...working ({self.busy_shown}/{BUSY_LINES})")
        if elapsed >= self.busy and self.busy_shown == BUSY_LINES:
            self.after_busy()

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do next."""
        if self.state != "busy":
            return None
        if self.busy_shown < BUSY_LINES:
            return self.busy_start + self.busy * self.busy_shown / BUSY_LINES
        return self.busy_start + self.busy

    def after_busy(self) -> None:
        """End of the busy phase: the permission question, or the answer."""
        if "PERMISSION" not in self.prompt:
            self.finish_turn()
            return
        self.state = "permission"
        tool = TOOL_NAMES[self.flavor]
        tool_input = {"command": "echo fake-agent", "description": "Print a word"}
        if self.flavor == "claude":
            self.fire(
                "PreToolUse", match=tool, tool_name=tool, tool_input=tool_input, permission_mode="default"
            )
        elif self.flavor == "gemini":
            self.fire("BeforeTool", match=tool, tool_name=tool, tool_input=tool_input)
        self.write("\nDo you want to proceed?\n1. Yes\n2. No")
        self.record("permission-asked", tool_name=tool, tool_input=tool_input)
        if self.flavor == "claude":
            self.fire(
                "Notification",
                match="permission_prompt",
                message=f"Claude needs your permission to use {tool}",
                notification_type="permission_prompt",
            )
        elif self.flavor == "gemini":
            self.fire(
                "Notification",
                match="ToolPermission",
                notification_type="ToolPermission",
                message=f"Tool {tool} requires your permission",
                details={"type": "exec", "title": "Confirm Shell Command", "command": tool_input["command"]},
            )

    def answer_permission(self, yes: bool) -> None:
        """The user's answer to the permission question."""
        self.record("permission-answered", allowed=yes)
        if not yes:
            self.write("\nDenied")
            self.state = "idle"
            self.show_box()
            return
        self.write("\nProceeding")
        tool = TOOL_NAMES[self.flavor]
        tool_input = {"command": "echo fake-agent", "description": "Print a word"}
        response = {"stdout": "fake-agent", "stderr": "", "interrupted": False}
        if self.flavor == "claude":
            self.fire(
                "PostToolUse",
                match=tool,
                tool_name=tool,
                tool_input=tool_input,
                tool_response=response,
                permission_mode="default",
            )
        elif self.flavor == "gemini":
            self.fire(
                "AfterTool",
                match=tool,
                tool_name=tool,
                tool_input=tool_input,
                tool_response={"llmContent": "fake-agent"},
            )
        self.finish_turn()

    def finish_turn(self) -> None:
        """Print the answer, fire the "turn done" hook, show the box again (or exit on EXIT)."""
        answer = "ANSWER: " + summary(self.prompt)
        self.write("\n" + answer)
        self.record("assistant", message=answer, prompt_id=self.prompt_id)
        self.fire_turn_done()
        self.state = "idle"
        if "EXIT" in self.prompt:
            self.end("other")
            raise SystemExit(0)
        self.show_box()

    def interrupt(self) -> None:
        """Ctrl-C or Escape during a turn: stop it, no "turn done" hook (like Claude Code)."""
        self.record("interrupted", prompt_id=self.prompt_id)
        self.write("\nInterrupted")
        self.state = "idle"
        self.show_box()

    # --- input -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes read from the terminal."""
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending += self.decoder.decode(data)
        self.parse(final=False)

    def parse(self, final: bool) -> None:
        """Consume ``self.pending``; an incomplete escape sequence waits unless ``final``."""
        s = self.pending
        i = 0
        n = len(s)
        while i < n:
            if self.in_paste:
                end = s.find(PASTE_END, i)
                if end < 0:
                    keep = 0  # a tail that may be the start of PASTE_END
                    for k in range(min(len(PASTE_END) - 1, n - i), 0, -1):
                        if PASTE_END.startswith(s[n - k :]):
                            keep = k
                            break
                    self.pasted(s[i : n - keep])
                    i = n - keep
                    break
                self.pasted(s[i:end])
                i = end + len(PASTE_END)
                self.in_paste = False
                self.paste_ended_at = time.monotonic()
                self.record("paste-end", box_chars=len(self.box))
                continue
            c = s[i]
            if c == ESC:
                rest = s[i : i + len(PASTE_START)]
                if rest == PASTE_START:
                    self.in_paste = True
                    i += len(PASTE_START)
                    continue
                if len(rest) < len(PASTE_START) and PASTE_START.startswith(rest) and not final:
                    break  # maybe the start of a paste (or of another sequence): wait for more
                if i + 1 < n and s[i + 1] in "[O":
                    j = i + 2
                    if s[i + 1] == "[":
                        while j < n and not ("\x40" <= s[j] <= "\x7e"):
                            j += 1
                    if j >= n:
                        if not final:
                            break
                        i = n  # a truncated sequence: drop it
                        continue
                    i = j + 1  # a whole sequence (arrows, function keys): ignored
                    continue
                i += 1
                self.key_escape()
                continue
            if c in "\r\n":
                i += 1
                self.key_enter()
                continue
            if c == "\x03":
                i += 1
                self.key_ctrl_c()
                continue
            if c == "\x04":
                i += 1
                self.key_ctrl_d()
                continue
            if c in "\x7f\x08":
                i += 1
                self.key_backspace()
                continue
            j = i
            while j < n and (s[j] >= " " or s[j] == "\t") and s[j] != "\x7f":
                j += 1
            if j == i:
                i += 1  # another control character: ignored
                continue
            self.typed(s[i:j])
            i = j
        self.pending = s[i:]
        if self.pending:
            self.pending_since = time.monotonic()

    def flush_escape(self) -> None:
        """An incomplete escape sequence that waited long enough: a lone Escape key and the rest."""
        if self.pending and not self.in_paste and time.monotonic() - self.pending_since >= ESC_TIMEOUT:
            self.parse(final=True)

    def typed(self, text: str) -> None:
        """Typed characters."""
        self.last_ctrl_c = -1e9
        if self.state == "permission":
            if text.startswith("1"):
                self.answer_permission(True)
            elif text.startswith("2"):
                self.answer_permission(False)
            return
        self.box += text
        if self.state == "idle":
            self.write(text)

    def pasted(self, text: str) -> None:
        """Part of a paste: into the box, newlines kept (tmux sends them as CR)."""
        if not text or self.state == "permission":
            return
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.box += text
        if self.state == "idle":
            self.write(text)

    def key_enter(self) -> None:
        """Enter: submit (or answer yes), unless it is lost."""
        self.last_ctrl_c = -1e9
        if self.state in ("busy", "hang"):
            self.record("enter-ignored", state=self.state)
            return
        since_paste = time.monotonic() - self.paste_ended_at
        if since_paste < self.paste_settle:
            self.record("enter-dropped", reason="paste-settle", since_paste=round(since_paste, 3))
            return
        if self.enters_to_drop > 0:
            self.enters_to_drop -= 1
            self.record("enter-dropped", reason="drop-enters")
            return
        if self.state == "permission":
            self.answer_permission(True)
        elif self.box.strip():
            self.submit()

    def key_escape(self) -> None:
        """Escape: interrupt a turn, or deny a permission."""
        self.last_ctrl_c = -1e9
        if self.state == "permission":
            self.answer_permission(False)
        elif self.state in ("busy", "hang"):
            self.interrupt()

    def key_ctrl_c(self) -> None:
        """Ctrl-C: interrupt a turn or clear the box; twice within 2 s exits."""
        now = time.monotonic()
        if now - self.last_ctrl_c < DOUBLE_CTRL_C:
            self.end("prompt_input_exit")
            raise SystemExit(0)
        self.last_ctrl_c = now
        if self.state != "idle":
            self.interrupt()
            return
        self.box = ""
        self.write("\nPress Ctrl-C again to exit")
        self.show_box()

    def key_ctrl_d(self) -> None:
        """Ctrl-D on an empty box exits."""
        self.last_ctrl_c = -1e9
        if self.state == "idle" and not self.box:
            self.end("prompt_input_exit")
            raise SystemExit(0)

    def key_backspace(self) -> None:
        """Backspace: remove the last character of the box."""
        self.last_ctrl_c = -1e9
        if self.state not in ("idle", "busy", "hang") or not self.box:
            return
        last, self.box = self.box[-1], self.box[:-1]
        if self.state == "idle" and last != "\n":
            self.write("\b \b")

    def run(self) -> None:
        """The main loop: read the terminal, run the clock."""
        self.start()
        while True:
            deadline = self.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.pending and not self.in_paste:
                wait_esc = max(0.0, self.pending_since + ESC_TIMEOUT - time.monotonic())
                timeout = wait_esc if timeout is None else min(timeout, wait_esc)
            ready, _, _ = select.select([self.fd_in], [], [], timeout)
            if ready:
                try:
                    data = os.read(self.fd_in, 65536)
                except OSError:  # the terminal went away
                    data = b""
                if not data:
                    self.end("other")
                    return
                self.feed(data)
            else:
                self.flush_escape()
            self.tick()


def raw_mode(fd: int) -> list[Any] | None:
    """Raw-ish input (no echo, no line editing, no signal keys, CR kept); output processing kept."""
    if not os.isatty(fd):
        return None
    old = termios.tcgetattr(fd)
    new = termios.tcgetattr(fd)
    new[0] &= ~(termios.ICRNL | termios.INLCR | termios.IGNCR | termios.IXON | termios.ISTRIP)
    new[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
    new[6][termios.VMIN] = 1
    new[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, new)
    return old


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake agent; the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    agent = Agent(args)

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    fd = sys.stdin.fileno()
    saved = raw_mode(fd)
    status = 0
    try:
        agent.write("\x1b[?2004h")
        agent.run()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    finally:
        try:
            agent.write("\x1b[?2004l\n")
            if saved is not None:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        except OSError:
            pass
    return status


if __name__ == "__main__":
    sys.exit(main())
