"""`trio-bridge run`, run as a subprocess exactly as a user types it, with real tmux."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..conftest import Sandbox, live_pids_matching

PY = sys.executable


def marker() -> str:
    return f"tb-marker-{uuid.uuid4().hex}"


def test_success_and_output(sandbox: Sandbox) -> None:
    result = sandbox.cli("run", "--", "echo", "hello", "world")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hello world\n", b"")


def test_python_module_entry_point_and_version(sandbox: Sandbox) -> None:
    result = sandbox.cli("--version")
    assert result.returncode == 0
    assert result.stdout.decode().startswith("trio-bridge ")


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 128 + 9), ("kill -TERM $$", 128 + 15), ("exit 255", 255)],
)
def test_exit_codes(sandbox: Sandbox, script: str, code: int) -> None:
    result = sandbox.cli("run", "--", "sh", "-c", script)
    assert result.returncode == code
    assert result.stdout == b""  # no "Killed"/"Terminated" notice from a wrapper shell


def test_session_is_removed_afterwards(sandbox: Sandbox) -> None:
    assert sandbox.cli("run", "--", "true").returncode == 0
    listing = sandbox.tmux("list-sessions", check=False)
    assert listing.returncode != 0 and "no server running" in listing.stderr
    assert list((sandbox.state_dir / "run").iterdir()) == []


def test_keep_leaves_the_session_for_attaching(sandbox: Sandbox) -> None:
    result = sandbox.cli("run", "--keep", "--", "sh", "-c", "echo kept; exit 5")
    assert result.returncode == 5
    sessions = sandbox.tmux("list-sessions", "-F", "#{session_name}").stdout.split()
    assert len(sessions) == 1
    assert f"attach -t {sessions[0]}" in result.stderr.decode()
    screen = sandbox.tmux("capture-pane", "-p", "-S", "-100", "-t", f"={sessions[0]}:").stdout
    assert "kept" in screen


def test_cwd_and_env(sandbox: Sandbox, tmp_path: Path) -> None:
    result = sandbox.cli(
        "run",
        "--cwd",
        str(tmp_path),
        "--env",
        "GREETING=hi; there",
        "--env",
        "EMPTY=",
        "--",
        "sh",
        "-c",
        'echo "$GREETING|${EMPTY-unset}|$(pwd)|$CALLER_VAR"',
        env={**sandbox.env, "CALLER_VAR": "inherited"},
    )
    assert result.stdout.decode() == f"hi; there||{tmp_path}|inherited\n"


def test_plain_text_when_stdout_is_not_a_terminal(sandbox: Sandbox) -> None:
    result = sandbox.cli("run", "--", "printf", "\\033[1;31mred\\033[0m plain\\n\\033]0;title\\007done\\n")
    assert result.stdout == b"red plain\ndone\n"


def test_unicode_passes_through(sandbox: Sandbox) -> None:
    text = "é ü 日本語 🎉 \u200b ok\n"
    result = sandbox.cli("run", "--", "printf", "%s", text)
    assert result.stdout.decode() == text


def test_large_output_arrives_complete_and_in_order(sandbox: Sandbox) -> None:
    # 6 MB of numbered lines; a Python child without PYTHONUNBUFFERED writes in bursts
    lines = 200_000
    script = f"import sys\nfor i in range({lines}): sys.stdout.write(f'{{i:08d}} ' + 'x' * 20 + '\\n')"
    result = sandbox.cli("run", "--", PY, "-c", script, timeout=120)
    expected = "".join(f"{i:08d} {'x' * 20}\n" for i in range(lines)).encode()
    assert result.returncode == 0
    assert len(result.stdout) == len(expected) >= 5_000_000
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_timeout_kills_stubborn_command_and_grandchild(sandbox: Sandbox) -> None:
    mark = marker()
    ignore = "import signal, time; [signal.signal(s, signal.SIG_IGN) for s in (1, 2, 15)]"
    child = (
        f"{ignore}; import subprocess, sys; "
        f"subprocess.Popen([sys.executable, '-c', '{ignore}; time.sleep(300)', '{mark}']); "
        "print('ready', flush=True); time.sleep(300)"
    )
    started = time.monotonic()
    result = sandbox.cli("run", "--timeout", "1", "--", PY, "-c", child, mark)
    elapsed = time.monotonic() - started
    assert result.returncode == 124
    assert result.stdout == b"ready\n"
    assert elapsed < 15  # 1 s + kill grace, with room for a loaded machine
    assert live_pids_matching(mark) == []
    assert sandbox.tmux("list-sessions", check=False).returncode != 0


@contextmanager
def running(sandbox: Sandbox, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`trio-bridge ARGS` in the background; killed if the test leaves it running."""
    with subprocess.Popen(
        [PY, "-m", "trio_bridge", *args], env=sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_ctrl_c_cleans_up_and_exits_130(sandbox: Sandbox) -> None:
    mark = marker()
    with running(sandbox, "run", "--", "sh", "-c", f"echo ready; sleep 300; : {mark}") as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130
    assert live_pids_matching(mark) == []
    assert sandbox.tmux("list-sessions", check=False).returncode != 0


def test_closed_stdout_stops_the_command(sandbox: Sandbox) -> None:
    """Like `trio-bridge run -- yes | head`: the reader goes, the command is stopped."""
    mark = marker()
    with running(sandbox, "run", "--", "sh", "-c", f"yes; : {mark}") as proc:
        assert proc.stdout is not None
        assert proc.stdout.read(4) == b"y\ny\n"
        proc.stdout.close()
        assert proc.wait(timeout=15) == 128 + signal.SIGPIPE
    assert live_pids_matching(mark) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--", "tb-no-such-command"], 127, "command not found: tb-no-such-command"),
        (["--", "./no-such-file"], 127, "no such file: ./no-such-file"),
        (["--cwd", "/nonexistent-dir", "--", "true"], 125, "working directory does not exist"),
        (["--env", "1BAD=x", "--", "true"], 125, "--env expects NAME=VALUE"),
    ],
)
def test_start_failures_are_one_clear_line(
    sandbox: Sandbox, args: list[str], code: int, message: str
) -> None:
    result = sandbox.cli("run", *args)
    assert result.returncode == code
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trio-bridge: ") and message in lines[0]


