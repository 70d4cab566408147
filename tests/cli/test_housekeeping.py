"""Addressing and housekeeping as docker/pueue users expect: unique-prefix ids (an ambiguous
prefix lists the candidates), `ls -q`, `rm` (refusing running sessions unless -f), `clean`,
`kill -s SIGNAL`, `run --keep` visible to ls/screen; usage errors exit 2. Real daemon, real tmux."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..conftest import Sandbox
from ._helpers import complete, ok, wait_until


def records(sandbox: Sandbox) -> list[dict[str, object]]:
    return list(json.loads(ok(sandbox.cli("ls", "--json"))))


def test_prefixes_ls_q_rm_and_clean(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    ids = [ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "sleep", "300")).strip() for _ in range(3)]
    assert sorted(ok(sandbox.cli("ls", "-q")).split()) == sorted(ids)
    # the shortest prefix that names exactly one session works everywhere an id does
    first = ids[0]
    prefix = next(first[:n] for n in range(1, 12) if sum(i.startswith(first[:n]) for i in ids) == 1)
    assert json.loads(ok(sandbox.cli("screen", "--json", prefix)))["id"] == first
    ok(sandbox.cli("kill", prefix))
    assert [r["state"] for r in records(sandbox) if r["id"] == first] == ["killed"]
    # rm: an ended session goes; a running one is refused unless -f
    ok(sandbox.cli("rm", prefix))
    assert first not in ok(sandbox.cli("ls", "-q")).split()
    running = sandbox.cli("rm", ids[1])
    assert running.returncode == 1 and b"running" in running.stderr and b"rm -f" in running.stderr
    assert ok(sandbox.cli("rm", "-f", ids[1])).split() == [ids[1]]
    # clean: every ended session (by age first: nothing ended an hour ago)
    ok(sandbox.cli("kill", ids[2]))
    assert ok(sandbox.cli("clean", "--older-than", "1h")) == ""
    assert ok(sandbox.cli("clean")).split() == [ids[2]]
    assert records(sandbox) == []


def test_an_ambiguous_prefix_lists_the_candidates(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    ids: list[str] = []
    # ids are random hex: with 17 sessions two share a first character
    while len({i[0] for i in ids}) == len(ids):
        ids.append(ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "true")).strip())
    shared = next(c for c in {i[0] for i in ids} if sum(i.startswith(c) for i in ids) > 1)
    result = sandbox.cli("screen", shared)
    assert result.returncode == 1
    message = result.stderr.decode()
    assert "several sessions" in message and all(i in message for i in ids if i.startswith(shared))
    assert message.count("\n") == 1


def test_kill_s_sends_a_signal(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    script = "sleep 0.5; trap 'echo got-usr1' USR1; echo trap-set; while :; do sleep 0.1; done"
    sid = ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "sh", "-c", script)).strip()
    wait_until(lambda: "trap-set" in ok(sandbox.cli("screen", sid)))
    ok(sandbox.cli("kill", "-s", "USR1", sid))
    wait_until(lambda: "got-usr1" in ok(sandbox.cli("screen", sid)))
    assert records(sandbox)[0]["state"] == "running"  # a handled signal: it goes on
    ok(sandbox.cli("kill", "-s", "SIGTERM", sid))
    assert sandbox.cli("wait", sid, "--timeout", "15").returncode == 128 + 15
    bad = sandbox.cli("kill", "-s", "NOPE", sid)
    assert bad.returncode == 1 and b"signal" in bad.stderr


def test_run_keep_is_visible_to_ls_and_screen(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    result = sandbox.cli("run", "--keep", "--", "sh", "-c", "echo kept-output", stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and result.stdout == b"kept-output\n"
    (record,) = records(sandbox)
    assert record["state"] == "exited"
    assert "kept-output" in ok(sandbox.cli("screen", str(record["id"])))


def test_usage_errors(sandbox: Sandbox) -> None:
    for args, hint in (
        (["ls", "--state", "runing"], b"did you mean 'running'"),
        (["tail", "-n", "-5", "x"], b"0 or more"),
        (["clean", "--older-than", "soon"], b"duration"),
        (["lst"], b"did you mean 'ls'?"),
        (["new", "--widht", "3", "--", "true"], b"did you mean '--width'?"),
        (["keys"], b"required"),
        (["new", "--width", "0", "--", "true"], b"expected 2 to 1000"),
    ):
        result = sandbox.cli(*args)
        assert result.returncode == 2 and hint in result.stderr, (args, result.stderr)
        # short: the usage line, the error, where to read more (not the 20-line usage block)
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 3 and lines[0].startswith("usage: trio-bridge") and "--help" in lines[2], lines


def test_names_address_sessions_and_are_unique(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    sid = ok(sandbox.cli("new", "--name", "build", "--cwd", str(tmp_path), "--", "sleep", "300")).strip()
    assert json.loads(ok(sandbox.cli("screen", "--json", "build")))["id"] == sid
    assert ok(sandbox.cli("ls", "--format", "{id}:{name}:{state}:{exit_code}")) == f"{sid}:build:running:\n"
    bad = sandbox.cli("ls", "--format", "{id.__class__}{nope}")
    assert bad.returncode == 1 and b"no field 'nope'" in bad.stderr
    assert "[build]" in ok(sandbox.cli("ls"))
    taken = sandbox.cli("new", "--name", "build", "--cwd", str(tmp_path), "--", "true")
    assert taken.returncode == 1 and b"taken" in taken.stderr
    bad = sandbox.cli("new", "--name", "-x", "--cwd", str(tmp_path), "--", "true")
    assert bad.returncode == 2
    assert ok(sandbox.cli("kill", "build")).split() == [sid, "killed"]
    # ended, the name still names it (as docker's); rm frees it
    ok(sandbox.cli("rm", "build"))
    again = ok(sandbox.cli("new", "--name", "build", "--cwd", str(tmp_path), "--", "sleep", "300")).strip()
    assert again != sid and [r["name"] for r in records(sandbox)] == ["build"]
    ok(sandbox.cli("kill", "build"))


def test_settings_that_cannot_apply_are_refused(sandbox: Sandbox, daemon: object) -> None:
    result = sandbox.cli("run", "--tmux-socket", "elsewhere", "--", "true", stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1
    assert b"--tmux-socket cannot apply" in result.stderr and b"--embedded" in result.stderr
    assert records(sandbox) == []


def test_completion_offers_live_sessions_and_states(sandbox: Sandbox, daemon: object, tmp_path: Path) -> None:
    live = ok(sandbox.cli("new", "--name", "web", "--cwd", str(tmp_path), "--", "sleep", "300")).strip()
    ended = ok(sandbox.cli("new", "--cwd", str(tmp_path), "--", "true")).strip()
    sandbox.cli("wait", ended, "--timeout", "15")
    assert complete(sandbox, "trio-bridge kill ") == sorted([live, "web"])
    assert complete(sandbox, "trio-bridge rm ") == [ended]
    assert complete(sandbox, "trio-bridge screen ") == sorted([live, "web", ended])
    assert complete(sandbox, "trio-bridge ls --state ru") == ["running"]
    assert complete(sandbox, "trio-bridge ls --state running,ki") == ["running,killed"]
    assert "claude" in complete(sandbox, "trio-bridge new --agent ")
    ok(sandbox.cli("kill", live))


def test_help_describes_arguments_and_gives_examples(sandbox: Sandbox) -> None:
    for command, words in (
        ("keys", [b"C- (Ctrl)", b"a session id, its name", b"trio-bridge keys build C-c"]),
        ("kill", [b"--signal", b"trio-bridge kill -s USR1 build"]),
        ("run", [b"echo hi | trio-bridge run -- cat"]),
    ):
        shown = " ".join(ok(sandbox.cli(command, "--help")).split()).encode()  # unwrapped
        assert b"example:" in shown and all(w in shown for w in words), (command, shown)


def test_config_names_the_default_computer(sandbox: Sandbox) -> None:
    import socket

    line = next(x for x in ok(sandbox.cli("config")).splitlines() if x.startswith("computer "))
    assert f"the host name, {socket.gethostname().split('.')[0]}" in line


def test_plain_text_has_no_charset_switches(sandbox: Sandbox) -> None:
    result = sandbox.cli("run", "--embedded", "--", "printf", "a\\016q\\017b\\n", stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stdout) == (0, b"aqb\n"), result
