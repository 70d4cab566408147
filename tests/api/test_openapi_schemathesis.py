"""schemathesis (``--checks all``) against a real daemon on loopback, bounded to about a minute.

The daemon runs as a user would start it (``python -m trio_bridge daemon --bind``, a token),
with its own tmux server, state directory and home. Every check schemathesis has must pass:
no 5xx, every response as the document says (status, content type, headers, schema), every
request the document allows accepted and every one it does not refused, ``Allow`` on 405s.

Safety: what the fuzz starts cannot reach beyond the sandbox. The daemon's ``PATH`` holds only
a few harmless programs (and ``split``, its log writer), its home is a directory of the test,
and a hook moves any ``cwd`` that names an existing directory into the sandbox. Real session
ids (a ``cat`` session, an ended one) are put into path parameters half of the time, so the
session routes are reached beyond their 404s. ``GET /v1/events`` never ends by design, so it is
left out (tests/api/test_api_fuzz.py reads its headers); a stream is only asked of ended sessions, a
prompt only of sessions without an agent, and a wait on a live session lasts 1 s at most.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import Sandbox, free_port

pytest.importorskip("schemathesis", reason="schemathesis is in the 'test' extra")

TOKEN = "schemathesis-token-0123456789"
#: the programs a fuzzed session may run (split: the daemon's own log writer;
#: and rm: the start wrapper removes its environment file)
SAFE_PROGRAMS = ("true", "false", "sleep", "cat", "echo", "printf", "env", "split", "rm")

HOOKS = """
import os
import random
from pathlib import Path

import schemathesis

SANDBOX = Path(os.environ["TB_FUZZ_SANDBOX"])
LIVE = os.environ["TB_FUZZ_LIVE"].split(",")
ENDED = os.environ["TB_FUZZ_ENDED"].split(",")
_random = random.Random(7)


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("cwd"), str):
        try:
            inside = Path(body["cwd"]).resolve().is_relative_to(SANDBOX)
            exists = Path(body["cwd"]).is_dir()
        except (OSError, ValueError):
            inside, exists = True, False
        if exists and not inside:
            body["cwd"] = str(SANDBOX)
    if case.path.endswith("/wait"):
        # a live session's wait takes its whole timeout (default 30 s): valid ones are cut to 1 s
        case.query = case.query if isinstance(case.query, dict) else {}
        timeout = case.query.get("timeout", 30)
        try:
            valid = not isinstance(timeout, bool) and 0 <= float(timeout) <= 600
        except (TypeError, ValueError):
            valid = False
        if valid:
            case.query["timeout"] = min(float(timeout), 1.0)
    parameters = case.path_parameters or {}
    if "session_id" in parameters:
        if case.path.endswith("/stream"):
            parameters["session_id"] = _random.choice(ENDED)
        elif case.path.endswith("/prompt"):
            # an agent session's prompt waits up to 30 s for the agent: not in a minute's fuzz
            parameters["session_id"] = _random.choice(LIVE + ENDED)
        elif _random.random() < 0.5:
            parameters["session_id"] = _random.choice(LIVE + ENDED)
"""


# A refinement of `--checks all` for what the document cannot express:
CONFIG = """
[[operations]]
include-path = "/v1/sessions"
include-method = "POST"
# A valid create can still be refused: a cwd that is no existing directory, command and shell
# both, model without agent (422), a command larger than tmux takes (413).
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "413", "422"]

"""


@pytest.fixture
def daemon_url(sandbox: Sandbox, tmp_path: Path) -> Iterator[str]:
    """A daemon on a loopback port, started as a user would; stopped (SIGTERM) at the end."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in SAFE_PROGRAMS:
        found = shutil.which(name)
        assert found is not None, name
        (bin_dir / name).symlink_to(found)
    home = tmp_path / "home"
    home.mkdir()
    tmux = shutil.which("tmux")
    assert tmux is not None
    port = free_port()
    env = {
        **sandbox.env, "PATH": str(bin_dir), "HOME": str(home), "SHELL": "/bin/sh",
        "TRIO_BRIDGE_TOKEN": TOKEN, "XDG_RUNTIME_DIR": str(sandbox.root / "run"),
    }  # fmt: skip
    (sandbox.root / "run").mkdir(mode=0o700)
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "trio_bridge", "daemon", "--bind", f"127.0.0.1:{port}", "--tmux-binary", tmux],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            try:
                if httpx.get(f"{url}/v1/health", headers={"Authorization": f"Bearer {TOKEN}"}).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the daemon did not come up"
            time.sleep(0.1)
        yield url
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=5)
        log.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_schemathesis_finds_nothing(daemon_url: str, tmp_path: Path) -> None:
    url = daemon_url
    headers = {"Authorization": f"Bearer {TOKEN}"}
    work = tmp_path / "work"
    work.mkdir()
    with httpx.Client(base_url=url, headers=headers, timeout=20) as client:

        def create(body: dict[str, object]) -> str:
            response = client.post("/v1/sessions", json={"cwd": str(work), **body})
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        live = [create({"command": ["cat"]}) for _ in range(3)]
        ended = [create({"shell": "echo done; exit 3"}), create({"command": ["true"]})]
        for session_id in ended:
            assert client.get(f"/v1/sessions/{session_id}/wait", params={"timeout": 10}).json()["ended"]

    (tmp_path / "tb_fuzz_hooks.py").write_text(HOOKS)
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TRIO_BRIDGE_", "SCHEMATHESIS_"))
    }  # fmt: skip
    env.update(
        PYTHONPATH=str(tmp_path), SCHEMATHESIS_HOOKS="tb_fuzz_hooks", TB_FUZZ_SANDBOX=str(work),
        TB_FUZZ_LIVE=",".join(live), TB_FUZZ_ENDED=",".join(ended),
    )  # fmt: skip
    schemathesis = Path(sys.executable).with_name("schemathesis")
    command = [
        str(schemathesis) if schemathesis.exists() else "schemathesis",
        "--config-file", str(tmp_path / "schemathesis.toml"), "run", f"{url}/v1/openapi.json",
        # use_after_free: DELETE kills a session; its record, screen and output stay readable
        # (state "killed") by design, which that check takes for a deleted resource still served;
        # ensure_resource_availability: DELETE .../record (rm) removes an ended session for good,
        # a deletion on a sub-path that check does not link to the session it then finds gone
        "--checks", "all", "--exclude-checks", "use_after_free,ensure_resource_availability",
        "--max-time", "35", "--max-examples", "30", "--workers", "1",
        "--request-timeout", "20", "--header", f"Authorization: Bearer {TOKEN}",
        "--exclude-path", "/v1/events", "--generation-deterministic", "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=170, cwd=tmp_path)
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.log").write_text(output)
    assert result.returncode == 0, output[-20000:]
    # it really ran: every operation but the one left out, each with cases, all passed (how
    # many cases fit in --max-time depends on the machine's load: 155 on a loaded one, where
    # this asked for more than 300)
    tested = re.search(r"Tested: (\d+)", output)
    assert tested is not None and int(tested[1]) >= 17, output[-5000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    assert cases is not None and cases[1] == cases[2] and int(cases[1]) >= int(tested[1]), output[-5000:]
