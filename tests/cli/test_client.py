"""The CLI's client commands, run as a user types them, against a daemon running as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import Sandbox
from ..test_daemon import stop
from ._helpers import ok, wait_until

TOKEN = "t0ken-for-the-cli-tests"


def test_without_a_daemon_commands_say_how_to_start_one(sandbox: Sandbox) -> None:
    for args in (["ls"], ["status"], ["kill", "abc"], ["tail", "abc"]):
        result = sandbox.cli(*args)
        assert result.returncode == 3, args
        message = result.stderr.decode()
        assert message.count("\n") == 1 and "start it with: trio-bridge daemon" in message


def test_new_ls_send_tail_screen_wait(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    session_id = ok(
        sandbox.cli(
            "new",
            "--cwd",
            str(tmp_path),
            "--env",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
            'read x; echo "$GREETING $x"; exit 7',
        )
    ).strip()
    assert len(session_id) == 12
    listing = ok(sandbox.cli("ls"))
    assert session_id in listing and "running" in listing
    (record,) = json.loads(ok(sandbox.cli("ls", "--json", "--state", "running")))
    assert record["id"] == session_id and record["cwd"] == str(tmp_path) and "GREETING" in record["env_keys"]
    ok(sandbox.cli("send", session_id, "there"))
    result = sandbox.cli("wait", session_id, "--timeout", "15")
    assert result.returncode == 7
    assert ok(sandbox.cli("tail", session_id)).splitlines()[-1] == "hi there"
    assert "hi there" in ok(sandbox.cli("screen", session_id))
    assert ok(sandbox.cli("ls", "--state", "running")) == ""
    # --from: exact bytes from an offset (after the echo of "there\r\n")
    assert ok(sandbox.cli("tail", session_id, "--from", "7")).startswith("hi there")


def test_keys_kill_and_refusals(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    first = ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "sleep", "300")).strip()
    second = ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "sleep", "300")).strip()
    ok(sandbox.cli("keys", first, "C-c"))
    assert sandbox.cli("wait", first, "--timeout", "15").returncode == 130  # 128 + SIGINT
    assert ok(sandbox.cli("kill", second)).split() == [second, "killed"]
    refused = sandbox.cli("kill", second)
    assert refused.returncode == 1 and "has ended" in refused.stderr.decode()
    unknown = sandbox.cli("screen", "nosuchsession")
    assert unknown.returncode == 1 and "no session" in unknown.stderr.decode()
    bad_key = sandbox.cli("keys", first, "Hyper-x")
    assert bad_key.returncode == 1
    running = ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "sleep", "300")).strip()
    still = sandbox.cli("wait", running, "--timeout", "0.3")
    assert still.returncode == 124 and "still running" in still.stderr.decode()
    ok(sandbox.cli("kill", running))
    status = ok(sandbox.cli("status"))
    assert "daemon: running" in status and "killed" in status


def test_tail_follow_streams_until_the_session_ends(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    session_id = ok(
        sandbox.cli(
            "new", "--cwd", str(tmp_path), "--", "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done"
        )
    ).strip()
    lines = ok(sandbox.cli("tail", "-f", "--from", "0", session_id)).splitlines()
    assert lines == ["line1", "line2", "line3"]


def test_run_goes_through_the_daemon(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    result = sandbox.cli("run", "--cwd", str(tmp_path), "--", "sh", "-c", "echo via-daemon; exit 5")
    assert result.returncode == 5 and result.stdout == b"via-daemon\n"
    (record,) = json.loads(ok(sandbox.cli("ls", "--json")))
    # the command reads its stdin from run's FIFO through a one-line sh wrapper; the title is the command
    assert record["command"][-3:] == ["sh", "-c", "echo via-daemon; exit 5"] and record["exit_code"] == 5
    assert record["title"] == "sh -c 'echo via-daemon; exit 5'"
    # a signal death, --timeout, and not-found keep the run exit-code contract
    assert sandbox.cli("run", "--", "sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM
    assert sandbox.cli("run", "--timeout", "0.5", "--", "sleep", "30").returncode == 124
    assert sandbox.cli("run", "--", "no-such-command-here").returncode == 127
    states = sorted(r["state"] for r in json.loads(ok(sandbox.cli("ls", "--json"))))
    assert states == ["exited", "exited", "killed"]


def test_run_through_the_daemon_is_visible_and_ctrl_c_kills_it(
    sandbox: Sandbox, daemon: object, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "run", "--cwd", str(tmp_path), "--",
         "sh", "-c", "echo started; sleep 300"],
        env=sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        (record,) = json.loads(ok(sandbox.cli("ls", "--json", "--state", "running")))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()
    assert json.loads(ok(sandbox.cli("ls", "--json")))[0]["state"] == "killed"
    assert record["state"] == "running"


def test_attach_is_interactive_and_detaches(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    session_id = ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "sh")).strip()
    # The user's terminal: a pane of the test's own tmux server, running `trio-bridge attach`.
    done = tmp_path / "attach.status"
    command = f"{sys.executable} -m trio_bridge attach {session_id}; echo $? > {done}; sleep 30"
    sandbox.tmux("new-session", "-d", "-s", "user", "-x", "100", "-y", "30", command)

    def user_screen() -> str:
        return sandbox.tmux("capture-pane", "-p", "-t", "=user:").stdout

    wait_until(lambda: user_screen().startswith(("#", "$")))  # attach drew the session's prompt
    sandbox.tmux("send-keys", "-t", "=user:", "-l", "echo attached-$((6*7))")
    sandbox.tmux("send-keys", "-t", "=user:", "Enter")
    wait_until(lambda: "attached-42" in user_screen())
    # the keystrokes reached the session itself
    wait_until(lambda: "attached-42" in ok(sandbox.cli("screen", session_id)))
    sandbox.tmux("send-keys", "-t", "=user:", "C-]")
    wait_until(done.exists)
    wait_until(lambda: done.read_text().strip() != "")
    assert done.read_text().strip() == "0"
    assert json.loads(ok(sandbox.cli("ls", "--json")))[0]["state"] == "running"
    ok(sandbox.cli("kill", session_id))
    sandbox.tmux("kill-session", "-t", "=user")


def test_a_token_is_required_when_the_daemon_has_one(sandbox: Sandbox) -> None:
    env = {**sandbox.env, "TRIO_BRIDGE_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "daemon"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        wait_until(lambda: b"ready" in proc.stderr.readline())  # type: ignore[union-attr]
        refused = sandbox.cli("ls")
        assert refused.returncode == 1 and "Bearer" in refused.stderr.decode()
        assert sandbox.cli("ls", env=env).returncode == 0
        assert sandbox.cli("--token", TOKEN, "ls").returncode == 0
    finally:
        assert stop(proc) == 0


def test_completion_script(sandbox: Sandbox) -> None:
    script = ok(sandbox.cli("completion", "bash"))
    assert "complete" in script and "trio-bridge" in script


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="Linux only")
def test_ls_does_not_import_the_server_stack(sandbox: Sandbox, daemon: object) -> None:
    code = (
        "import sys; from trio_bridge.cli import main; rc = main(['ls']); "
        "print(sorted(m for m in ('quart', 'hypercorn', 'trio', 'attrs', 'trio_bridge.api') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=sandbox.env, capture_output=True, timeout=30)
    assert result.stdout.decode().splitlines()[-1] == "[]", result.stderr.decode()


def test_run_through_the_daemon_into_a_closed_pipe(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    result = subprocess.run(
        f"{sys.executable} -m trio_bridge run -- yes | head -n 3; echo status=${{PIPESTATUS[0]}} >&2",
        shell=True, env=sandbox.env, capture_output=True, timeout=30, cwd=tmp_path,
        executable="/bin/bash",
    )  # fmt: skip
    assert result.stdout == b"y\ny\ny\n"
    assert result.stderr.decode().splitlines()[-1] == "status=141"
    (record,) = json.loads(ok(sandbox.cli("ls", "--json")))
    wait_until(lambda: json.loads(ok(sandbox.cli("ls", "--json")))[0]["state"] == "killed")
    assert record["command"][-1:] == ["yes"] and record["title"] == "yes"
