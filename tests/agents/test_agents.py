"""Agent sessions: state from hooks (pure logic, then end to end through `trio-bridge hook`)."""

# The real CLIs' screens hold these characters (their prompt marks): not typos.
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from trio_bridge.agents import DEFAULT_PROFILES, AgentProfile, AgentState, AgentTracker, parse_profiles
from trio_bridge.agents.state import ScreenKind, ScreenPatterns, read_screen

from .._api import running_daemon, sse_events
from ..conftest import Sandbox

WORKING, IDLE, WAITING = AgentState.WORKING, AgentState.IDLE, AgentState.WAITING_FOR_INPUT


def test_claude_code_turn_with_a_permission_question() -> None:
    agent = AgentTracker(stuck_after=10)
    assert agent.state is AgentState.STARTING
    start = {"session_id": "abc", "transcript_path": "/t/abc.jsonl", "source": "startup"}
    assert agent.on_hook("SessionStart", start, 0) is IDLE
    assert (agent.native_id, agent.transcript_path) == ("abc", "/t/abc.jsonl")
    assert agent.on_hook("UserPromptSubmit", {"prompt": "hi"}, 1) is WORKING
    asked = {"notification_type": "permission_prompt", "message": "Claude needs your permission"}
    assert agent.on_hook("Notification", asked, 2) is WAITING
    assert agent.on_hook("PostToolUse", {}, 3) is WORKING
    assert agent.on_hook("Stop", {}, 4) is IDLE
    assert agent.on_hook("Stop", {}, 5) is None  # no change, no event
    # an informational notification does not mean the agent waits for the user
    assert agent.on_hook("Notification", {"notification_type": "auth_success"}, 6) is None


def test_codex_and_gemini_events() -> None:
    codex = AgentTracker()
    assert codex.on_hook("notify", {"type": "agent-turn-complete", "thread-id": "t-1"}, 0) is IDLE
    assert codex.native_id == "t-1"
    gemini = AgentTracker()
    assert gemini.on_hook("BeforeAgent", {"prompt": "x"}, 0) is WORKING
    assert gemini.on_hook("AfterAgent", {"prompt_response": "y"}, 1) is IDLE
    assert gemini.on_hook("SomethingNew", {}, 2) is None


def test_a_codex_side_turn_is_not_the_users_turn() -> None:
    codex = AgentTracker()
    codex.prompts.add("fix it")
    codex.on_hook("notify", {"type": "agent-turn-complete"}, 0)  # no thread: taken as is
    codex.state = WORKING
    title = {"type": "agent-turn-complete", "thread-id": "t-title", "input-messages": ["Generate a title"]}
    assert codex.on_hook("notify", title, 1) is None  # Codex titling the conversation: not ours
    assert codex.native_id is None and codex.state is WORKING
    ours = {"type": "agent-turn-complete", "thread-id": "t-1", "input-messages": ["fix it"]}
    assert codex.on_hook("notify", ours, 2) is IDLE
    assert (codex.native_id, codex.last_prompt) == ("t-1", "fix it")
    # typed by the user directly (no prompt known): the known thread only
    typed = AgentTracker(native_id="t-1")
    assert typed.on_hook("notify", {**title, "input-messages": ["x"]}, 0) is None
    assert typed.on_hook("notify", {**ours, "input-messages": ["x"]}, 1) is IDLE


def test_stuck_after_silence_and_back_on_any_sign_of_life() -> None:
    agent = AgentTracker(stuck_after=10)
    agent.on_hook("UserPromptSubmit", {}, 0)
    assert agent.check(5) is None
    agent.on_output(8)
    assert agent.check(17) is None  # output at 8 counts as life
    assert agent.check(18) is AgentState.STUCK
    assert agent.on_output(19) is WORKING
    assert agent.check(25) is None
    agent.on_hook("Stop", {}, 26)
    assert agent.check(1000) is None  # idle is never stuck
    assert agent.on_exit() is AgentState.EXITED
    assert agent.on_hook("UserPromptSubmit", {}, 1001) is None  # exited is final


