"""Agent profiles: parsed from the config file over the defaults; what launch() starts."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from trio_bridge.agents import DEFAULT_PROFILES, keep_agent_files, launch
from trio_bridge.config import ConfigError, resolve_settings

from ..conftest import Sandbox


def settings_from(tmp_path: Path, text: str) -> object:
    config = tmp_path / "config.toml"
    config.write_text(text)
    return resolve_settings({"HOME": str(tmp_path)}, config_file=config).settings


def test_tables_change_defaults_field_by_field_and_add_agents(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path,
        """
tmux_socket = "x"
[agents.claude]
binary = "~/bin/claude"
args = ["--permission-mode", "acceptEdits"]
[agents.mine]
binary = "my-agent"
prompt_args = ["--message", "{prompt}"]
hooks = "claude"
confirm = "hook"
env = {MY_AGENT_QUIET = "1"}
unset_env = ["MY_AGENT_CI"]
""",
    )
    agents = settings.agents  # type: ignore[attr-defined]
    binary = agents["claude"].binary
    assert binary.endswith("/bin/claude") and not binary.startswith("~")  # expanded
    assert agents["claude"].hooks == "claude" and agents["claude"].args == (
        "--permission-mode",
        "acceptEdits",
    )
    assert agents["codex"] == DEFAULT_PROFILES["codex"]
    assert agents["mine"].prompt_args == ("--message", "{prompt}") and agents["mine"].env == {
        "MY_AGENT_QUIET": "1"
    }
    assert agents["mine"].unset_env == ("MY_AGENT_CI",)
    assert settings.tmux_socket == "x"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[agents.claude]\nbinry = "x"\n', "agents.claude.binry: unknown field"),
        ('[agents.new]\nargs = ["x"]\n', "agents.new: a new agent profile needs a binary"),
        (
            '[agents.claude]\nhooks = "aider"\n',
            "agents.claude.hooks must be one of claude, codex, gemini, none",
        ),
        ('[agents.claude]\nmodel_args = ["-m", "{modl}"]\n', "unknown placeholder {modl}"),
        ('[agents.claude]\nargs = "--x"\n', "agents.claude.args must be a list of strings"),
        ('[agents.claude]\nwaiting_patterns = ["("]\n', "is not a regular expression"),
        ('[agents.claude]\nturn_end_patterns = ["["]\n', "turn_end_patterns: '[' is not a regular"),
        ('[agents."bad name"]\nbinary = "x"\n', "a profile name is letters, digits"),
        ("agents = 3\n", "agents must be a table"),
        ('[agents.claude]\nenv = {"BAD NAME" = "1"}\n', "'BAD NAME' is not a valid environment variable"),
        ('[agents.claude]\nunset_env = ["CI=1"]\n', "'CI=1' is not a valid environment variable"),
        ('[agents.claude]\nunset_env = ["TERM"]\n', "TERM is the session's own"),
        ('[agents.claude]\nprompt_args = ["--quiet"]\n', "prompt_args must pass {prompt}"),
        ("[agents.claude]\nresume_args = []\n", "resume_args must pass {native_id}"),
    ],
)
def test_bad_profiles_name_the_field(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from(tmp_path, table)


def test_launch_builds_the_command_line_and_each_hook_style(tmp_path: Path) -> None:
    hook = ["/py", "-I", "/tb/hook.py"]
    prompt = "two words; $(rm -rf /)\nand a line"
    claude = launch(
        DEFAULT_PROFILES["claude"], tmp_path / "c", model="opus", prompt=prompt, native_id="n-1",
        extra_args=["--verbose"], hook=hook, environment={"HOME": str(tmp_path)},
    )  # fmt: skip
    settings_file = tmp_path / "c" / "claude-settings.json"
    assert claude.argv == [
        "claude",
        "--resume",
        "n-1",
        "--verbose",
        "--settings",
        str(settings_file),
        "--model",
        "opus",
        "--",
        prompt,
    ]  # the prompt stays one argument, never parsed by a shell, never read as a flag
    hooks = json.loads(settings_file.read_text())["hooks"]
    assert shlex.split(hooks["UserPromptSubmit"][0]["hooks"][0]["command"]) == [*hook, "UserPromptSubmit"]

    codex = launch(DEFAULT_PROFILES["codex"], tmp_path / "x", native_id="t-1", hook=hook, environment={})
    assert codex.argv[:3] == ["codex", "resume", "t-1"] and codex.argv[3] == "-c"
    key, _, value = codex.argv[4].partition("=")
    assert key == "notify" and tomllib.loads(f"v = {value}")["v"] == [*hook, "codex"]

    user_home = tmp_path / "user"
    (user_home / ".gemini").mkdir(parents=True)
    user_settings = {
        "ui": {"theme": "x"},
        "hooks": {"AfterAgent": [{"hooks": [{"type": "command", "command": "mine"}]}]},
    }
    (user_home / ".gemini" / "settings.json").write_text(json.dumps(user_settings))
    (user_home / ".gemini" / "oauth_creds.json").write_text("{}")
    gemini = launch(
        DEFAULT_PROFILES["gemini"],
        tmp_path / "g",
        prompt="hi",
        hook=hook,
        environment={"HOME": str(user_home)},
    )
    assert gemini.argv == ["gemini", "--prompt-interactive=hi"]
    # inherited CI=true would make it headless (tests/agents/test_real_agents.py runs it so)
    assert set(gemini.unset_env) == {"CI", "GITHUB_ACTIONS"} and claude.unset_env == ()
    home = Path(gemini.env["GEMINI_CLI_HOME"])
    merged = json.loads((home / ".gemini" / "settings.json").read_text())
    assert merged["ui"] == {"theme": "x"} and "BeforeAgent" in merged["hooks"]
    # the user's own hook for an event runs too, before trio-bridge's
    assert merged["hooks"]["AfterAgent"][0]["hooks"][0]["command"] == "mine"
    assert len(merged["hooks"]["AfterAgent"]) == 2
    assert (home / ".gemini" / "oauth_creds.json").resolve() == user_home / ".gemini" / "oauth_creds.json"
    assert (home / ".gemini" / "tmp").resolve() == user_home / ".gemini" / "tmp"  # conversations: the user's
    assert json.loads((user_home / ".gemini" / "settings.json").read_text()) == user_settings


def test_config_command_lists_the_profiles(sandbox: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[agents.mine]\nbinary = "my-agent"\nargs = ["--quiet"]\nhooks = "codex"\n')
    shown = sandbox.cli("config", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.decode().splitlines()
    assert any(
        re.match(r"agents\.mine +my-agent --quiet +\(hooks codex, confirmed by output\)", ln) for ln in lines
    )
    as_json = json.loads(sandbox.cli("config", "--json", "--config", str(config)).stdout)
    assert as_json["agents"]["claude"]["hooks"] == "claude"


def gemini_session(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A Gemini session's directory as launch() leaves it: (its config dir, its home's .gemini,
    the user's .gemini)."""
    user = tmp_path / "user" / ".gemini"
    user.mkdir(parents=True)
    (user / "oauth_creds.json").write_text("old")
    config = tmp_path / "session"
    environment = {"HOME": str(user.parent)}
    launched = launch(DEFAULT_PROFILES["gemini"], config, hook=["hook"], environment=environment)
    return config, Path(launched.env["GEMINI_CLI_HOME"]) / ".gemini", user


