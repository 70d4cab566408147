"""Agent profiles: how to start each AI coding agent CLI, as data.

A profile says which binary to run, which flags always go with it, how a model is chosen, how
a prompt is passed at start, how an earlier conversation is resumed by the agent's own id, how
its hooks are configured (one of the styles below), and how a submitted prompt is confirmed.
The defaults cover Claude Code, Codex and Gemini CLI; the ``[agents.NAME]`` tables of the config
file change them field by field or add new agents (adding a fourth agent is adding a table)::

    [agents.claude]
    binary = "/opt/claude/bin/claude"
    args = ["--permission-mode", "acceptEdits"]

    [agents.aider-like]
    binary = "my-agent"
    model_args = ["-m", "{model}"]
    prompt_args = ["--message", "{prompt}"]
    hooks = "claude"

Hook styles (trio-bridge writes the configuration per session, never into the user's own
agent settings):

- ``claude``: a settings file passed with ``--settings FILE`` (Claude Code merges it over the
  user's settings), whose hooks run ``trio-bridge hook EVENT`` with the event JSON on stdin.
- ``codex``: ``-c notify=[...]``, a command-line override of Codex's ``notify`` program, which
  gets the turn's JSON as its last argument.
- ``gemini``: ``GEMINI_CLI_HOME`` pointing at a home of the session's own, whose ``.gemini/``
  links to everything in the user's but ``settings.json``: a copy of the user's, with the hooks.
- ``none``: no hooks (the state then comes from output and the screen only).

Standard library only: the CLI imports this with the configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PROFILES", "HOOK_STYLES", "AgentLaunch", "AgentProfile", "hook_command",
    "keep_agent_files", "launch", "parse_profiles",
]  # fmt: skip

HOOK_STYLES = ("claude", "codex", "gemini", "none")
#: how a submitted prompt is confirmed: a hook (the agent reports the prompt) or any output
CONFIRM_STYLES = ("hook", "output")
_PLACEHOLDER = re.compile(r"\{(\w*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: a tmux key name as clear_keys take it (tmux refuses unknown ones when they are pressed)
_KEY = re.compile(r"(?:[CMS]-)*[A-Za-z0-9]+")
_CLAUDE_EVENTS = ("SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Notification", "Stop")
_GEMINI_USER_FILE = "gemini-user"
#: what a session's terminal and hooks need: never unset (tmux.server refuses the terminal's
#: too; this module imports the standard library only, so it names them itself)
_SESSION_ENV = frozenset({"TERM", "TMUX", "TMUX_PANE", "TRIO_BRIDGE_SESSION_ID", "TRIO_BRIDGE_API_SOCKET"})
_GEMINI_EVENTS = ("SessionStart", "BeforeAgent", "AfterAgent", "BeforeTool", "AfterTool", "Notification")


@dataclasses.dataclass(frozen=True)
class AgentProfile:
    """How to start one agent CLI. ``{model}``, ``{prompt}`` and ``{native_id}`` in the
    argument templates are replaced by the values given at start (each argument whole: a
    prompt never becomes several arguments)."""

    name: str
    binary: str
    #: always passed (a user's own flags)
    args: tuple[str, ...] = ()
    model_args: tuple[str, ...] = ("--model", "{model}")
    prompt_args: tuple[str, ...] = ("{prompt}",)
    resume_args: tuple[str, ...] = ("--resume", "{native_id}")
    hooks: str = "none"
    #: ``hook``: a submitted prompt is confirmed by the agent's prompt hook; ``output``: by any
    #: output after Enter (for agents without such a hook)
    confirm: str = "output"
    #: extra environment for the agent
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: variables of the daemon's environment the agent must not inherit (``env`` and the
    #: session's own environment still set them)
    unset_env: tuple[str, ...] = ()
    #: regular expressions that, on the screen of an agent quiet while ``working``, mean it
    #: waits for the user (the last resort, after hooks and transcripts)
    waiting_patterns: tuple[str, ...] = ()
    #: regular expressions that, in what the agent's transcript has just appended, mean its
    #: turn ended with no hook to say so (Claude Code's interrupt: Esc fires no Stop)
    turn_end_patterns: tuple[str, ...] = ()
    #: regular expressions that, on the screen, mean a turn runs (``esc to interrupt``)
    busy_patterns: tuple[str, ...] = ()
    #: a regular expression (multi-line) finding the prompt box on the screen, its last match
    #: being the box; its group ``text`` is what the box holds. The box with no busy line on a
    #: quiet screen means the agent is ready (``idle``); a box holding text is cleared before
    #: a prompt is pasted (with ``clear_keys``)
    prompt_box: str | None = None
    #: what an empty box shows instead (placeholders), as the ``text`` group reads it
    box_placeholders: tuple[str, ...] = ()
    #: tmux keys that clear a line of the box (pressed once per line, then the box is read again);
    #: never an interrupt (Esc) nor an exit (C-c)
    clear_keys: tuple[str, ...] = ("C-u", "BSpace")

    @property
    def start_hook(self) -> bool:
        """Whether its hooks report its start (Claude Code's and Gemini CLI's SessionStart)."""
        return self.hooks in ("claude", "gemini")


DEFAULT_PROFILES: Mapping[str, AgentProfile] = {
    # "--" before a positional prompt, "--flag=" for an option's: a prompt that starts with "-"
    # is never read as a flag
    # Screens as seen with claude 2.1.197, codex-cli 0.169.0, gemini 0.61.0 (docs/real-agents.md).
    "claude": AgentProfile(
        "claude", "claude", prompt_args=("--", "{prompt}"), hooks="claude", confirm="hook",
        waiting_patterns=(r"Do you want to (proceed|make this edit|create)",),
        # the user message Claude Code records on Esc (also "... for tool use"), as JSON
        turn_end_patterns=(r'"text":"\[Request interrupted by user',),
        # its footer while a turn runs (a tool included); the box: U+276F between two rules
        busy_patterns=(r"esc to interrupt",), prompt_box=r"^─{20,}\n\u276f ?(?P<text>.*)$",
    ),
    "codex": AgentProfile(
        "codex", "codex", prompt_args=("--", "{prompt}"), resume_args=("resume", "{native_id}"),
        hooks="codex", confirm="output",
        # "• Working (0s • esc to interrupt)" until the first words (then none: the quiet says)
        busy_patterns=(r"esc to interrupt",), prompt_box=r"^\u203a (?P<text>.*)$",
        box_placeholders=("Ask Codex to do anything",),
    ),
    # With CI=true (or GITHUB_ACTIONS=true) inherited, Gemini CLI started without a prompt
    # runs headless, not in its terminal: it exits at once, "No input provided via stdin".
    "gemini": AgentProfile(
        "gemini", "gemini", prompt_args=("--prompt-interactive={prompt}",), hooks="gemini",
        confirm="hook", waiting_patterns=(r"Allow execution",), unset_env=("CI", "GITHUB_ACTIONS"),
        # "⠸ Thinking... (esc to cancel, 1s)"; its box stays drawn while it works
        busy_patterns=(r"\(esc to cancel",), prompt_box=r"^ > (?P<text>.*)$",
        box_placeholders=("Type your message or @path/to/file",),
    ),
}  # fmt: skip

_PLACEHOLDERS = {"model_args": {"model"}, "prompt_args": {"prompt"}, "resume_args": {"native_id"}}
_FIELDS = {f.name for f in dataclasses.fields(AgentProfile)} - {"name"}


def _strings(value: object, where: str, placeholders: set[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of strings")
    for item in value:
        for name in _PLACEHOLDER.findall(item):
            if name not in placeholders:
                raise ValueError(f"{where}: unknown placeholder {{{name}}} (allowed: {sorted(placeholders)})")
    return tuple(value)


def parse_profiles(table: Mapping[str, Any]) -> dict[str, AgentProfile]:
    """The default profiles changed by a config file's ``[agents]`` table.

    Raises:
        ValueError: an unknown field, a wrong type, an unknown placeholder or hook style
            (the message names the profile and the field).
    """
    profiles = dict(DEFAULT_PROFILES)
    for name, fields in table.items():
        where = f"agents.{name}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}", name):
            raise ValueError(f"{where}: a profile name is letters, digits, - and _")
        if not isinstance(fields, Mapping):
            raise ValueError(f"{where} must be a table")
        base = profiles.get(name)
        if base is None and "binary" not in fields:
            raise ValueError(f"{where}: a new agent profile needs a binary")
        changes: dict[str, Any] = {}
        for key, value in fields.items():
            at = f"{where}.{key}"
            if key not in _FIELDS:
                raise ValueError(f"{at}: unknown field (known: {', '.join(sorted(_FIELDS))})")
            if key == "binary":
                if not isinstance(value, str) or not value:
                    raise ValueError(f"{at} must be a non-empty string")
                changes[key] = os.path.expanduser(value)
            elif key in ("hooks", "confirm"):
                allowed = HOOK_STYLES if key == "hooks" else CONFIRM_STYLES
                if value not in allowed:
                    raise ValueError(f"{at} must be one of {', '.join(allowed)}")
                changes[key] = value
            elif key == "env":
                if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
                    raise ValueError(f"{at} must be a table of strings")
                for var, text in value.items():
                    if not _ENV_NAME.fullmatch(var) or "\0" in text:
                        raise ValueError(f"{at}: {var!r} is not a valid environment variable")
                changes[key] = dict(value)
            elif key == "unset_env":
                changes[key] = _strings(value, at, set())
                for var in changes[key]:
                    if not _ENV_NAME.fullmatch(var):
                        raise ValueError(f"{at}: {var!r} is not a valid environment variable")
                    if var in _SESSION_ENV:
                        raise ValueError(f"{at}: {var} is the session's own (tmux's or trio-bridge's)")
            elif key in ("waiting_patterns", "turn_end_patterns", "busy_patterns", "prompt_box"):
                patterns = [value] if key == "prompt_box" and isinstance(value, str) else value
                checked = _strings(patterns, at, set())
                for pattern in checked:
                    try:
                        compiled = re.compile(pattern)
                    except re.error as exc:
                        raise ValueError(f"{at}: {pattern!r} is not a regular expression: {exc}") from None
                    if key == "prompt_box" and "text" not in compiled.groupindex:
                        raise ValueError(f"{at}: the pattern needs a group (?P<text>...)")
                changes[key] = checked[0] if key == "prompt_box" else checked
            elif key == "clear_keys":
                changes[key] = _strings(value, at, set())
                for pressed in changes[key]:
                    if not _KEY.fullmatch(pressed) or pressed.lower() in ("escape", "c-c", "enter"):
                        raise ValueError(f"{at}: {pressed!r} is not a key that clears text")
            else:
                changes[key] = _strings(value, at, _PLACEHOLDERS.get(key, set()))
                needed = {"prompt_args": "{prompt}", "resume_args": "{native_id}"}.get(key)
                if needed is not None and not any(needed in arg for arg in changes[key]):
                    raise ValueError(f"{at} must pass {needed} (it would be dropped)")
        profiles[name] = (
            dataclasses.replace(base, **changes) if base is not None else AgentProfile(name=name, **changes)
        )
    return profiles


@dataclasses.dataclass(frozen=True)
class AgentLaunch:
    """What starting an agent takes: its argv, extra environment and the variables it must
    not inherit (its hook configuration is written by :func:`launch`)."""

    argv: list[str]
    env: dict[str, str]
    unset_env: tuple[str, ...] = ()


def hook_command() -> list[str]:
    """The command an agent's hook runs (``EVENT`` follows): ``hook.py`` run as a file by this
    Python in isolated mode, so that its start-up imports the standard library only (not even
    this package, nor anything from the agent's working directory)."""
    return [sys.executable, "-I", str(Path(__file__).resolve().parent.parent / "hook.py")]


def _fill(template: Sequence[str], **values: str) -> list[str]:
    return [_PLACEHOLDER.sub(lambda m: values[m[1]], arg) for arg in template]


def launch(
    profile: AgentProfile,
    config_dir: Path,
    *,
    model: str | None = None,
    prompt: str | None = None,
    native_id: str | None = None,
    extra_args: Sequence[str] = (),
    hook: Sequence[str] | None = None,
    environment: Mapping[str, str] | None = None,
) -> AgentLaunch:
    """The argv and environment that start ``profile``'s agent, with its hooks calling
    ``hook`` (default :func:`hook_command`); writes the hook configuration into
    ``config_dir`` (the session's own directory); ``environment`` is the one the agent will
    run in (its ``HOME``). Order: binary, the profile's args, resume
    (Codex's is a subcommand), ``extra_args``, hooks, model, prompt."""
    hook = list(hook_command() if hook is None else hook)
    environment = os.environ if environment is None else environment
    argv = [profile.binary, *profile.args]
    if native_id is not None:
        argv += _fill(profile.resume_args, native_id=native_id)
    argv += extra_args
    env = dict(profile.env)
    if profile.hooks == "claude":
        path = config_dir / "claude-settings.json"
        _write_json(path, {"hooks": _hook_table(_CLAUDE_EVENTS, hook)})
        argv += ["--settings", str(path)]
    elif profile.hooks == "codex":
        # TOML array of strings; JSON string escapes are valid TOML basic strings.
        argv += ["-c", "notify=[" + ", ".join(json.dumps(a) for a in [*hook, "codex"]) + "]"]
    elif profile.hooks == "gemini":
        env["GEMINI_CLI_HOME"] = str(_gemini_home(config_dir / "gemini-home", environment, hook))
    if model is not None:
        argv += _fill(profile.model_args, model=model)
    if prompt is not None:
        argv += _fill(profile.prompt_args, prompt=prompt)
    return AgentLaunch(argv, env, profile.unset_env)


def _gemini_home(home: Path, environment: Mapping[str, str], hook: Sequence[str]) -> Path:
    """A Gemini CLI home for one session: ``.gemini/`` holds links to everything in the user's
    own ``~/.gemini`` (credentials, conversations: so resume works across sessions) but for
    ``settings.json``, a copy of the user's with the session's hooks added.

    Gemini CLI has no per-run settings flag, and its system settings file (the other way in)
    must be owned by root in root-owned directories; ``GEMINI_CLI_HOME`` relocates its home.
    """
    user_home = Path(environment.get("GEMINI_CLI_HOME") or environment.get("HOME") or Path.home())
    user = Path(os.path.abspath(user_home / ".gemini"))
    # Its conversations must land in the user's own directory, not in this session's.
    (user / "tmp").mkdir(parents=True, exist_ok=True)
    own = home / ".gemini"
    own.mkdir(parents=True, exist_ok=True)
    # where keep_agent_files moves what Gemini creates in the session home
    (home.parent / _GEMINI_USER_FILE).write_text(str(user))
    for entry in user.iterdir():
        if entry.name != "settings.json":
            (own / entry.name).symlink_to(entry)
    settings = _read_json(user / "settings.json")
    hooks = settings.get("hooks")
    merged = dict(hooks) if isinstance(hooks, dict) else {}
    for event, groups in _hook_table(_GEMINI_EVENTS, hook).items():
        # the user's own hooks for the event run too
        mine = merged.get(event)
        merged[event] = [*(mine if isinstance(mine, list) else []), *groups]
    settings["hooks"] = merged
    _write_json(own / "settings.json", settings)
    return home


def keep_agent_files(config_dir: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """After a session: what its agent created in the session's own home goes to the user's.

    A Gemini CLI session home (see :func:`_gemini_home`) links the entries the user's
    ``~/.gemini`` had when the session started; what Gemini created there meanwhile (a login's
    credentials, ``/memory add``'s ``GEMINI.md``, its ids and registries) would be deleted with
    the session's directory. Each such entry moves to the user's ``~/.gemini`` (as recorded at
    launch; the home's links are the agent's to change), unless the user's has one by then:
    theirs wins. A move is whole or not at all (:func:`_move_new`).

    Returns the names moved, and (name, error) for those that could not be (their copies stay
    with the session). Raises nothing for a session home in any state. Blocking: run it in a
    thread.
    """
    own = config_dir / "gemini-home" / ".gemini"
    try:
        user = Path((config_dir / _GEMINI_USER_FILE).read_text())
        entries = sorted(own.iterdir())
    except (OSError, UnicodeDecodeError):
        return [], []  # not a Gemini session, or nothing to keep
    moved: list[str] = []
    failed: list[tuple[str, str]] = []
    for entry in entries:
        if entry.name == "settings.json" or entry.is_symlink():
            continue
        try:
            if _move_new(entry, user / entry.name):
                moved.append(entry.name)
        except OSError as exc:
            failed.append((entry.name, str(exc)))
    return moved, failed


def _move_new(source: Path, target: Path) -> bool:
    """Move ``source`` to ``target`` unless ``target`` exists (False then).

    First to a hidden name beside ``target`` (a copy, across filesystems: a failed copy leaves
    nothing behind), then into place without replacing what may have appeared there meanwhile
    (a file by a hard link, which refuses to replace; a directory by a rename, which refuses a
    file or a non-empty directory there).
    """
    if target.exists() or target.is_symlink():
        return False
    staging = target.with_name(f".{target.name}.trio-bridge-{secrets.token_hex(4)}")
    try:
        shutil.move(source, staging)
        try:
            if staging.is_dir():
                os.rename(staging, target)
            else:
                os.link(staging, target)
        except OSError:
            if target.exists() or target.is_symlink():
                return False  # it appeared meanwhile: the user's wins
            raise
        return True
    finally:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)


def _hook_table(events: Sequence[str], hook: Sequence[str]) -> dict[str, Any]:
    return {
        event: [{"hooks": [{"type": "command", "command": shlex.join([*hook, event])}]}] for event in events
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")
