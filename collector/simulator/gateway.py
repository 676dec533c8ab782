"""The API gateway's throttle: one token bucket over every API call.

The bucket holds `burst` tokens (`SimConfig.burst`: ``--rate-burst``, by default
``max(1, rate)``, about one second's worth) and refills at `rate` per second. A request
takes a token or is refused with the time until one is free, which becomes the 429's
Retry-After.
"""

from __future__ import annotations

import math


class TokenBucket:
    def __init__(self, rate: float, now: float, burst: float) -> None:
        self.rate = rate
        self.capacity = burst
        self._tokens = self.capacity
        self._updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if granted, else the seconds until one will be free."""
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


def retry_after_header(wait: float) -> str:
    """Seconds for a Retry-After header: whole, rounded up, at least 1."""
    return str(max(1, math.ceil(wait)))