def test_a_turn_the_transcript_ends_is_idle() -> None:
    """Claude Code interrupted (Esc) fires no Stop; its transcript records the interrupt."""
    agent = AgentTracker()
    assert agent.on_transcript_turn_end(0) is None  # starting: no turn to end
    agent.on_hook("UserPromptSubmit", {}, 1)
    assert agent.on_transcript(2) is None  # growth alone: a sign of life
    assert agent.on_transcript_turn_end(3) is IDLE
    agent.on_hook("Notification", {"notification_type": "permission_prompt"}, 4)
    assert agent.on_transcript_turn_end(5) is IDLE  # Esc at a permission question


def test_claudes_turn_end_pattern_is_its_interrupt_record_not_a_prompt() -> None:
    (pattern,) = DEFAULT_PROFILES["claude"].turn_end_patterns
    interrupt = {"type": "user", "message": {"role": "user", "content": [
        {"type": "text", "text": "[Request interrupted by user for tool use]"}]}}  # fmt: skip
    assert re.search(pattern, json.dumps(interrupt, separators=(",", ":")))
    said = {"type": "user", "message": {"role": "user", "content": "why [Request interrupted by user]?"}}
    assert not re.search(pattern, json.dumps(said, separators=(",", ":")))


RULE = "─" * 120


def patterns(name: str) -> ScreenPatterns:
    profile: AgentProfile = DEFAULT_PROFILES[name]
    return ScreenPatterns.compile(
        profile.waiting_patterns, profile.busy_patterns, profile.prompt_box, profile.box_placeholders
    )


# Screens as the real CLIs drew them (docs/real-agents.md), cut to what matters.
CLAUDE_WORKING = f"❯ LATE please F5\n✻ Determining…\n{RULE}\n❯ \n{RULE}\n  esc to interrupt · ← for agents\n"
CLAUDE_PUT_BACK = f"{RULE}\n❯ LATE please F5\n{RULE}\n{' ' * 100}● high · /effort\n"
CLAUDE_IDLE = f"● TOOL-DONE\n✻ Crunched for 6s\n{RULE}\n❯ \n{RULE}\n  ? for shortcuts · ← for agents\n"
CLAUDE_DIALOG = (
    f"● Bash(touch a.txt && sleep 6)\n  ⎿  Waiting…\n{RULE}\n Bash command\n   touch a.txt && sleep 6\n"
    " Do you want to proceed?\n ❯ 1. Yes\n   3. No\n Esc to cancel · Tab to amend · ctrl+e to explain\n"
)
CLAUDE_TOOL_RUNNING = (
    f"● Bash(touch a.txt && sleep 6)\n  ⎿  Running…\n✶ Herding…\n{RULE}\n❯ \n{RULE}\n"
    "  esc to interrupt · ← for agents\n"
)
CODEX_READY = "  >_ OpenAI Codex (v0.169.0)\n› Ask Codex to do anything\n  gpt-5-fake default · /w\n"
CODEX_WORKING = "› LATE codex one\n• Working (0s • esc to interrupt)\n› Ask Codex to do anything\n  gpt-5\n"
CODEX_INTERRUPTED = (
    "› SLOW codex two\n• FAKE-\n■ Conversation interrupted - use /feedback if something went wrong\n"
    "› Ask Codex to do anything\n  gpt-5-fake default · /w\n"
)
CODEX_DRAFT = "› LATE codex one\n› a\n  b\n  c\n  gpt-5-fake default · /w\n"
GEMINI_QUEUED = (
    " > SLOW gemini one\n✦ FAKE-ANS\n  Queued (press ↑ to edit):\n    second while busy\n"
    f" ⠸ Thinking... (esc to cancel, 1s)\n{RULE}\n Shift+Tab to accept edits\n"
    " >   Type your message or @path/to/file\n workspace (/directory)\n"
)
GEMINI_CANCELLED = (
    f" > LATE gem\nℹ Request cancelled.\n{RULE}\n Shift+Tab to accept edits\n"
    " >   Type your message or @path/to/file\n workspace (/directory)\n"
)


