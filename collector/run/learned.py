"""What a run learned of each endpoint, kept for the next run's start: its request budget and
how long its servers' exports take.

The limiter finds the API's budget by climbing from `--rate` (20 by default, doubling four
times a second until the first refusal); a run writes, per endpoint, the rate its limiter
learned (the budget measured between refusals, see `RateLimiter.learned`), and the next run
(whatever its output folder: a nightly `-o logs/{date}` too) starts there, if it was learned
less than KEEP_FOR ago (else at --rate), as a budget known: with no start-up, whose doubling
went past it into a burst of refusals and cut the rate to 60 % of it for seconds (issue 14).
A budget lowered since is met with refusals: the first cuts the rate to 0.9 of the known
budget, and once that rate is still refused a quarter second later, each refusal cuts a tenth
(see `RateLimiter.throttled`), until a second later the run has measured the new budget
between them. A budget raised since is found by the run's probing above the known one, and
kept once a refusal measures it; a run never refused keeps the known one (not the rate it
climbed to: a bucket's burst lets a run probe past its budget unrefused). What a run refused
but never able to measure keeps is the rate its last cut set, below the rate refused. Aged
out after a week.

The export-time distribution (21 points: every 5th percentile of the run's estimates, see
`collector.sweep.polling.ExportDurations`) is kept beside it. The next run's first polls aim
at its 90th percentile from the first export on, where a first run polls its first exports at
--poll-interval to find out; the run's own estimates replace it one for one as they come.
Aged out the same way: kept a week from the run that saw it, then forgotten; a run that saw
too few exports to say (fewer than 5) leaves the earlier distribution, with its own age.
A fleet that became slower since costs a second poll of the exports that outlast it; one
that became faster, a few seconds' wait at each first poll, until its own estimates take over.

Each server's own export time is kept too (`exports.json`, beside it: the seconds of its latest
export, per endpoint and server, with when it was seen; aged out the same way, a server at a
time): the next run asks first for the exports that must start early (`collector.sweep.plan`)
and aims each server's first poll just after its own time, where the fleet's distribution
only says what a share of servers take. A server whose export became slower costs one poll
more, and its percentages tell its new time. One found done at the poll aimed at its exact
time keeps it (confirmed; one that became faster costs that poll's lag). One found done at
its first poll with no exact time known is kept as a bound ("done by then"), which only caps
the next run's aim at the fleet's: a sooner poll finds it running, and its percentages tell
its time.

A `--rate` given (as a flag or in the inventory) always wins, and then nothing is read or kept;
shards and the demo neither read nor write it either.

Kept in the state folder (`--state-dir`, else `$XDG_STATE_HOME/collector`, else
`~/.local/state/collector`), never under OUT. A file that cannot be read is ignored (said at
debug level): it only ever makes a start faster.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from collector.control.throttle import MIN_RATE
from collector.destinations.local import make_folders, write_atomically
from collector.log import ev
from collector.sweep.polling import OwnTime

log = logging.getLogger("collector.run")

LEARNED_FILE = "learned.json"
KEEP_FOR = 7 * 86400.0  # seconds a learned rate is believed
MAX_BYTES = 1024 * 1024  # of the file we read: a few hundred bytes per endpoint
MAX_POINTS = 64  # of a kept export-time distribution (we write 21)
EXPORTS_FILE = "exports.json"
MAX_EXPORTS_BYTES = 64 * 1024 * 1024  # of the per-server file we read: ~60 bytes per server


def starting_rates(folder: Path | None, *, now: float | None = None) -> dict[str, float]:
    """Per endpoint, the rate to start at from what earlier runs learned (none: --rate)."""
    now = time.time() if now is None else now
    rates: dict[str, float] = {}
    for endpoint, entry in _entries(folder).items():
        rate, at = entry.get("rate"), entry.get("at")
        # Below MIN_RATE no run of ours can have learned it (a limiter never cuts below it, and a
        # run given --rate keeps nothing): a hand-edited 0.001 started the next run at one
        # request in 1,000 s, and there it stayed.
        if (
            isinstance(rate, (int, float))
            and isinstance(at, (int, float))
            and rate >= MIN_RATE
            and 0 <= now - at < KEEP_FOR
        ):
            rates[endpoint] = float(rate)
    return rates


def starting_durations(folder: Path | None, endpoints: Iterable[str], *, now: float | None = None) -> list[float]:
    """The export-time distribution earlier runs saw at these endpoints (seconds, the points
    of each kept one, together), for the next run's first polls; empty if none is recent."""
    now = time.time() if now is None else now
    wanted = set(endpoints)
    points: list[float] = []
    for endpoint, entry in _entries(folder).items():
        kept = entry.get("exports")
        if endpoint not in wanted or not isinstance(kept, dict):
            continue
        seconds, at = kept.get("seconds"), kept.get("at")
        if not isinstance(at, (int, float)) or not 0 <= now - at < KEEP_FOR or not isinstance(seconds, list):
            continue
        points += [float(s) for s in seconds[:MAX_POINTS] if isinstance(s, (int, float)) and 0 < s < math.inf]
    return points


