"""The order in which the fan-out asks for exports, when earlier runs said how long they take.

A sweep ends when its slowest export has been asked for, has run, and been collected; and,
against a rate-limited API, when all its requests have been sent. Asked in inventory order,
a slow export may be asked last, when the others are asked: the run then ends that long
after the last request (on a first run nothing better can be known). With each server's
export time from an earlier run (`collector.run.learned`), the fan-out asks first for the
exports that must start early for the run to end at its lower bound, slowest first (the
earliest latest-start first, as EDF does):

    horizon = max(slowest export, requests / rate) - servers / rate

where `servers / rate` is the time it takes to ask for every export at the endpoint's starting
rate and `requests` = 3 per server (an export, a poll, a download). A server whose export
takes longer than `horizon`, asked last, would end after the bound: it is asked first. The
others keep their inventory order: asking every export slowest-first would bunch their ends
together, where polls and downloads then wait for the rate (modelled on 300-1,500 servers of
5-15 s, 1-30 s and 60-120 s at 100 req/s: as good as slowest-first where the slowest export
sets the bound, as good as inventory order where the rate does). A server no earlier run saw
is asked first too: it may be the slowest. A time that is only a bound (the export was done
by the poll that found it so) counts as that bound: asked early, never late.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from collector.sweep.polling import OwnTime

T = TypeVar("T")
REQUESTS_PER_SERVER = 3  # an export, a poll, a download: the least a server costs


def asking_order(
    work: Sequence[T],
    known: Mapping[tuple[str, str], OwnTime],
    key: Callable[[T], tuple[str, str]],
    endpoint: Callable[[T], str],
    rates: Mapping[str, float],
) -> list[T]:
    """`work` reordered (stable) so that exports that must start early for the run to end at
    its bound come first, slowest first; `known` maps a server's `key` to its export's seconds,
    `rates` each `endpoint`'s starting request rate."""
    if not known:
        return list(work)
    servers: dict[str, int] = defaultdict(int)
    slowest: dict[str, float] = defaultdict(float)
    for item in work:
        where = endpoint(item)
        servers[where] += 1
        own = known.get(key(item))
        slowest[where] = max(slowest[where], 0.0 if own is None else own.seconds)
    horizon: dict[str, float] = {}
    for where, count in servers.items():
        asking = count / rates[where]
        horizon[where] = max(slowest[where], REQUESTS_PER_SERVER * asking) - asking

    def urgency(item: T) -> float:
        own = known.get(key(item))
        seconds = math.inf if own is None else own.seconds  # never seen: it may be the slowest
        return -seconds if seconds > horizon[endpoint(item)] else 0.0

    return sorted(work, key=urgency)
