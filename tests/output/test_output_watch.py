"""The output path's push notice: inotify on log directories (one instance for many logs),
the feed's growth (counted and trimmed in one place), and readers under a flood, with a real
tmux and ``split`` writing the logs."""

from __future__ import annotations

import sys
from contextlib import aclosing
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_bridge.output import Chunk, LogChanges, LogWatch, OutputFeed, Resync, SegmentLog
from trio_bridge.sessions import SessionState, SessionTuning
from trio_bridge.tmux import open_control_client

from ..conftest import Sandbox
from ..sessions.test_manager import read_until, running_manager, wait_for_state


def seq_output(lines: int) -> bytes:
    """What ``seq 1 lines`` puts through a pty."""
    return b"".join(b"%d\r\n" % i for i in range(1, lines + 1))


async def test_watches_wake_their_own_waiters_and_hand_the_reading_over(tmp_path: Path) -> None:
    dirs = [tmp_path / f"log{n}" for n in range(3)]
    for directory in dirs:
        directory.mkdir()
    watch = LogWatch()
    woken: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def waiter(
                n: int, task_status: trio.TaskStatus[tuple[trio.CancelScope, LogChanges]]
            ) -> None:
                with watch.watch(dirs[n]) as changes, trio.CancelScope() as scope:
                    await changes.wait()  # the first returns at once
                    task_status.started((scope, changes))
                    while True:
                        await changes.wait()
                        woken.append(n)

            started = [await nursery.start(waiter, n) for n in range(3)]
            await trio.testing.wait_all_tasks_blocked()
            assert watch._reader is not None  # one of the waiters reads the instance for all
            for n in (2, 0, 1):
                (dirs[n] / "seg.00000000").write_bytes(b"x" * (n + 1))
                while woken.count(n) < 1:
                    await trio.sleep(0.001)
            assert sorted(woken) == [0, 1, 2]  # each woken by its own directory only
            # the reader goes away (cancelled): another waiter reads, nobody misses news
            reader = next(n for n in range(3) if started[n][1] is watch._reader)
            started[reader][0].cancel()
            await trio.testing.wait_all_tasks_blocked()
            others = [n for n in range(3) if n != reader]
            for n in others:
                with open(dirs[n] / "seg.00000000", "ab") as f:
                    f.write(b"more")
                while woken.count(n) < 2:
                    await trio.sleep(0.001)
            assert woken.count(reader) == 1 and watch._reader is not None
            nursery.cancel_scope.cancel()
    assert watch._inotify is None  # closed with the last watch


async def test_a_muted_watch_queues_nothing_and_then_wakes_again(tmp_path: Path) -> None:
    watch = LogWatch()
    segment = tmp_path / "seg.00000000"
    with watch.watch(tmp_path) as changes, trio.fail_after(10):
        await changes.wait()  # the first returns at once
        with changes.muted():
            segment.write_bytes(b"while muted")
        with trio.move_on_after(0.2) as quiet:
            await changes.wait()
        assert quiet.cancelled_caught  # no event of the write: the caller looks itself
        with open(segment, "ab") as f:
            f.write(b" and after")
        await changes.wait()
        with watch.watch(tmp_path) as again:  # the same directory twice: one watch
            assert again.wd == changes.wd
            with changes.muted():  # shared: left alone, both keep their events
                segment.write_bytes(b"shared")
            await again.wait()
            await again.wait()
            await changes.wait()


async def test_advance_counts_and_trims_in_one_place(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, segment_size=100)
    feed = OutputFeed(log)
    with trio.fail_after(5):
        assert await feed.advance(keep=200) == 0
        (tmp_path / "seg.00000000").write_bytes(b"a" * 60)
        assert await feed.advance(keep=200) == 60
        assert await feed.advance(keep=200) == 0  # nothing new: nothing counted twice
        (tmp_path / "seg.00000000").write_bytes(b"a" * 100)
        for n in range(1, 5):
            (tmp_path / f"seg.{n:08d}").write_bytes(b"b" * 100)
        (tmp_path / "seg.00000005").write_bytes(b"c" * 10)
        assert await feed.advance(keep=200) == 450  # across five segment boundaries
    assert (log.first_offset(), log.end_offset(), feed.end) == (400, 510, 510)  # the two newest segments kept
    # a feed made anew (a restarted manager) counts what the log holds
    assert await OutputFeed(log).advance(keep=200) == 510