def remember(
    folder: Path | None,
    rates: Mapping[str, float],
    *,
    durations: Sequence[float] = (),
    servers: Mapping[str, Mapping[tuple[str, str], OwnTime]] | None = None,
    now: float | None = None,
) -> None:
    """Keep `rates` (endpoint -> the rate its limiter learned) and, for those endpoints, the
    run's export-time distribution `durations` (if it saw enough to say; else the one kept
    stays) for the next run; other endpoints' entries stay. And `servers` (endpoint ->
    (project id, server id) -> what its export took in this run) beside them; other servers'
    times stay until they age out. Never fails the run: a state folder we cannot write is said
    once."""
    if folder is None or not rates:
        return
    now = time.time() if now is None else now
    endpoints: dict[str, Any] = dict(_entries(folder))
    for endpoint, rate in rates.items():
        entry: dict[str, Any] = {"rate": round(rate, 3), "at": int(now)}
        if durations:
            entry["exports"] = {"seconds": [round(s, 3) for s in durations[:MAX_POINTS]], "at": int(now)}
        elif isinstance(kept := endpoints.get(endpoint, {}).get("exports"), dict):
            entry["exports"] = kept
        endpoints[endpoint] = entry
    try:
        make_folders(folder)
        write_atomically(folder / LEARNED_FILE, json.dumps({"endpoints": endpoints}, indent=1).encode())
        if servers and any(servers.values()):
            times = json.dumps({"endpoints": _export_times(folder, servers, now)}, separators=(",", ":"))
            write_atomically(folder / EXPORTS_FILE, times.encode())
    except OSError as exc:
        log.warning(
            "%s: cannot keep what this run learned (request rates, export times): %s",
            folder,
            exc.strerror or exc,
            extra=ev("learned_not_kept", error=str(exc)),
        )


def server_export_times(
    folder: Path | None, endpoints: Iterable[str], *, now: float | None = None
) -> dict[tuple[str, str], OwnTime]:
    """(project id, server id) -> what its export took in an earlier run at one of
    `endpoints`, for those seen less than `KEEP_FOR` ago."""
    now = time.time() if now is None else now
    kept = _read(folder, EXPORTS_FILE, MAX_EXPORTS_BYTES)
    times: dict[tuple[str, str], OwnTime] = {}
    for endpoint in set(endpoints):
        servers = kept.get(endpoint)
        if not isinstance(servers, dict):
            continue
        for name, entry in servers.items():
            if (own := _own_time(entry, now)) is not None:
                project_id, _, server_id = str(name).partition("/")
                if server_id:
                    times[(project_id, server_id)] = own
    return times


def _own_time(entry: object, now: float) -> OwnTime | None:
    """An entry as we write it ([seconds, when, exact]), if it is one and recent; else None."""
    match entry:
        case [int() | float() as seconds, int() | float() as at, 0 | 1 as exact] if (
            0 < seconds < math.inf and 0 <= now - at < KEEP_FOR
        ):
            return OwnTime(float(seconds), bool(exact))
    return None


def _export_times(
    folder: Path, seen: Mapping[str, Mapping[tuple[str, str], OwnTime]], now: float
) -> dict[str, dict[str, object]]:
    """The kept export times, by endpoint, with `seen` (this run's) in and the aged ones out."""
    endpoints: dict[str, dict[str, object]] = {}
    for endpoint, servers in _read(folder, EXPORTS_FILE, MAX_EXPORTS_BYTES).items():
        if isinstance(servers, dict):
            endpoints[endpoint] = {str(name): entry for name, entry in servers.items() if _own_time(entry, now)}
    for endpoint, times in seen.items():
        kept = endpoints.setdefault(endpoint, {})
        for (project_id, server_id), own in times.items():
            kept[f"{project_id}/{server_id}"] = [round(own.seconds, 3), int(now), int(own.exact)]
    return endpoints


def _read(folder: Path | None, name: str, limit: int) -> dict[str, Any]:
    """The file's "endpoints" object; nothing if it is not there or cannot be read (said at
    debug level: it only ever makes a start faster)."""
    if folder is None:
        return {}
    try:
        with open(folder / name, "rb") as file:
            data = json.loads(file.read(limit))  # a larger file is cut, so not JSON: ignored
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.debug("%s not read: %s", name, exc, extra=ev("learned_ignored", error=str(exc)))
        return {}
    endpoints = data.get("endpoints") if isinstance(data, dict) else None
    return endpoints if isinstance(endpoints, dict) else {}


def _entries(folder: Path | None) -> dict[str, dict[str, Any]]:
    """The rate file's entries, by endpoint: those shaped as we write them."""
    endpoints = _read(folder, LEARNED_FILE, MAX_BYTES)
    return {str(endpoint): entry for endpoint, entry in endpoints.items() if isinstance(entry, dict)}
