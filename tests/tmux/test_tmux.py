"""The tmux engine and the control-mode client, against a real tmux server."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest
import trio

from trio_bridge.process import ExitWatch, SubprocessTimeoutError
from trio_bridge.tmux import (
    ControlClientClosedError,
    DuplicateSessionError,
    InvalidKeyError,
    InvalidTextError,
    SessionInfo,
    SessionNotFoundError,
    SessionSpec,
    TmuxCommandError,
    TmuxServer,
    gate_channel,
    open_control_client,
)
from trio_bridge.tmux.server import read_exit_status

from ..conftest import Sandbox, live_pids_matching


async def start(
    server: TmuxServer, tmp: Path, argv: list[str], **kw: object
) -> tuple[SessionSpec, SessionInfo]:
    spec = SessionSpec(argv, tmp, tmp / f"exit-{uuid.uuid4().hex}", **kw)  # type: ignore[arg-type]
    info = await server.new_session(spec)
    await server.release(spec)
    return spec, info


async def wait_for_file(path: Path, size: int) -> bytes:
    with trio.fail_after(10):
        while not path.exists() or path.stat().st_size < size:
            await trio.sleep(0.01)
    return path.read_bytes()


async def test_session_lifecycle_and_exit_status(server: TmuxServer, tmp_path: Path) -> None:
    spec, info = await start(server, tmp_path, ["sh", "-c", "exit 3"])
    assert info.name == spec.name and info.name.startswith("tb-")
    with ExitWatch(info.pane_pid) as watch, trio.fail_after(10):
        await watch.wait()
    assert read_exit_status(spec.status_path) == 3
    # remain-on-exit: the session (and its last screen) is still there
    assert await server.has_session(info.name)
    assert [s.name for s in await server.list_sessions()] == [info.name]
    await server.kill_session(info.name)
    assert not await server.has_session(info.name)
    with pytest.raises(SessionNotFoundError):
        await server.kill_session(info.name)
    await server.kill_session(info.name, missing_ok=True)


async def test_no_server_means_no_sessions(server: TmuxServer) -> None:
    assert await server.list_sessions() == []
    assert not await server.has_session("tb-nothing")


async def test_foreign_sessions_are_ignored(server: TmuxServer, sandbox: Sandbox, tmp_path: Path) -> None:
    _, info = await start(server, tmp_path, ["sleep", "30"])
    sandbox.tmux("new-session", "-d", "-s", "users-own", "sleep 30")
    assert [s.name for s in await server.list_sessions()] == [info.name]


async def test_environment_cwd_and_session_id(server: TmuxServer, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    spec, _ = await start(
        server,
        tmp_path,
        ["sh", "-c", f'echo "$TRIO_BRIDGE_SESSION_ID|$GREETING|$(pwd)|${{TB_TMUX-unset}}" > {out}'],
        env={"GREETING": 'it\'s a "test"; $HOME `x` ;'},
    )
    data = await wait_for_file(out, 1)
    # the start wrapper's own variable does not leak into the command
    assert data.decode() == f'{spec.session_id}|it\'s a "test"; $HOME `x` ;|{tmp_path}|unset\n'


async def test_unset_env_keeps_the_servers_variables_from_the_command(
    server: TmuxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the tmux server (started by the first session) inherits these from us
    monkeypatch.setenv("TB_TEST_DROPPED", "inherited")
    monkeypatch.setenv("TB_TEST_SET", "inherited")
    monkeypatch.setenv("TB_TEST_KEPT", "inherited")
    out = tmp_path / "out.txt"
    script = f'echo "${{TB_TEST_DROPPED-unset}}|$TB_TEST_SET|$TB_TEST_KEPT" > {out}'
    await start(
        server, tmp_path, ["sh", "-c", script],
        unset_env=("TB_TEST_DROPPED", "TB_TEST_SET"), env={"TB_TEST_SET": "given"},
    )  # fmt: skip
    # unset, unless the session's own environment sets it; others still inherited
    assert (await wait_for_file(out, 1)).decode() == "unset|given|inherited\n"
    for bad in ("A; rm -rf /", "A\n", "TERM"):  # TERM: the pane's own, from tmux
        with pytest.raises(ValueError, match="invalid environment variable"):
            SessionSpec(["true"], tmp_path, tmp_path / "exit", unset_env=(bad,))


async def test_hostile_command_arguments_reach_the_command_literally(
    server: TmuxServer, tmp_path: Path
) -> None:
    out = tmp_path / "args.txt"
    hostile = [";", "a;", "\\", "-t", "#{pane_id}", "$(touch pwned)", "'\"", "~", "{", "}", "é日本"]
    script = "import sys; open(sys.argv[1], 'w').write(repr(sys.argv[2:]))"
    await start(server, tmp_path, [sys.executable, "-c", script, str(out), *hostile])
    data = await wait_for_file(out, 2)
    assert data.decode() == repr(hostile)
    assert not (tmp_path / "pwned").exists()


RAW_READER = """
import os, sys, tty
tty.setraw(0)
want = int(sys.argv[2])
if sys.argv[3] == "bracketed":
    os.write(1, b"\\x1b[?2004h")