def test_keep_agent_files_moves_new_entries_whole_and_never_replaces(tmp_path: Path) -> None:
    config, own, user = gemini_session(tmp_path)
    (own / "GEMINI.md").write_text("remembered")
    (own / "history" / "work").mkdir(parents=True)
    (own / "history" / "work" / "h").write_text("h")
    (own / "state.json").write_text("sessions")
    (user / "state.json").write_text("theirs")  # appeared during the session
    (own / "oauth_creds.json").write_text("written through the link")
    assert keep_agent_files(config) == (["GEMINI.md", "history"], [])
    assert (user / "GEMINI.md").read_text() == "remembered"
    assert (user / "history" / "work" / "h").read_text() == "h"
    assert (user / "state.json").read_text() == "theirs"
    assert (user / "oauth_creds.json").read_text() == "written through the link"
    names = ["GEMINI.md", "history", "oauth_creds.json", "state.json", "tmp"]
    assert sorted(p.name for p in user.iterdir()) == names  # no staging copies left
    assert keep_agent_files(tmp_path / "not-an-agent") == ([], [])


def test_keep_agent_files_survives_a_session_home_in_any_state(tmp_path: Path) -> None:
    config, own, user = gemini_session(tmp_path)
    # the agent's to change: a link loop, and its tmp pointing elsewhere
    (own / "tmp").unlink()
    (own / "tmp").symlink_to(own / "tmp")
    (own / "elsewhere").symlink_to(tmp_path)
    (own / "GEMINI.md").write_text("remembered")
    assert keep_agent_files(config) == (["GEMINI.md"], [])
    assert (user / "GEMINI.md").read_text() == "remembered"  # the user's, as recorded at launch
    # the user's directory unusable (a file in its place): reported, the session's copy kept
    (own / "more.md").write_text("more")
    (user.parent / "moved").mkdir()
    user.rename(user.parent / "moved" / ".gemini")
    user.write_text("not a directory")
    moved, failed = keep_agent_files(config)
    assert moved == [] and [name for name, _ in failed] == ["more.md"]
    assert (own / "more.md").read_text() == "more"
