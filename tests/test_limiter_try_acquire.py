"""`RateLimiter.try_acquire`, the gateway's way past the limiter without a cancel scope when a
slot is free (issue 14, section 3): it hands out exactly the slots `acquire` would hand out
without waiting, never one that `acquire` would have to wait for, and never jumps a queue."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from _clock import FakeClock
from hypothesis import given
from hypothesis import strategies as st

from collector.control.throttle import RateLimiter


@given(gaps=st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=40))
def test_try_acquire_takes_the_slots_acquire_takes_without_waiting(gaps: list[float]) -> None:
    """Two limiters fed the same arrivals: one by `try_acquire` (falling back to `acquire`
    when it says no), one by `acquire` alone. They send at the same times, and `try_acquire`
    says no exactly when `acquire` would have slept."""

    async def main() -> None:
        tried_clock, plain_clock = FakeClock(), FakeClock()
        tried = RateLimiter(10, burst_seconds=0.25, clock=tried_clock, sleep=tried_clock.sleep)
        plain = RateLimiter(10, burst_seconds=0.25, clock=plain_clock, sleep=plain_clock.sleep)
        for gap in gaps:
            tried_clock.advance(gap)
            plain_clock.advance(gap)
            slept_before = len(plain_clock.sleeps)
            plain_at = await plain.acquire()
            free = len(plain_clock.sleeps) == slept_before
            tried_at = tried.try_acquire()
            assert (tried_at is not None) == free
            if tried_at is None:
                tried_at = await tried.acquire()
            assert tried_at == plain_at
            assert tried_clock.now == plain_clock.now

    anyio.run(main)


@pytest.mark.anyio
async def test_try_acquire_never_jumps_the_queue() -> None:
    clock = FakeClock()
    gate = anyio.Event()

    async def slow_sleep(seconds: float) -> None:
        await gate.wait()
        clock.advance(seconds)

    limiter = RateLimiter(10, burst_seconds=0.0, clock=clock, sleep=slow_sleep)
    assert limiter.try_acquire() == clock.now  # the first slot is free
    async with anyio.create_task_group() as group:
        group.start_soon(limiter.acquire)  # waits for the next slot, 0.1 s on
        await anyio.lowlevel.checkpoint()
        clock.advance(1.0)  # its slot is due, but it has not woken up to take it yet
        assert limiter.try_acquire() is None
        gate.set()
    assert limiter.try_acquire() is None  # the waiter took the slot due now; the next is 0.1 s on
    clock.advance(0.1)
    assert limiter.try_acquire() == clock.now
