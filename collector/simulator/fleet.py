"""The simulated servers: ids, names and each server's fixed personality.

A server's profile (how long its exports take, how big its archive is, which spellings its
firmware uses for status and percentage) is drawn from ``Random(f"{seed}:{id}")``, so it does
not change when the fleet grows or when requests arrive in another order. Which servers are
stuck or failing is drawn once for the fleet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from collector.simulator.config import SimConfig

SERVER_ID_PREFIX = "2102313YJK10N1"  # a Huawei serial number's shape; ids are 20 characters

RUNNING_WORDS = ("Running", "processing", "PROCESSING", "running")
COMPLETED_WORDS = ("completed", "Completed", "COMPLETED")
FAILED_WORDS = ("failed", "Failed", "ERROR")
PERCENT_STYLES = ("percent", "string", "integer")  # "30%", "30", 30
ROLES = ("compute", "storage", "gpu", "network")


def server_id(index: int) -> str:
    return f"{SERVER_ID_PREFIX}{index:06d}"


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """One server and the quirks it shows for its whole life."""

    id: str
    name: str
    index: int
    export_seconds: float
    archive_bytes: int
    stuck_percentage: int | None  # not None: exports stay running at this percentage
    failing: bool  # exports end "failed" after export_seconds
    fail_percentage: int
    running_word: str
    completed_word: str
    failed_word: str
    percent_style: str
    zulu: bool  # created_at ends in "Z" rather than "+00:00"
    status_is_json: bool  # status answers labelled application/json, else octet-stream
    tags: tuple[str, ...]

    def percentage(self, value: int) -> str | int:
        """`value` spelled the way this server spells percentages."""
        if self.percent_style == "percent":
            return f"{value}%"
        if self.percent_style == "string":
            return str(value)
        return value

    def listing(self) -> dict[str, object]:
        """The server as ListServers shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "status": "ACTIVE",
            "manage_state": "MANAGED",
            "tags": list(self.tags),
        }


class Fleet:
    """All servers, in id order, with lookup by id and ListServers paging."""

    def __init__(self, config: SimConfig) -> None:
        count = config.servers
        picked = random.Random(f"{config.seed}:fleet").sample(range(count), config.stuck + config.failing)
        stuck = set(picked[: config.stuck])
        failing = set(picked[config.stuck :])
        width = max(4, len(str(count - 1)))
        self.profiles: list[ServerProfile] = [
            _draw_profile(config, index, f"node-{index:0{width}d}", index in stuck, index in failing)
            for index in range(count)
        ]
        self._by_id = {profile.id: profile for profile in self.profiles}
        self.ids: list[str] = [profile.id for profile in self.profiles]
        self.stuck_ids: list[str] = [self.ids[i] for i in sorted(stuck)]
        self.failing_ids: list[str] = [self.ids[i] for i in sorted(failing)]

    def __len__(self) -> int:
        return len(self.profiles)

    def get(self, sid: str) -> ServerProfile | None:
        return self._by_id.get(sid)

    def page(self, limit: int, marker: str | None) -> tuple[list[ServerProfile], str | None]:
        """The servers after `marker` (an id), at most `limit`, and the next page's marker.

        Raises KeyError for a marker that is not a server id.
        """
        start = 0 if marker is None else self._by_id[marker].index + 1
        servers = self.profiles[start : start + limit]
        more = start + limit < len(self.profiles)
        return servers, (servers[-1].id if more and servers else None)


def _draw_profile(config: SimConfig, index: int, name: str, stuck: bool, failing: bool) -> ServerProfile:
    sid = server_id(index)
    rng = random.Random(f"{config.seed}:{sid}")
    # Draw every value for every server, so a profile does not depend on which are stuck.
    stuck_percentage = rng.randint(1, 95)
    return ServerProfile(
        id=sid,
        name=name,
        index=index,
        export_seconds=rng.uniform(*config.export_seconds),
        archive_bytes=rng.randint(*config.archive_bytes),
        stuck_percentage=stuck_percentage if stuck else None,
        failing=failing,
        fail_percentage=rng.randint(10, 99),
        running_word=rng.choice(RUNNING_WORDS),
        completed_word=rng.choice(COMPLETED_WORDS),
        failed_word=rng.choice(FAILED_WORDS),
        percent_style=rng.choice(PERCENT_STYLES),
        zulu=rng.random() < 0.5,
        status_is_json=rng.random() < 0.5,
        tags=(f"rack=R{index // 40:03d}", f"role={rng.choice(ROLES)}"),
    )
