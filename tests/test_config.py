"""Settings: defaults < config file < environment < flags, provenance, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trio_bridge.config import SETTINGS, ConfigError, resolve_settings

from .conftest import Sandbox


def test_defaults_follow_xdg(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    resolved = resolve_settings(env)
    assert resolved.settings.state_dir == tmp_path / ".local/state/trio-bridge"
    assert resolved.settings.runtime_dir == tmp_path / "run/trio-bridge"
    assert resolved.config_file == tmp_path / ".config/trio-bridge/config.toml"
    assert set(resolved.sources.values()) == {"default"}


def test_runtime_dir_falls_back_to_state_and_relative_xdg_is_ignored(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": "relative/state"}
    settings = resolve_settings(env).settings
    assert settings.state_dir == tmp_path / ".local/state/trio-bridge"
    assert settings.runtime_dir == settings.state_dir


def test_layers_and_provenance(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'tmux_socket = "from-file"\ntmux_binary = "/opt/tmux"\n[timeouts]\ntmux = 7\nkill_grace = 0.5\n'
    )
    env = {
        "HOME": str(tmp_path),
        "TRIO_BRIDGE_CONFIG": str(config),
        "TRIO_BRIDGE_TMUX_SOCKET": "from-env",
        "TRIO_BRIDGE_TIMEOUT_TMUX": "8",
    }
    resolved = resolve_settings(env, flags={"timeouts.tmux": "9"})
    s = resolved.settings
    assert (s.tmux_socket, s.tmux_binary, s.timeouts.tmux, s.timeouts.kill_grace) == (
        "from-env",
        "/opt/tmux",
        9,
        0.5,
    )
    assert resolved.sources["tmux_socket"] == "env TRIO_BRIDGE_TMUX_SOCKET"
    assert resolved.sources["tmux_binary"] == f"file {config}"
    assert resolved.sources["timeouts.tmux"] == "flag --timeout-tmux"
    assert resolved.sources["timeouts.control_close"] == "default"


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        (
            {"TRIO_BRIDGE_TIMEOUT_TMUX": "soon"},
            {},
            "TRIO_BRIDGE_TIMEOUT_TMUX: expected a number of seconds, got 'soon'",
        ),
        ({"TRIO_BRIDGE_TIMEOUT_KILL_GRACE": "-1"}, {}, "TRIO_BRIDGE_TIMEOUT_KILL_GRACE: expected a positive"),
        ({"TRIO_BRIDGE_TMUX_SOCKET": "a/b"}, {}, "TRIO_BRIDGE_TMUX_SOCKET: expected 1-64 letters"),
        ({}, {"timeouts.tmux": "inf"}, "--timeout-tmux: expected a positive number"),
        ({}, {"tmux_binary": " "}, "--tmux-binary: expected a non-empty string"),
    ],
)
def test_bad_values_name_the_setting(
    env: dict[str, str], flags: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings({"HOME": str(tmp_path), **env}, flags=flags)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[timeouts]\ntmux = true\n", "timeouts.tmux: expected a number of seconds, got True"),
        ("tmux_sockett = 'x'\n", "unknown setting 'tmux_sockett'"),
        ("tmux_socket = \n", "Invalid value"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        resolve_settings({"HOME": str(tmp_path)}, config_file=config)


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        resolve_settings({"HOME": str(tmp_path), "TRIO_BRIDGE_CONFIG": str(tmp_path / "nope.toml")})
    resolve_settings({"HOME": str(tmp_path)})  # the default file may be missing


def test_every_setting_has_an_env_name_and_a_flag() -> None:
    assert len({s.env for s in SETTINGS}) == len({s.flag for s in SETTINGS}) == len(SETTINGS)
    assert all(s.env.startswith("TRIO_BRIDGE_") and s.flag.startswith("--") for s in SETTINGS)


def test_config_command_shows_values_and_sources(sandbox: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[timeouts]\ncontrol_close = 4\n")
    env = {**sandbox.env, "TRIO_BRIDGE_TIMEOUT_TMUX": "3"}
    result = sandbox.cli("--timeout-kill-grace", "2", "config", "--json", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    settings = doc["settings"]
    assert settings["timeouts.tmux"] == {"value": "3.0", "source": "env TRIO_BRIDGE_TIMEOUT_TMUX"}
    assert settings["timeouts.kill_grace"] == {"value": "2.0", "source": "flag --timeout-kill-grace"}
    assert settings["timeouts.control_close"] == {"value": "4.0", "source": f"file {config}"}
    assert settings["tmux_socket"]["value"] == sandbox.socket_name
    text = sandbox.cli("config", env=env)
    assert text.returncode == 0
    assert (
        "timeouts.tmux" in text.stdout.decode() and "(env TRIO_BRIDGE_TIMEOUT_TMUX)" in text.stdout.decode()
    )


def test_config_command_reports_a_bad_value_in_one_line(sandbox: Sandbox) -> None:
    result = sandbox.cli("config", "--timeout-tmux", "0")
    assert result.returncode == 2
    assert (
        result.stderr.decode()
        == "trio-bridge: --timeout-tmux: expected a positive number of seconds, got '0'\n"
    )


def test_run_takes_settings_flags(sandbox: Sandbox) -> None:
    result = sandbox.cli("run", "--tmux-binary", "tb-no-tmux", "--", "true")
    assert result.returncode == 125
    assert b"'tb-no-tmux' not found" in result.stderr
