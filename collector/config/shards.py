"""Split one fleet over the pods of a Kubernetes Indexed Job: `--shard K/N`.

Each of N pods runs `collector run --shard $(JOB_COMPLETION_INDEX)/N` with the whole inventory
and keeps only its share of the servers. No pod talks to another, so the split must come out
the same in every pod, in every retry of a pod, and whatever order the inventory lists servers
in: a server's shard is a hash of its ids, `shard_of`, never its position in the file. The
shards are disjoint and together cover the fleet, for any N.

Each shard keeps its own journal (`state_dir`) and writes its own report (`report_name`);
`collector.observe.merge` puts the reports together afterwards. Kubernetes numbers a Job's pods from 0
(`JOB_COMPLETION_INDEX`), and so do we: the shards of N are 0/N .. (N-1)/N.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from collector.config.inventory import Inventory
from collector.config.settings import JOURNAL_DIR
from collector.errors import UsageError
from collector.text import quoted

__all__ = ["MAX_SHARDS", "Shard", "parse_report_name", "parse_shard", "shard_of"]

MAX_SHARDS = 100_000  # far beyond any useful split; keeps the numbers we parse small
_MAX_DIGITS = len(str(MAX_SHARDS))  # int() on a long digit string is slow, or refuses
# ASCII digits only (int() would take '٣' too); leading zeros are left out of the groups.
_SHARD = re.compile(r"0*([0-9]+)/0*([0-9]+)")
_MAX_TEXT = 64
_REPORT_NAME = re.compile(r"report\.shard-([0-9]+)-of-([0-9]+)\.json")
_UNEXPANDED = "JOB_COMPLETION_INDEX"
_EXAMPLE = "--shard 0/4 for the first of four shards"


def shard_of(project_id: str, server_id: str, count: int) -> int:
    """The shard of `count` that collects this server: sha256 of ``project_id/server_id``
    (UTF-8), read as a big-endian integer, modulo `count`.

    Project ids cannot hold a ``/`` and server ids cannot either, so no two servers hash the
    same text. Changing this function moves servers between shards: pods of one Job built
    from two versions would then collect some servers twice and others never (the merge
    names them), which is why tests/test_shards.py pins known values.
    """
    digest = hashlib.sha256(f"{project_id}/{server_id}".encode()).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count`, 0 <= index < count; build one with `parse_shard`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 0 <= self.index < self.count:
            raise ValueError(f"no shard {self.index} of {self.count}")

    @property
    def label(self) -> str:
        """``shard-K-of-N``: names this shard's state folder, report and log lines."""
        return f"shard-{self.index}-of-{self.count}"

    @property
    def report_name(self) -> str:
        """``report.shard-K-of-N.json``: what this shard writes where a whole run writes
        report.json, so that N pods can share one output folder or bucket prefix."""
        return f"report.{self.label}.json"

    def state_dir(self, out: Path | str) -> Path:
        """``OUT/.collector/shard-K-of-N``: this shard's journal and lock, apart from the
        other shards', so pods sharing a volume neither lock each other out nor resume
        each other's servers."""
        return Path(out) / JOURNAL_DIR / self.label

    def owns(self, project_id: str, server_id: str) -> bool:
        return shard_of(project_id, server_id, self.count) == self.index

    def select(self, inventory: Inventory) -> Inventory:
        """The same inventory with only this shard's servers, in their inventory order.

        A project none of whose servers fall here is left out; a shard may be left with no
        servers at all (a small fleet over many pods), which is an `Inventory` with no
        projects: its run collects nothing and reports zero servers. Settings, path,
        endpoints and credentials are the inventory's own, shared, not copied.
        """
        projects = []
        for project in inventory.projects:
            mine = tuple(s for s in project.servers if self.owns(project.project_id, s.id))
            if mine:
                projects.append(dataclasses.replace(project, servers=mine))
        return dataclasses.replace(inventory, projects=tuple(projects))

    def rate(self, rate: float) -> float:
        """This shard's starting request rate when the fleet's is `rate`.

        The N pods call the same endpoints, so the API's budget is shared: each starts at
        its share and the limiter learns the rest from the API's answers.
        """
        return rate / self.count


def parse_shard(text: str, *, flag: str = "--shard") -> Shard:
    """``"K/N"`` as `Shard(K, N)`, or `UsageError` saying what is wrong and what to give.

    In a Job's args ``--shard $(JOB_COMPLETION_INDEX)/N`` arrives already expanded by
    Kubernetes, as plain numbers. It arrives as written when the variable was not defined
    for the container (the Job is not ``completionMode: Indexed``, or this is not a Job):
    that case gets its own hint.
    """
    if _UNEXPANDED in text:
        raise UsageError(
            f"{flag} {quoted(text)}: JOB_COMPLETION_INDEX was not expanded",
            hint="Kubernetes sets it only in the pods of a Job with completionMode: Indexed;"
            f" outside such a Job give the index yourself, like {_EXAMPLE}",
        )
    # Bounded before the pattern sees it: 0* then [0-9]+ backtracks on a long run of zeros.
    match = _SHARD.fullmatch(text.strip()) if len(text) <= _MAX_TEXT else None
    if match is None:
        raise UsageError(
            f"{flag} {quoted(text)}: expected K/N, two whole numbers",
            hint=f"give this pod's index K (from 0) and the number of shards N, like {_EXAMPLE}",
        )
    index_text, count_text = match.groups()
    if len(count_text) > _MAX_DIGITS or int(count_text) > MAX_SHARDS:
        raise UsageError(
            f"{flag} {quoted(text)}: more than {MAX_SHARDS} shards",
            hint=f"split the fleet into at most {MAX_SHARDS} shards",
        )
    count = int(count_text)
    if count == 0:
        raise UsageError(
            f"{flag} {quoted(text)}: there must be at least 1 shard",
            hint=f"N is the number of shards, the Job's completions, like {_EXAMPLE}",
        )
    if len(index_text) > _MAX_DIGITS or int(index_text) >= count:
        raise UsageError(
            f"{flag} {quoted(text)}: the index must be below the number of shards",
            hint=f"shards are numbered from 0, as JOB_COMPLETION_INDEX is: 0/{count} to {count - 1}/{count}",
        )
    return Shard(int(index_text), count)


def parse_report_name(name: str) -> Shard | None:
    """The shard whose report is called `name` (``report.shard-K-of-N.json``, nothing more),
    or None if `name` is not a possible shard report's name."""
    match = _REPORT_NAME.fullmatch(name)
    if match is None:
        return None
    index_text, count_text = match.groups()
    if max(len(index_text), len(count_text)) > _MAX_DIGITS:
        return None
    index, count = int(index_text), int(count_text)
    if not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
        return None
    shard = Shard(index, count)
    # One spelling per shard: report.shard-01-of-4.json would be a second report for shard 1.
    return shard if shard.report_name == name else None
