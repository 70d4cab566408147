"""`keys` accepts what `tmux send-keys` accepts (single characters, every named key, C-/M-/S-
modifiers), validated, never a tmux command: through the CLI, a real daemon and real tmux."""

from __future__ import annotations

from pathlib import Path

from ..conftest import Sandbox
from ._helpers import ok, wait_until


def test_keys_sends_tmux_s_vocabulary(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    # `cat -v` shows each key's bytes (no echo: only what the keys produced)
    sid = ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "sh", "-c", "stty -echo; exec cat -v")).strip()
    wait_until(lambda: "running" in ok(sandbox.cli("ls")))
    keys = ["q", "M-x", "C-Left", "S-Up", "PgUp", "NPage", "a", ";", "b", "M-;", "KP5", "é", "Enter"]
    ok(sandbox.cli("keys", sid, *keys))
    expected = "q^[x^[[1;5D^[[1;2A^[[5~^[[6~a;b^[;5M-CM-)"  # é in UTF-8, as cat -v shows it
    wait_until(lambda: expected in ok(sandbox.cli("screen", sid)))
    ok(sandbox.cli("kill", sid))


def test_keys_refuses_what_is_not_a_key(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    sid = ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "sh", "-c", "stty -echo; exec cat -v")).strip()
    marker = tmp_path / "injected"
    for bad in (["kill-server"], ["a", ";", f"run-shell 'touch {marker}'"], ["c-c"], ["ab"], ["-t"]):
        result = sandbox.cli("keys", sid, "--", *bad)
        assert result.returncode == 1, result
        assert b"unknown key" in result.stderr and result.stderr.count(b"\n") == 1
    # the separator trick is one literal key: nothing but `;` arrives, no tmux command runs
    ok(sandbox.cli("keys", sid, ";", "Enter"))
    wait_until(lambda: ";" in ok(sandbox.cli("screen", sid)))
    assert not marker.exists() and "running" in ok(sandbox.cli("ls"))
    ok(sandbox.cli("kill", sid))