async def test_an_end_at_a_segments_edge_trims_once_the_next_one_begins(tmp_path: Path) -> None:
    """Measured just as a segment is full (the next one's file not made yet), the log cannot be
    trimmed to it: the trim comes with the next segment's first bytes. (It used to come at the
    edge, keep the full segment, and never again: a CI run's session ended with one segment too
    many, its log starting 1 MiB early.)"""
    log = SegmentLog(tmp_path, segment_size=100)
    feed = OutputFeed(log)
    with trio.fail_after(5):
        (tmp_path / "seg.00000000").write_bytes(b"a" * 100)
        assert await feed.advance(keep=100) == 100
        (tmp_path / "seg.00000001").write_bytes(b"b" * 10)
        assert await feed.advance(keep=100) == 10
    assert (log.first_offset(), log.end_offset()) == (100, 110)


async def test_a_cancelled_advance_leaves_its_growth_to_the_next(tmp_path: Path) -> None:
    """A watcher cancelled mid-trim (its session ended): the growth is counted by the next
    advance (the end's), not lost."""
    feed = OutputFeed(SegmentLog(tmp_path, segment_size=100))
    assert await feed.advance(keep=1000) == 0
    (tmp_path / "seg.00000000").write_bytes(b"a" * 100)
    (tmp_path / "seg.00000001").write_bytes(b"b" * 50)
    with trio.CancelScope() as scope:
        scope.cancel()
        await feed.advance(keep=1000)  # a segment completed: it trims, and is cancelled there
    assert scope.cancelled_caught and feed.end == 0
    assert await feed.advance(keep=1000) == 150


async def test_a_flood_reaches_every_reader_exactly_once(sandbox: Sandbox, tmp_path: Path) -> None:
    """A flood with readers started before it, from offsets inside it while it runs, and after
    its end: every byte exactly once, in order; the count is the log's length."""
    lines = 200_000
    expected = seq_output(lines)
    async with running_manager(
        sandbox.server(), sandbox.state_dir, SessionTuning(segment_size=1 << 16)
    ) as manager:
        record = await manager.create(["sh", "-c", f"sleep 0.3; exec seq 1 {lines}"], cwd=tmp_path)
        feed = manager.feed(record.id)
        got: dict[int, bytes] = {}

        async def reader(start: int) -> None:
            data = bytearray()
            async with aclosing(feed.follow(start)) as chunks:
                async for item in chunks:
                    assert isinstance(item, Chunk) and item.offset == start + len(data)
                    data += item.data
            got[start] = bytes(data)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader, 0)
                for start in (1, 70_000, 333_333, 1_000_000):
                    while feed.end < start:  # the feed's end as the watcher measured it
                        await trio.sleep(0.005)
                    nursery.start_soon(reader, start)
            await wait_for_state(manager, record.id, SessionState.EXITED)
        assert {start: len(data) for start, data in got.items()} == {
            start: len(expected) - start for start in got
        }
        assert all(data == expected[start:] for start, data in got.items())
        assert manager.output_bytes == len(expected)
        assert manager.live_readers() == 0
        # after the end: a reader from every offset of a small window gets the rest at once
        with trio.fail_after(20):
            for start in range(len(expected) - 300, len(expected) + 1):
                tail = b""
                async with aclosing(manager.feed(record.id).follow(start)) as chunks:
                    async for item in chunks:
                        assert isinstance(item, Chunk)
                        tail += item.data
                assert tail == expected[start:]