def test_screens_of_the_real_clis_read_as_they_mean() -> None:
    claude, codex, gemini = patterns("claude"), patterns("codex"), patterns("gemini")
    cases = [
        (claude, CLAUDE_WORKING, ScreenKind.BUSY, ""),
        (claude, CLAUDE_PUT_BACK, ScreenKind.READY, "LATE please F5"),  # the prompt put back
        (claude, CLAUDE_IDLE, ScreenKind.READY, ""),
        (claude, CLAUDE_DIALOG, ScreenKind.WAITING, None),  # "❯ 1. Yes" is not the box
        (claude, CLAUDE_TOOL_RUNNING, ScreenKind.BUSY, ""),
        (codex, CODEX_READY, ScreenKind.READY, ""),  # its placeholder: an empty box
        (codex, CODEX_WORKING, ScreenKind.BUSY, ""),
        (codex, CODEX_INTERRUPTED, ScreenKind.READY, ""),
        (codex, CODEX_DRAFT, ScreenKind.READY, "a"),  # the box is the last "› " line
        (gemini, GEMINI_QUEUED, ScreenKind.BUSY, ""),
        (gemini, GEMINI_CANCELLED, ScreenKind.READY, ""),
    ]
    for pats, screen, kind, box in cases:
        reading = read_screen(pats, screen)
        assert (reading.kind, reading.box) == (kind, box), screen
    assert read_screen(codex, "loading\n").kind is ScreenKind.UNKNOWN
    assert read_screen(claude, CLAUDE_PUT_BACK).line == "❯ LATE please F5"  # the evidence


def test_the_screen_says_what_no_hook_does() -> None:
    codex = patterns("codex")
    # Codex has no start hook: its ready screen, once quiet, is idle
    agent = AgentTracker(screen_quiet=1.5)
    assert agent.on_screen(read_screen(codex, CODEX_READY), 1.0) is None  # not quiet yet
    assert agent.on_screen(read_screen(codex, CODEX_READY), 1.5) is IDLE
    assert agent.evidence == "screen: '› Ask Codex to do anything'"
    # a turn typed into it (attach): its busy line is a turn
    assert agent.on_screen(read_screen(codex, CODEX_WORKING), 4) is WORKING
    # interrupted with Esc (no notify): quiet, the box and no busy line: idle
    agent.on_output(5)
    assert agent.on_screen(read_screen(codex, CODEX_INTERRUPTED), 6) is None  # words may still come
    assert agent.on_screen(read_screen(codex, CODEX_INTERRUPTED), 6.5) is IDLE
    # a busy line lingering just after a hook said idle is not a new turn
    agent.on_hook("notify", {"type": "agent-turn-complete"}, 10)
    assert agent.on_screen(read_screen(codex, CODEX_WORKING), 10.5) is None
    # a start with a prompt and a start hook: the hook says working, not the ready screen
    claude = AgentTracker(prompt_at_start=True)
    assert claude.on_screen(read_screen(patterns("claude"), CLAUDE_IDLE), 5) is None
    assert claude.on_screen(read_screen(patterns("claude"), CLAUDE_WORKING), 5) is WORKING
    assert claude.on_hook("SessionStart", {"session_id": "s"}, 6) is None  # still its first turn
    assert claude.state is WORKING
    # Codex started with a prompt: working from the start; its ready screen, drawn before the
    # prompt goes in, is no turn's end until the turn showed (busy line, notify)
    first = AgentTracker(state=WORKING, first_turn_unseen=True)
    assert first.on_screen(read_screen(codex, CODEX_READY), 10) is None
    assert first.on_screen(read_screen(codex, CODEX_WORKING), 11) is None  # working already
    assert first.on_screen(read_screen(codex, CODEX_INTERRUPTED), 13) is IDLE
    # without hooks, silence rules (not the screen)
    hookless = AgentTracker(hookless=True, state=WORKING)
    assert hookless.on_screen(read_screen(codex, CODEX_READY), 100) is None


