"""Polls moved into request budget that would otherwise go unused.

Each export's first poll is aimed late (`collector.sweep.polling`): a poll that finds the
export still running costs a request. But when the API's request budget is what ends the run,
a second of budget nobody uses is a second added to its end: with 600 servers of 5-15 s at
100 requests/s, the budget stood idle from the last export request (~7 s) until the first
aimed polls (~13 s), and then the polls and downloads of exports done long before queued
behind each other to the end (issue 14). A poll sent into that idle budget costs little (an
API's bucket keeps only a second or so of what goes unused): it finds the export done
(downloaded now, not later at the budget's busiest) or running (its percentage then says
when it ends, so its next poll is the last). Most find it running, at 600 servers: 3.6
requests a server against 3.1, still 3 s sooner.

So, for each endpoint, the exports whose end is only guessed wait here, oldest first, and
whenever the endpoint's rate limiter has a slot that nobody waits for, the oldest is woken to
poll at once: the likeliest to be done of those not known. Only while the budget binds
(`pressing`: the API has refused us, and what is left to send takes a good part of an
export's time at the rate it takes); otherwise idle budget is the normal state of a run whose
exports, not its requests, set its end (exports of 60-120 s), and polls sent into it would
only add requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from collector.control.throttle import RateLimiter, Sleep, sleep


class EarlyPolls:
    """The exports of one endpoint waiting to poll with no estimate of their end, in the order
    they began waiting (an export's first wait begins as the API accepts it: the oldest export
    first); `run` wakes them into its limiter's spare slots while `pressing()`."""

    IDLE_CHECK = 0.1  # seconds between looks while there is nothing to do

    def __init__(self, limiter: RateLimiter, pressing: Callable[[], bool], *, pause: Sleep = sleep) -> None:
        self.limiter = limiter
        self.pressing = pressing
        self.woken = 0  # polls moved earlier, for the tests and the benchmarks
        self._sleep = pause
        # Each wait's bare future and its timer, in the order they began (a dict keeps it),
        # each out as it ends: ~30 bytes a waiting export beside what a plain sleep holds; a
        # heap of tuples, kept until each reached its top, put 5,000 servers over 100 MB.
        self._waiting: dict[asyncio.Future[bool], asyncio.TimerHandle] = {}
        # ... and those of exports waiting again (their first wait ended with no estimate:
        # postponed until the fleet's durations were known, say): older than any first wait.
        self._again: dict[asyncio.Future[bool], asyncio.TimerHandle] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiting) + len(self._again)

    def sleep(self, seconds: float, *, again: bool = False) -> asyncio.Future[bool]:
        """A wait of `seconds` before a poll, to await: True if woken sooner, into idle budget.
        `again`: not the export's first wait. A bare future, not a coroutine: a frame more per
        waiting export was ~2 MB at 5,000."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[bool] = loop.create_future()
        (self._again if again else self._waiting)[woken] = loop.call_later(seconds, _settle, woken, False)
        woken.add_done_callback(self._ended)  # woken, timed out or cancelled
        return woken

    def _ended(self, woken: asyncio.Future[bool]) -> None:
        timer = self._waiting.pop(woken, None) or self._again.pop(woken, None)
        if timer is not None:
            timer.cancel()

    def wake(self) -> bool:
        """Wake the export asked for longest ago of those waiting now; False if none waits.
        Those waiting again first: a wait re-armed goes to the end of its dict, and an export
        asked for at the start, whose first wait ran out before the fleet's durations were
        known, would queue behind every export asked for since (most of the early polls of
        600 servers found exports a few seconds old, none of them done)."""
        for waits in (self._again, self._waiting):
            for woken in waits:
                if not woken.done():  # (done, its callback not yet run: skipped)
                    waits.pop(woken).cancel()
                    woken.set_result(True)
                    self.woken += 1
                    return True
        return False

    async def run(self) -> None:
        """Until cancelled: each time the limiter has a slot nobody waits for, while the
        budget binds, wake the oldest waiting export to take it."""
        limiter = self.limiter
        while True:
            if not self.waiting:
                await self._sleep(self.IDLE_CHECK)
                continue
            spare = limiter.spare()
            if spare is None:  # others wait for the rate: nothing idle
                await self._sleep(1.0 / limiter.rate)
            elif spare > 0:
                await self._sleep(spare)
            elif self.pressing() and self.wake():
                # Its request takes the slot as its task runs; look again at the next one.
                await self._sleep(1.0 / limiter.rate)
            else:
                await self._sleep(self.IDLE_CHECK)


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
