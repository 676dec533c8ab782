"""What a run learned of each endpoint's request budget, kept for the next run's start.

The limiter finds the API's budget by climbing from `--rate` (20 by default); on a small fleet
or a generous API most of a first run is that climb. So a run writes, per endpoint, the rate
its limiter ended at, and the next run (whatever its output folder: a nightly `-o
logs/{date}` too) starts there, less a margin:

    start = MARGIN x learned rate, if it was learned less than KEEP_FOR ago; else --rate

Aged out after a week, and started below it, so a budget that was lowered since is met with a
few 429s (the limiter then drops to 70 % of its rate at once), not hammered. A `--rate` given
(as a flag or in the inventory) always wins; shards and the demo neither read nor write it.

Kept in the state folder (`--state-dir`, else `$XDG_STATE_HOME/collector`, else
`~/.local/state/collector`), never under OUT. A file that cannot be read is ignored (said at
debug level): it only ever makes a start faster.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from collector.destinations.local import make_folders, write_atomically
from collector.log import ev

log = logging.getLogger("collector.run")

LEARNED_FILE = "learned.json"
KEEP_FOR = 7 * 86400.0  # seconds a learned rate is believed
MARGIN = 0.8  # of the learned rate, the next run starts at
MAX_BYTES = 1024 * 1024  # of the file we read: a few hundred bytes per endpoint


def starting_rates(folder: Path | None, *, now: float | None = None) -> dict[str, float]:
    """Per endpoint, the rate to start at from what earlier runs learned (none: --rate)."""
    now = time.time() if now is None else now
    rates: dict[str, float] = {}
    for endpoint, entry in _entries(folder).items():
        rate, at = entry.get("rate"), entry.get("at")
        if isinstance(rate, (int, float)) and isinstance(at, (int, float)) and rate > 0 and 0 <= now - at < KEEP_FOR:
            rates[endpoint] = MARGIN * float(rate)
    return rates


def remember(folder: Path | None, rates: Mapping[str, float], *, now: float | None = None) -> None:
    """Keep `rates` (endpoint -> the rate its limiter learned) for the next run; other
    endpoints' entries stay. Never fails the run: a state folder we cannot write is said once."""
    if folder is None or not rates:
        return
    now = time.time() if now is None else now
    endpoints: dict[str, Any] = dict(_entries(folder))
    endpoints.update({endpoint: {"rate": round(rate, 3), "at": int(now)} for endpoint, rate in rates.items()})
    try:
        make_folders(folder)
        write_atomically(folder / LEARNED_FILE, json.dumps({"endpoints": endpoints}, indent=1).encode())
    except OSError as exc:
        log.warning(
            "%s: cannot keep the learned request rates: %s",
            folder,
            exc.strerror or exc,
            extra=ev("learned_not_kept", error=str(exc)),
        )


def _entries(folder: Path | None) -> dict[str, dict[str, Any]]:
    """The file's entries, by endpoint: those shaped as we write them; nothing if it is not
    there or cannot be read (said at debug level: it only ever makes a start faster)."""
    if folder is None:
        return {}
    try:
        with open(folder / LEARNED_FILE, "rb") as file:
            data = json.loads(file.read(MAX_BYTES))  # a larger file is cut, so not JSON: ignored
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.debug("learned rates not read: %s", exc, extra=ev("learned_ignored", error=str(exc)))
        return {}
    endpoints = data.get("endpoints") if isinstance(data, dict) else None
    if not isinstance(endpoints, dict):
        return {}
    return {str(endpoint): entry for endpoint, entry in endpoints.items() if isinstance(entry, dict)}
