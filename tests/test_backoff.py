"""The one retry delay of the package (_backoff.Backoff): exponential, capped, reset by a success."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_bridge._backoff import Backoff


def test_delays_grow_to_the_cap_and_a_reset_starts_small_again() -> None:
    backoff = Backoff(0.1, 1.0)
    assert [backoff.next() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)
    tripling = Backoff(1.0, 20.0, multiplier=3)
    assert [tripling.next() for _ in range(4)] == pytest.approx([1.0, 3.0, 9.0, 20.0])
    # a first delay above the cap is kept (the supervisor's policy allows that); the rest are capped
    odd = Backoff(5.0, 2.0)
    assert [odd.next(), odd.next()] == pytest.approx([5.0, 2.0])


@pytest.mark.parametrize("args", [(0, 1), (1, 0), (-1, 1), (0.1, 1, 0.5)])
def test_nonsense_is_refused(args: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Backoff(*args)


def test_sleep_waits_the_next_delay() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> list[float]:
        backoff = Backoff(0.5, 2.0)
        waited = []
        for _ in range(4):
            before = trio.current_time()
            await backoff.sleep()
            waited.append(trio.current_time() - before)
        return waited

    assert trio.run(main, clock=clock) == pytest.approx([0.5, 1.0, 2.0, 2.0])


def test_every_retry_loop_uses_it() -> None:
    """No hand-written doubling left in the modules that retry: Redis, Telegram, the API's
    remote streams, the CLI's reconnecting clients, the supervisor."""
    import re
    from pathlib import Path

    import trio_bridge

    root = Path(trio_bridge.__file__).parent
    doubling = re.compile(r"(backoff|delay)\w* \* ")
    texts = {
        str(p.relative_to(root)): p.read_text()
        for f in ("mesh", "telegram", "api", "cli")
        for p in (root / f).rglob("*.py")
    }
    texts["supervise.py (Supervisor)"] = (root / "supervise.py").read_text().split("class Supervisor")[1]
    assert sorted(name for name, text in texts.items() if doubling.search(text)) == []
