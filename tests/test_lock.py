"""The state-directory lock: one owner, released on death, the holder left untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trio_bridge._lock import AlreadyRunningError, hold_lock

HOLDER = """
import sys, time
from pathlib import Path
from trio_bridge._lock import hold_lock
with hold_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(300)
"""


def test_second_holder_is_refused_without_disturbing_the_first(tmp_path: Path) -> None:
    lock = tmp_path / "state" / "daemon.lock"
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"held\n"
            before = lock.read_bytes()
            with pytest.raises(AlreadyRunningError) as info, hold_lock(lock):
                pass
            assert info.value.pid == holder.pid
            assert f"process {holder.pid} already holds" in str(info.value)
            assert lock.read_bytes() == before  # untouched
            # the lock dies with its holder, even by SIGKILL: no stale lock
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
            with hold_lock(lock):
                assert lock.read_text() == f"{os.getpid()}\n"
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()


def test_lock_is_reusable_after_release(tmp_path: Path) -> None:
    lock = tmp_path / "daemon.lock"
    with hold_lock(lock):
        pass
    with hold_lock(lock):
        pass
    assert lock.read_text() == ""