def test_a_claude_turn_interrupted_before_its_first_words_is_idle() -> None:
    claude = patterns("claude")
    agent = AgentTracker()
    agent.on_hook("SessionStart", {}, 0)
    agent.on_hook("UserPromptSubmit", {"prompt": "LATE please F5"}, 1)
    assert agent.on_screen(read_screen(claude, CLAUDE_WORKING), 3) is None
    # Esc: the prompt back in the box, no hook, nothing in the transcript
    assert agent.on_screen(read_screen(claude, CLAUDE_PUT_BACK), 3) is IDLE
    assert agent.evidence == "screen: '❯ LATE please F5'"


def test_an_answered_dialog_is_working_until_the_tool_ends() -> None:
    claude = patterns("claude")
    agent = AgentTracker()
    agent.on_hook("UserPromptSubmit", {"prompt": "RUN_TOOL"}, 0)
    agent.on_hook("PreToolUse", {"tool_name": "Bash"}, 0.4)
    assert agent.on_screen(read_screen(claude, CLAUDE_DIALOG), 1) is None  # not quiet yet
    assert agent.on_screen(read_screen(claude, CLAUDE_DIALOG), 2) is WAITING
    # Enter: the tool runs (its PostToolUse comes at its end)
    assert agent.on_screen(read_screen(claude, CLAUDE_TOOL_RUNNING), 3) is WORKING
    assert agent.evidence == "screen: 'esc to interrupt · ← for agents'"
    # Claude's Notification for that dialog, seconds late: it asks nothing any more
    asked = {"notification_type": "permission_prompt", "message": "Claude needs your permission"}
    assert agent.on_hook("Notification", asked, 6.5) is None
    assert agent.state is WORKING
    # the next tool's dialog is asked again
    agent.on_hook("PreToolUse", {"tool_name": "Bash"}, 20)
    assert agent.on_hook("Notification", asked, 26) is WAITING
    assert agent.evidence == "hook Notification"


def test_screen_patterns_in_profiles_are_checked() -> None:
    changed = parse_profiles(
        {"codex": {"busy_patterns": ["Thinking"], "prompt_box": "^> (?P<text>.*)$", "clear_keys": ["C-u"]}}
    )
    assert changed["codex"].prompt_box == "^> (?P<text>.*)$"
    assert changed["codex"].busy_patterns == ("Thinking",)
    for fields, message in [
        ({"prompt_box": "^> .*$"}, "(?P<text>"),
        ({"busy_patterns": ["("]}, "not a regular expression"),
        ({"clear_keys": ["C-c"]}, "not a key that clears"),
        ({"clear_keys": ["Escape"]}, "not a key that clears"),
    ]:
        try:
            parse_profiles({"codex": fields})
        except ValueError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{fields} accepted")


FAKE_AGENT = """
import json, subprocess, sys, time
def hook(event, payload):
    subprocess.run([sys.executable, "-m", "trio_bridge", "hook", event], input=json.dumps(payload).encode())
hook("SessionStart", {"session_id": "native-1", "transcript_path": "/tmp/native-1.jsonl"})
line = sys.stdin.readline()
hook("UserPromptSubmit", {"session_id": "native-1", "prompt": line.strip()})
print("thinking about", line.strip(), flush=True)
time.sleep(0.3)
hook("Stop", {"session_id": "native-1"})
time.sleep(30)
"""


