"""The fake agent CLI (tests/fake_agent.py) in a real tmux pane: pastes, lost Enters, permission, hooks."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

FAKE_AGENT = Path(__file__).parent.parent / "fake_agent.py"
CLAUDE_EVENTS = ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Notification", "Stop"]
GEMINI_EVENTS = ["SessionStart", "BeforeAgent", "AfterAgent", "BeforeTool", "AfterTool", "Notification"]
T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, timeout: float = 10) -> T:
    """Poll ``probe`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def complete_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` that are whole: a writer may be half-way through the last one."""
    text = path.read_text() if path.exists() else ""
    # (a 100 KB payload lands in several writes; only a newline says a line is done)
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


class Pane:
    """A private tmux server running one fake agent, and the file its hooks append to."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.socket = f"fa-{uuid.uuid4().hex[:8]}"
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.log = tmp_path / "hooks.jsonl"
        self.conf = tmp_path / "tmux.conf"
        self.conf.write_text("set -g remain-on-exit on\nset -g history-limit 10000\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
        self.env["TMUX_TMPDIR"] = str(tmp_path)
        self.status = tmp_path / "status"

    def command(self, *args: str) -> list[str]:
        """The argv of a pane running the fake agent with ``args``, its exit status saved."""
        wrapper = f'"$@"; echo $? > {shlex.quote(str(self.status))}'
        return ["sh", "-c", wrapper, "sh", sys.executable, str(FAKE_AGENT), *args]

    def tmux(self, *args: str, stdin: str | None = None) -> str:
        """Run a tmux command on the private server; its output."""
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.conf), *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout

    def hook_command(self) -> str:
        """A shell command appending its stdin (one JSON payload) as a line of the log."""
        log = shlex.quote(str(self.log))
        return f"cat >> {log}; echo >> {log}"

    def settings(self, events: list[str]) -> Path:
        """A settings file with the logging hook on ``events``."""
        hook = [{"hooks": [{"type": "command", "command": self.hook_command()}]}]
        path = self.root / "settings.json"
        path.write_text(json.dumps({"hooks": dict.fromkeys(events, hook)}))
        return path

    def start(self, *args: str, env: dict[str, str] | None = None) -> None:
        """Start the fake agent with ``args`` and wait for its prompt box."""
        extra: list[str] = []
        for key, value in {"HOME": str(self.home), **(env or {})}.items():
            extra += ["-e", f"{key}={value}"]
        self.tmux(
            "new-session", "-d", "-s", "fa", "-x", "160", "-y", "50", "-c", str(self.root),
            *extra, *self.command(*args),
        )  # fmt: skip
        wait_for(lambda: "FAKE-AGENT" in self.screen() and "\n>" in self.screen(), "the prompt box")

    def screen(self) -> str:
        """The pane's text, history included."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "fa")

    def screen_when(self, check: Callable[[str], bool], what: str) -> str:
        """The pane's text once ``check`` holds for it. A hook's payload in the log does not say
        the screen is drawn: the agent may draw after the hook (the prompt box after Stop), and
        tmux reads what it wrote some time later."""
        return wait_for(lambda: screen if check(screen := self.screen()) else "", what)

    def paste(self, text: str) -> None:
        """A bracketed paste of ``text``."""
        self.tmux("load-buffer", "-b", "fa", "-", stdin=text)
        self.tmux("paste-buffer", "-p", "-d", "-b", "fa", "-t", "fa")

    def keys(self, *keys: str) -> None:
        """Key presses, by tmux's key names."""
        self.tmux("send-keys", "-t", "fa", *keys)

    def hooks(self, event: str | None = None) -> list[dict[str, Any]]:
        """The logged hook payloads (of ``event``)."""
        payloads = complete_lines(self.log)
        return [p for p in payloads if event is None or p.get("hook_event_name", p.get("type")) == event]

    def transcript(self) -> list[dict[str, Any]]:
        """The agent's transcript events (its one session under ``$HOME``)."""
        files = list((self.home / ".fake-agent").glob("*.jsonl"))
        return [event for f in files for event in complete_lines(f)]

    def dropped(self, reason: str) -> int:
        """How many Enters the agent dropped for ``reason``."""
        return sum(1 for e in self.transcript() if e["type"] == "enter-dropped" and e["reason"] == reason)

    def dead_status(self) -> str:
        """The agent's exit status once it has exited, else an empty string."""
        # (tmux 3.3's #{pane_dead_status} is sometimes never set: a wrapper writes the status)
        return self.status.read_text().strip() if self.status.exists() else ""


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    box = Pane(tmp_path)
    yield box
    subprocess.run(["tmux", "-L", box.socket, "kill-server"], env=box.env, capture_output=True, timeout=10)