os.write(1, b"ready")
data = b""
while len(data) < want:
    data += os.read(0, 65536)
open(sys.argv[1] + ".tmp", "wb").write(data)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"""


async def start_raw_reader(server: TmuxServer, tmp_path: Path, out: Path, size: int, mode: str) -> str:
    """A session whose program reads ``size`` bytes in raw mode into ``out``; its name, once the
    program is reading (its "ready" is on the screen: the tty is raw, and tmux has seen the
    request for bracketed paste that came before it). Text typed earlier would be cooked (CR
    read as LF) or thrown away by the switch to raw mode."""
    _, info = await start(server, tmp_path, [sys.executable, "-c", RAW_READER, str(out), str(size), mode])
    with trio.fail_after(10):
        while "ready" not in await server.capture(info.name):
            await trio.sleep(0.02)
    return info.name


@pytest.mark.parametrize(
    "text",
    [
        "; kill-server ; \\ -t x",
        "-leading dash",
        "#{pane_id} $(touch pwned) `id` 'q' \"qq\" ~",
        "multi\nline\n\ttabbed\ntext é 日本 🎉",
        ("x" * 99 + "\n") * 1000,  # 100 KB, many lines
    ],
    ids=["separators", "dash", "expansions", "multiline-unicode", "100KB"],
)
async def test_send_text_arrives_whole_and_literal(server: TmuxServer, tmp_path: Path, text: str) -> None:
    out = tmp_path / "typed.bin"
    expected = text.encode() + b"\r"  # Enter, sent as a separate key, is CR in raw mode
    name = await start_raw_reader(server, tmp_path, out, len(expected), "plain")
    await server.send_text(name, text, enter=True)
    data = await wait_for_file(out, len(expected))
    assert data == expected
    assert not (tmp_path / "pwned").exists()


async def test_multiline_text_is_a_bracketed_paste_when_the_program_asks(
    server: TmuxServer, tmp_path: Path
) -> None:
    out = tmp_path / "typed.bin"
    text = "line one\nline two"
    expected = b"\x1b[200~" + text.encode() + b"\x1b[201~" + b"\r"
    name = await start_raw_reader(server, tmp_path, out, len(expected), "bracketed")
    await server.send_text(name, text, enter=True)
    assert await wait_for_file(out, len(expected)) == expected


async def test_bad_text_and_keys_are_refused_before_tmux(server: TmuxServer, tmp_path: Path) -> None:
    _, info = await start(server, tmp_path, ["sleep", "30"])
    with pytest.raises(InvalidTextError):
        await server.send_text(info.name, "esc \x1b[201~ inside")
    with pytest.raises(InvalidTextError):
        await server.send_text(info.name, "bad \udcff")
    with pytest.raises(InvalidKeyError):
        await server.send_keys(info.name, ["Enter", "kill-server"])
    with pytest.raises(ValueError, match="invalid tmux session name"):
        await server.send_keys("x; kill-server", ["Enter"])


async def test_named_key_interrupts_the_command(server: TmuxServer, tmp_path: Path) -> None:
    spec, info = await start(server, tmp_path, ["sleep", "300"])
    await trio.sleep(0.2)
    with ExitWatch(info.pane_pid) as watch:
        await server.send_keys(info.name, ["C-c"])
        with trio.fail_after(10):
            await watch.wait()
    assert read_exit_status(spec.status_path) == 128 + signal.SIGINT


async def test_capture_shows_the_rendered_screen(server: TmuxServer, tmp_path: Path) -> None:
    _, info = await start(
        server,
        tmp_path,
        ["sh", "-c", "printf '\\033[31mred\\033[0m\\nsecond\\n'; sleep 30"],
        width=40,
        height=10,
    )
    with trio.fail_after(10):
        while "second" not in (screen := await server.capture(info.name)):
            await trio.sleep(0.02)
    assert screen.splitlines()[:2] == ["red", "second"]
    assert "\x1b[31m" in await server.capture(info.name, escapes=True)
    with pytest.raises(SessionNotFoundError):
        await server.capture("tb-missing")


async def test_bad_working_directory_is_refused(server: TmuxServer, tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        await server.new_session(SessionSpec(["true"], tmp_path / "nope", tmp_path / "exit"))
    assert await server.list_sessions() == []


async def test_hung_tmux_server_times_out_and_leaves_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    server = sandbox.server(tmux=0.5, kill_grace=0.2)
    _, info = await start(server, tmp_path, ["sleep", "30"])
    tmux_pid = int(sandbox.tmux("display-message", "-p", "#{pid}").stdout)
    os.kill(tmux_pid, signal.SIGSTOP)
    try:
        start_time = trio.current_time()
        with pytest.raises(SubprocessTimeoutError) as error:
            await server.has_session(info.name)  # never mistaken for "no such session"
        assert trio.current_time() - start_time < 5
        assert error.value.operation == "tmux has-session"
        assert error.value.timeout == 0.5
        with pytest.raises(SubprocessTimeoutError):
            await server.capture(info.name)
        # the timed-out tmux clients were killed and reaped
        clients = [p for p in live_pids_matching(sandbox.socket_name) if p != tmux_pid]
        assert clients == []
    finally:
        os.kill(tmux_pid, signal.SIGCONT)


# -- control mode -----------------------------------------------------------


async def test_control_client_streams_output_and_pairs_replies(server: TmuxServer, tmp_path: Path) -> None:
    spec = SessionSpec(
        # (a pause first: tmux 3.3a's control mode can drop all %output of a pane that prints
        # and exits at once, see docs/decisions.md; this test is about decoding what arrives)
        ["sh", "-c", "sleep 0.3; for i in 1 2 3; do echo line$i; done; printf 'back\\\\slash\\n'; sleep 1"],
        tmp_path,
        tmp_path / "exit",
    )
    info = await server.new_session(spec)
    async with open_control_client(server, info.name) as client:
        output = client.subscribe(info.pane_id)
        # replies are paired with their commands, even when several are in flight
        async with trio.open_nursery() as nursery:
            results: dict[int, list[bytes]] = {}

            async def ask(n: int) -> None:
                results[n] = await client.command("display-message", "-p", f"answer {n}")

            for n in range(10):
                nursery.start_soon(ask, n)
        assert results == {n: [f"answer {n}".encode()] for n in range(10)}
        with pytest.raises(TmuxCommandError, match="unknown command"):
            await client.command("no-such-command")

        await client.command("wait-for", "-S", spec.gate_channel)
        received = b""
        with trio.fail_after(10):
            async for chunk in output:
                received += chunk
                if b"slash" in received:
                    break
        assert received == b"line1\r\nline2\r\nline3\r\nback\\slash\r\n"


async def test_control_client_notices_its_session_dying(server: TmuxServer, tmp_path: Path) -> None:
    _, info = await start(server, tmp_path, ["sleep", "30"])
    async with open_control_client(server, info.name) as client:
        output = client.subscribe(info.pane_id)
        await server.kill_session(info.name)
        with trio.fail_after(10):
            await client.closed.wait()
        assert client.exit_reason is not None
        with pytest.raises(trio.EndOfChannel):
            await output.receive()
        with pytest.raises(ControlClientClosedError):
            await client.command("display-message", "-p", "x")


async def test_killing_a_session_hangs_up_its_command(server: TmuxServer, tmp_path: Path) -> None:
    mark = f"tb-marker-{uuid.uuid4().hex}"
    _, info = await start(server, tmp_path, ["sh", "-c", f"sleep 300; : {mark}"])
    with ExitWatch(info.pane_pid) as watch:
        await server.kill_session(info.name)
        with trio.fail_after(10):
            await watch.wait()
    with trio.fail_after(10):
        while live_pids_matching(mark):
            await trio.sleep(0.02)


async def test_queries_about_a_missing_session_say_so(server: TmuxServer, tmp_path: Path) -> None:
    # tmux's display-message answers an empty line, with success, for a missing target:
    # that must never read as "a pane that is not dead" or be used as a target.
    await start(server, tmp_path, ["sleep", "30"])
    for query in (server.pane_status, server.session_info):
        with pytest.raises(SessionNotFoundError):
            await query("tb-missing")
    with pytest.raises(SessionNotFoundError):
        await server.display("tb-missing", "#{window_id}")


async def test_the_hub_links_windows_and_a_killed_window_leaves_both_sessions(
    server: TmuxServer, tmp_path: Path
) -> None:
    with trio.fail_after(20):
        await server.ensure_hub("tb-hub")
        await server.ensure_hub("tb-hub")  # there already: no error
        assert await server.has_session("tb-hub")
        with pytest.raises(DuplicateSessionError):
            await server._new_idle_session("tb-hub")
        _, info = await start(server, tmp_path, ["sleep", "300"])
        await server.link_window(info.name, "tb-hub")
        await server.link_window(info.name, "tb-hub")  # linked once, not twice
        (linked,) = await server.display(info.name, "#{window_linked_sessions}")
        assert linked == "2"
        assert not await server.pane_dead(info.name)
        with ExitWatch(info.pane_pid) as watch:
            await server.kill_window(info.name)
            await watch.wait()  # hung up, though the hub still had the window
        assert not await server.has_session(info.name)
        assert await server.pane_dead(info.name)  # a missing session's pane is dead
        await server.kill_window(info.name)  # already gone: no error
        with pytest.raises(SessionNotFoundError):
            await server.link_window(info.name, "tb-hub")


async def test_the_start_gate_is_released_by_session_id(server: TmuxServer, tmp_path: Path) -> None:
    spec = SessionSpec(["sh", "-c", "exit 7"], tmp_path, tmp_path / "exit")
    assert spec.gate_channel == gate_channel(spec.session_id)
    info = await server.new_session(spec)
    with ExitWatch(info.pane_pid) as watch, trio.fail_after(10):
        await server.release_gate(spec.session_id)
        await watch.wait()
    assert read_exit_status(spec.status_path) == 7