async def test_hooks_drive_the_agent_state_through_the_daemon(sandbox: Sandbox, tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with running_daemon(sandbox) as daemon, daemon.client() as client:
            seen: list[tuple[str, str | None]] = []
            async with (
                client.stream("GET", "/v1/events") as response,
                aclosing(sse_events(response)) as events,
            ):
                created = await client.post(
                    "/v1/sessions", json={"command": [sys.executable, "-c", FAKE_AGENT], "cwd": str(tmp_path)}
                )
                session_id = created.json()["id"]
                async for event in events:
                    body = event.json()
                    if event.event == "agent":
                        seen.append((body["agent"], body["session"]["id"]))
                        if body["agent"] == "idle" and len(seen) == 1:
                            await client.post(
                                f"/v1/sessions/{session_id}/input", json={"text": "the prompt", "enter": True}
                            )
                        if len(seen) == 3:
                            break
            assert seen == [("idle", session_id), ("working", session_id), ("idle", session_id)]
            agent = (await client.get(f"/v1/sessions/{session_id}/agent")).json()
            assert agent.pop("seconds_in_state") >= 0
            assert agent == {
                "state": "idle", "native_id": "native-1", "transcript_path": "/tmp/native-1.jsonl",
                "last_event": "Stop", "last_prompt": "the prompt", "evidence": "hook Stop",
            }  # fmt: skip
            assert (await client.get("/v1/sessions/nope/agent")).status_code == 404
            await client.delete(f"/v1/sessions/{session_id}")
            assert (await client.get(f"/v1/sessions/{session_id}/agent")).json()["state"] == "exited"


def test_the_hook_never_blocks_the_agent(tmp_path: Path) -> None:
    # A daemon that accepts the connection and never answers, and no daemon at all.
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent_path = tmp_path / "silent.sock"
    silent.bind(str(silent_path))
    silent.listen(1)
    try:
        for path in (silent_path, tmp_path / "missing.sock"):
            env = {
                "TRIO_BRIDGE_SESSION_ID": "abc",
                "TRIO_BRIDGE_API_SOCKET": str(path),
                "PATH": "/usr/bin:/bin",
            }
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "trio_bridge", "hook", "Stop"],
                input=b'{"session_id": "x"}', env=env, capture_output=True, timeout=20,
            )  # fmt: skip
            assert result.returncode == 0 and result.stderr == b""
            assert time.monotonic() - started < 10  # bounded (2 s per step), never hanging
    finally:
        silent.close()


def test_the_hook_imports_only_the_standard_library() -> None:
    code = (
        "import sys; from trio_bridge.cli import main; main(['hook', 'Stop']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('trio', 'attrs', 'attr', 'httpx', 'httpcore', 'quart', 'msgspec')))"
    )
    result = subprocess.run([sys.executable, "-c", code], input=b"{}", capture_output=True, timeout=20)
    assert result.stdout.decode().splitlines()[-1] == "[]", result.stderr.decode()


def test_cli_prompt_exits_4_when_the_busy_agent_queued_it(capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon's 202 ``queued`` is its own exit code: a script that retries on failure does
    not send the prompt twice (exit 1 stays "may not have been submitted")."""
    import argparse

    from trio_bridge.cli._client import EXIT_QUEUED, EXIT_REFUSED, cmd_prompt

    class Answers:
        def __init__(self, queued: str | None) -> None:
            self.queued = queued
            self.sent: list[tuple[str, str]] = []

        def prompt(self, session_id: str, text: str) -> str | None:
            self.sent.append((session_id, text))
            return self.queued

    args = argparse.Namespace(id="s1", text=["fix", "it"])
    taken, queued = Answers(None), Answers("session s1: the agent is busy and queued the prompt")
    assert cmd_prompt(taken, args) == 0  # type: ignore[arg-type]
    assert cmd_prompt(queued, args) == EXIT_QUEUED == 4  # type: ignore[arg-type]
    assert EXIT_QUEUED != EXIT_REFUSED
    assert taken.sent == queued.sent == [("s1", "fix it")]
    assert "queued the prompt" in capsys.readouterr().err
