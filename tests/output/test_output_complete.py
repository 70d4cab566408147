"""A session's log holds every byte its command wrote, the last ones included.

tmux ends a pane when its process exits and the pty looks empty; the kernel may still be moving
the command's last bytes to the pty's reading side then, and tmux 3.3a lost them (seen: up to
4 KiB missing from the end of a 128 KiB output, in a few percent of sessions on a loaded
machine). The start wrapper now lets go of the terminal and waits until tmux has read it to its
end. Many sessions end at once here, which is when the kernel is slowest to move the bytes.
"""

from __future__ import annotations

from pathlib import Path

import trio

from trio_bridge.sessions import SessionManager, SessionState, open_session_store

from ..conftest import Sandbox

SIZE = 128 * 1024
SESSIONS = 24


async def test_every_session_log_is_complete_at_its_end(sandbox: Sandbox, tmp_path: Path) -> None:
    script = f"head -c {SIZE} /dev/zero | tr '\\0' v"
    with trio.fail_after(50):
        async with open_session_store(sandbox.state_dir / "sessions.db") as store, trio.open_nursery() as n:
            manager = await n.start(SessionManager(sandbox.server(), store, sandbox.state_dir).run)
            records = [await manager.create(["sh", "-c", script], cwd=tmp_path) for _ in range(SESSIONS)]
            sizes: dict[str, int] = {}

            async def check(session_id: str) -> None:
                ended = await manager.wait(session_id)
                assert ended.state is SessionState.EXITED and ended.exit_code == 0
                log = manager.feed(session_id).log
                sizes[session_id] = log.read(0, 2 * SIZE).count(b"v")

            async with trio.open_nursery() as checks:
                for record in records:
                    checks.start_soon(check, record.id)
            n.cancel_scope.cancel()
    short = {sid: size for sid, size in sizes.items() if size != SIZE}
    assert len(sizes) == SESSIONS and not short, f"logs short of {SIZE} bytes: {short}"