@pytest.mark.timeout(30)
def test_a_pasted_prompt_then_enter_is_submitted_whole(pane: Pane) -> None:
    pane.start("--flavor", "claude", "--settings", str(pane.settings(CLAUDE_EVENTS)))
    (start,) = wait_for(lambda: pane.hooks("SessionStart"), "SessionStart")
    assert start["source"] == "startup"
    assert Path(start["transcript_path"]).parent == pane.home / ".fake-agent"
    text = "first line of the prompt\nsecond line\nthird line, the last"
    pane.paste(text)
    wait_for(lambda: any(e["type"] == "paste-end" for e in pane.transcript()), "the end of the paste")
    time.sleep(0.3)  # past the paste settle time (0.2 s)
    pane.keys("Enter")
    (submitted,) = wait_for(lambda: pane.hooks("UserPromptSubmit"), "UserPromptSubmit")
    assert submitted["prompt"] == text
    assert submitted["session_id"] == start["session_id"]
    (stop,) = wait_for(lambda: pane.hooks("Stop"), "Stop")
    assert stop["last_assistant_message"] == "ANSWER: first line of the prompt second line thi"
    assert stop["stop_hook_active"] is False
    answer = "ANSWER: first line of the prompt second line thi\n>"
    screen = pane.screen_when(lambda screen: screen.rstrip().endswith(answer), "the box after the answer")
    assert "WORKING on: first line of the prompt second line thi\n" in screen


@pytest.mark.timeout(30)
def test_a_100_kb_paste_is_submitted_whole(pane: Pane) -> None:
    pane.start("--flavor", "claude", "--settings", str(pane.settings(CLAUDE_EVENTS)))
    text = "\n".join(f"line {i:05d} " + "x" * 40 for i in range(2000))
    assert len(text) > 100_000
    pane.paste(text)
    wait_for(lambda: any(e["type"] == "paste-end" for e in pane.transcript()), "the end of the paste")
    time.sleep(0.3)  # past the paste settle time (0.2 s)
    pane.keys("Enter")
    (submitted,) = wait_for(lambda: pane.hooks("UserPromptSubmit"), "UserPromptSubmit")
    assert submitted["prompt"] == text
    wait_for(lambda: pane.hooks("Stop"), "Stop")


@pytest.mark.timeout(30)
def test_an_enter_right_after_a_paste_is_lost(pane: Pane) -> None:
    pane.start("--flavor", "claude", "--settings", str(pane.settings(CLAUDE_EVENTS)), "--paste-settle", "1")
    pane.tmux("load-buffer", "-b", "fa", "-", stdin="one\ntwo")
    pane.tmux("paste-buffer", "-p", "-d", "-b", "fa", "-t", "fa", ";", "send-keys", "-t", "fa", "Enter")
    wait_for(lambda: pane.dropped("paste-settle") == 1, "the Enter to be dropped")
    assert not pane.hooks("UserPromptSubmit")
    time.sleep(1.0)  # the settle time
    pane.keys("Enter")
    (submitted,) = wait_for(lambda: pane.hooks("UserPromptSubmit"), "UserPromptSubmit")
    assert submitted["prompt"] == "one\ntwo"
    assert pane.dropped("paste-settle") == 1


@pytest.mark.timeout(30)
def test_drop_enters_loses_the_first_enters(pane: Pane) -> None:
    pane.start("--flavor", "claude", "--settings", str(pane.settings(CLAUDE_EVENTS)), "--drop-enters", "1")
    pane.keys("-l", "hello there")
    pane.keys("Enter")
    wait_for(lambda: pane.dropped("drop-enters") == 1, "the Enter to be dropped")
    assert not pane.hooks("UserPromptSubmit")
    pane.screen_when(lambda screen: screen.rstrip().endswith("> hello there"), "the typed text")
    pane.keys("Enter")
    (submitted,) = wait_for(lambda: pane.hooks("UserPromptSubmit"), "UserPromptSubmit")
    assert submitted["prompt"] == "hello there"
    wait_for(lambda: pane.hooks("Stop"), "Stop")
    pane.keys("C-d")  # on the empty box: exit
    assert wait_for(pane.dead_status, "the exit") == "0"


@pytest.mark.timeout(30)
def test_a_permission_question_answered_yes(pane: Pane) -> None:
    settings = pane.settings(CLAUDE_EVENTS)
    pane.start("--flavor", "claude", "--settings", str(settings), "--busy", "0.2", "run it PERMISSION")
    (note,) = wait_for(lambda: pane.hooks("Notification"), "Notification")
    assert note["notification_type"] == "permission_prompt"
    assert note["message"] == "Claude needs your permission to use Bash"
    (pre,) = pane.hooks("PreToolUse")
    assert pre["tool_name"] == "Bash"
    question = "Do you want to proceed?\n1. Yes\n2. No"
    pane.screen_when(lambda screen: screen.rstrip().endswith(question), "the question")
    assert not pane.hooks("Stop")
    pane.keys("1")
    (stop,) = wait_for(lambda: pane.hooks("Stop"), "Stop")
    assert stop["last_assistant_message"] == "ANSWER: run it PERMISSION"
    assert [p["hook_event_name"] for p in pane.hooks()] == [
        "SessionStart", "UserPromptSubmit", "PreToolUse", "Notification", "PostToolUse", "Stop",
    ]  # fmt: skip
    pane.screen_when(lambda screen: "2. No\nProceeding\nANSWER: run it PERMISSION\n>" in screen, "the box")


