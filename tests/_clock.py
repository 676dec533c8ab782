"""A clock that moves only when the test says so, for the limiter, the display, the simulator
and credential lifetimes alike."""

from __future__ import annotations


class FakeClock:
    """Seconds that move by `advance`, or by `sleep` (which also records what was slept)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