async def test_the_log_is_trimmed_while_it_grows_and_late_readers_resync(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    lines = 100_000  # 688,895 bytes through segments of 16 KiB, keeping 64 KiB
    expected = seq_output(lines)
    state = sandbox.state_dir
    async with running_manager(
        sandbox.server(), state, SessionTuning(segment_size=1 << 14, log_max_bytes=1 << 16)
    ) as manager:
        # (a pause half-way: on a loaded machine the whole flood can be written before the
        # watcher first runs, and then all segments exist at once, trimmed or not)
        half = lines // 2
        script = f"sleep 0.3; seq 1 {half}; sleep 0.5; seq {half + 1} {lines}; sleep 60"
        record = await manager.create(["sh", "-c", script], cwd=tmp_path)
        log_dir = state / "sessions" / record.id / "log"
        kept_most = 0
        with trio.fail_after(30):
            # trimmed as it grows (not only at the end): the session still runs (its sleep)
            while manager.feed(record.id).end < len(expected):
                kept_most = max(kept_most, len(list(log_dir.iterdir())))
                await trio.sleep(0.002)
            while len(list(log_dir.iterdir())) > 4:
                await trio.sleep(0.01)
            assert (await manager.get(record.id)).state is SessionState.RUNNING
            await manager.kill(record.id)
            await wait_for_state(manager, record.id, SessionState.KILLED)
        items = []
        async with aclosing(manager.feed(record.id).follow(0)) as chunks:
            async for item in chunks:
                items.append(item)
        assert manager.output_bytes == len(expected)  # counted once, though most was dropped
    assert kept_most < 43  # 43 segments were written: never all kept
    assert isinstance(items[0], Resync) and items[0].requested == 0
    first = items[0].offset
    assert len(expected) - first <= 1 << 16 and first % (1 << 14) == 0
    assert b"".join(i.data for i in items[1:] if isinstance(i, Chunk)) == expected[first:]


async def test_readers_are_woken_when_the_bytes_are_in_the_log(sandbox: Sandbox, tmp_path: Path) -> None:
    """Lines printed long after the last: their reader gets each (pushed: nothing else makes it
    read again), and "output seen" fires."""
    script = "import time\nfor i in range(5):\n    time.sleep(0.3)\n    print(f'tick {i}', flush=True)"
    async with running_manager(sandbox.server(), sandbox.state_dir) as manager:
        record = await manager.create([sys.executable, "-c", script], cwd=tmp_path)
        feed = manager.feed(record.id)
        offset, data = 0, b""
        for i in range(5):
            more, offset = await read_until(feed, offset, f"tick {i}\r\n".encode())
            data += more
            assert data.endswith(f"tick {i}\r\n".encode())
        assert data == b"".join(b"tick %d\r\n" % i for i in range(5))
        assert manager.live_session(record.id).output.count >= 1
        await wait_for_state(manager, record.id, SessionState.EXITED)
        assert manager.output_bytes == offset == feed.end


async def test_sessions_share_one_inotify_instance(sandbox: Sandbox, tmp_path: Path) -> None:
    """Six sessions printing at once, one floods: each reader gets its own session's bytes,
    all of them, through the manager's one inotify instance."""
    script = (
        "import time\nfor i in range(30):\n    print(f'{sys.argv[1]} {i}', flush=True)\n    time.sleep(0.02)"
    )
    async with running_manager(sandbox.server(), sandbox.state_dir) as manager:
        records = [
            await manager.create([sys.executable, "-c", "import sys\n" + script, str(n)], cwd=tmp_path)
            for n in range(5)
        ]
        flood = await manager.create(["seq", "1", "100000"], cwd=tmp_path)
        most = len(manager._log_watch._by_wd)  # a watch each, in one instance
        got: dict[str, bytes] = {}

        async def reader(session_id: str) -> None:
            data = b""
            async with aclosing(manager.feed(session_id).follow(0)) as chunks:
                async for item in chunks:
                    assert isinstance(item, Chunk)
                    data += item.data
            got[session_id] = data

        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                for record in [*records, flood]:
                    nursery.start_soon(reader, record.id)
                while len(got) < 6:
                    most = max(most, len(manager._log_watch._by_wd))
                    await trio.sleep(0.005)
        assert most >= 2
        assert manager._log_watch._inotify is None  # closed with the last session's watch
    for n, record in enumerate(records):
        assert got[record.id] == b"".join(b"%d %d\r\n" % (n, i) for i in range(30))
    assert got[flood.id] == seq_output(100_000)


async def test_a_client_without_output_gets_none_and_its_commands_answered(sandbox: Sandbox) -> None:
    """``output=False`` (the hub's): tmux sends no ``%output`` (it escapes none of it for us),
    even for a pane followed while it floods, and answers every command."""
    sandbox.tmux("new-session", "-d", "-s", "quiet", "sh")
    pane = sandbox.tmux("display-message", "-p", "-t", "=quiet:", "#{pane_id}").stdout.strip()
    with trio.fail_after(20):
        async with open_control_client(sandbox.server(), "quiet", output=False) as client:
            output = await client.follow(pane)
            for n in range(5):
                sandbox.tmux("send-keys", "-t", pane, f"seq 1 {20_000 * (n + 1)}", "Enter")
                (x,) = await client.command("display-message", "-p", "-t", pane, "#{pane_id}")
                assert x.decode() == pane
            with pytest.raises(trio.WouldBlock):
                output.receive_nowait()