@pytest.mark.timeout(30)
def test_denied_and_hanging_turns_end_without_stop(pane: Pane) -> None:
    pane.start("--flavor", "claude", "--settings", str(pane.settings(CLAUDE_EVENTS)), "--busy", "0")
    pane.keys("-l", "PERMISSION please")
    pane.keys("Enter")
    wait_for(lambda: pane.hooks("Notification"), "Notification")
    pane.keys("Escape")
    wait_for(lambda: "\nDenied\n>" in pane.screen(), "Denied")
    pane.keys("-l", "now HANG")
    pane.keys("Enter")
    wait_for(lambda: len(pane.hooks("UserPromptSubmit")) == 2, "the second prompt")
    wait_for(lambda: pane.screen().rstrip().endswith("WORKING on: now HANG"), "WORKING")
    pane.keys("C-c")
    wait_for(lambda: "WORKING on: now HANG\nInterrupted\n>" in pane.screen(), "Interrupted")
    assert not pane.hooks("Stop")


@pytest.mark.timeout(30)
def test_codex_notify_gets_the_turn_as_its_last_argument(pane: Pane) -> None:
    script = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
    notify = json.dumps([sys.executable, "-c", script, str(pane.log)])
    pane.start("--flavor", "codex", "-c", f"notify={notify}", "--model", "gpt-x", "say hi")
    (turn,) = wait_for(lambda: pane.hooks("agent-turn-complete"), "the notify program")
    assert turn["input-messages"] == ["say hi"]
    assert turn["last-assistant-message"] == "ANSWER: say hi"
    assert turn["client"] == "codex-tui"
    assert turn["cwd"] == str(pane.root)
    assert {"thread-id", "turn-id"} <= turn.keys()
    assert pane.screen().startswith("FAKE-AGENT codex ready model=gpt-x\n> say hi\nWORKING on: say hi\n")


@pytest.mark.timeout(30)
def test_gemini_hooks_come_from_the_env_named_home(pane: Pane) -> None:
    settings = pane.settings(GEMINI_EVENTS)
    gemini_home = settings.parent / "gemini-home"
    (gemini_home / ".gemini").mkdir(parents=True)
    settings.rename(gemini_home / ".gemini" / "settings.json")
    pane.start("--flavor", "gemini", env={"GEMINI_CLI_HOME": str(gemini_home)})
    (start,) = wait_for(lambda: pane.hooks("SessionStart"), "SessionStart")
    assert {"session_id", "transcript_path", "cwd", "timestamp", "source"} <= start.keys()
    pane.keys("-l", "ask PERMISSION")
    pane.keys("Enter")
    (note,) = wait_for(lambda: pane.hooks("Notification"), "Notification")
    assert note["notification_type"] == "ToolPermission"
    pane.keys("Enter")  # yes
    (after,) = wait_for(lambda: pane.hooks("AfterAgent"), "AfterAgent")
    assert after["prompt"] == "ask PERMISSION"
    assert after["prompt_response"] == "ANSWER: ask PERMISSION"
    assert [p["hook_event_name"] for p in pane.hooks()] == [
        "SessionStart", "BeforeAgent", "BeforeTool", "Notification", "AfterTool", "AfterAgent",
    ]  # fmt: skip


@pytest.mark.timeout(30)
def test_resume_model_and_an_exit_prompt(pane: Pane) -> None:
    session = str(uuid.uuid4())
    settings = pane.settings(CLAUDE_EVENTS)
    pane.tmux("new-session", "-d", "-s", "fa", "-e", f"HOME={pane.home}",
              *pane.command("--flavor", "claude", "--settings", str(settings),
                            "--model", "opus-x", "--resume", session, "EXIT when done"))  # fmt: skip
    assert wait_for(pane.dead_status, "the exit") == "0"
    (start,) = pane.hooks("SessionStart")
    assert (start["source"], start["session_id"], start["model"]) == ("resume", session, "opus-x")
    (stop,) = pane.hooks("Stop")
    assert stop["session_id"] == session
    assert pane.screen().startswith(f"FAKE-AGENT claude ready model=opus-x resumed {session}\n")
    assert (pane.home / ".fake-agent" / f"{session}.jsonl").exists()