def test_not_executable_is_126(sandbox: Sandbox, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("echo hi\n")
    result = sandbox.cli("run", "--cwd", str(tmp_path), "--", "./script.sh")
    assert result.returncode == 126
    assert b"not executable" in result.stderr


def test_missing_tmux_is_reported(sandbox: Sandbox) -> None:
    result = sandbox.cli("run", "--", "true", env={**sandbox.env, "TRIO_BRIDGE_TMUX_BINARY": "tb-no-tmux"})
    assert result.returncode == 125
    assert b"tmux is not installed" in result.stderr


def test_bad_setting_names_the_variable(sandbox: Sandbox) -> None:
    result = sandbox.cli("run", "--", "true", env={**sandbox.env, "TRIO_BRIDGE_TIMEOUT_TMUX": "soon"})
    assert result.returncode == 125
    assert result.stderr.decode().strip() == (
        "trio-bridge: TRIO_BRIDGE_TIMEOUT_TMUX: expected a number of seconds, got 'soon'"
    )


def test_usage_errors(sandbox: Sandbox) -> None:
    assert sandbox.cli("run").returncode == 2
    assert sandbox.cli("run", "--timeout", "-1", "--", "true").returncode == 2
    assert sandbox.cli("run", "--timeout", "nan", "--", "true").returncode == 2


def test_dash_arguments_belong_to_the_command(sandbox: Sandbox) -> None:
    result = sandbox.cli("run", "--", "sh", "-c", 'printf "%s|" "$@"', "sh", "--keep", "-t", ";")
    assert result.stdout == b"--keep|-t|;|"


def test_concurrent_runs_do_not_interfere(sandbox: Sandbox) -> None:
    procs = [
        subprocess.Popen(
            [PY, "-m", "trio_bridge", "run", "--", "sh", "-c", f"sleep 0.{n}; echo run{n}; exit {n}"],
            env=sandbox.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(1, 6)
    ]
    for n, proc in enumerate(procs, start=1):
        out, _ = proc.communicate(timeout=30)
        assert (proc.returncode, out) == (n, f"run{n}\n".encode())


def test_no_process_is_left_after_normal_runs(sandbox: Sandbox) -> None:
    mark = marker()
    assert sandbox.cli("run", "--", "sh", "-c", f"sleep 0.1 & : {mark}").returncode == 0
    time.sleep(0.3)
    assert live_pids_matching(mark) == []
    assert os.listdir(sandbox.state_dir / "run") == []


def test_environment_values_stay_out_of_the_process_table(sandbox: Sandbox) -> None:
    secret = marker()
    script = 'tr "\\0\\n" "  " < /proc/$PPID/cmdline; echo; echo "$TB_SECRET"; ps -eo args'
    result = sandbox.cli("run", "--env", f"TB_SECRET={secret}", "--", "sh", "-c", script)
    wrapper_cmdline, value, *table = result.stdout.decode().splitlines()
    assert value == secret
    assert "wait-for" in wrapper_cmdline  # it is the start wrapper's command line
    assert secret not in wrapper_cmdline
    assert not [line for line in table if secret in line]
    assert list((sandbox.state_dir / "run").iterdir()) == []


def test_a_final_carriage_return_is_kept(sandbox: Sandbox) -> None:
    # `printf 'a\r'`: the tty adds nothing after a CR, and plain text keeps it
    assert sandbox.cli("run", "--", "printf", "50%%\\r").stdout == b"50%\r"
