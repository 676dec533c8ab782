"""Before the sweep: credentials looked up, servers discovered, the selection applied.

The inventory says what to do; some of it can only be settled in the event loop, with the
run's session: projects without `auth` take the credentials the SDK would find (once, for
all of them), projects with `discover` list their servers through ListServers (paged, through
the run's gateway for their endpoint: the rate limiter, endpoint health, retry budget,
credentials and metrics the sweep then uses too, so an endpoint given up here is given up for
the run), and `--select` then picks
among listed and discovered servers alike. The sweep gets a plain inventory and the total is
known before it starts, for the progress display.

Discovered entries that cannot be collected (an id unsafe as a file name) are not dropped in
silence: they come back as `Rejected`, and the runner reports them failed with the reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import aiohttp

from collector.auth import CredentialsUnavailable, default_chain
from collector.clouddc.api import CloudDC
from collector.clouddc.discovery import (
    PAGE_LIMIT,
    DiscoveredServer,
    PageCursor,
    discover_filter,
    merge_discovered,
    parse_server_page,
    unusable,
)
from collector.clouddc.gateway import Gateways
from collector.config.inventory import Inventory, Project, Server
from collector.config.select import Selection, unmatched_line
from collector.config.settings import Settings
from collector.config.shards import Shard
from collector.errors import CollectorError, UsageError
from collector.log import ev

log = logging.getLogger("collector.run")


@dataclass(frozen=True, slots=True)
class DiscoveryFailed:
    """A project whose ListServers failed: its listed servers are still swept; the report
    says, at run level, what is missing (it is not a server)."""

    project_id: str
    endpoint: str
    error: str
    error_kind: str
    exc: CollectorError | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, str]:
        return {
            "project_id": self.project_id,
            "endpoint": self.endpoint,
            "error": self.error,
            "error_kind": self.error_kind,
        }


@dataclass(frozen=True, slots=True)
class Rejected:
    """A discovered server that cannot be collected, and why."""

    project_id: str
    server_id: str  # a printable rendering, never a file name
    name: str | None
    reason: str
    kind: str = "protocol"  # the error's kind, for the summary


async def prepare(
    inventory: Inventory,
    settings: Settings,
    session: aiohttp.ClientSession,
    *,
    selection: Selection | None = None,
    shard: Shard | None = None,
    environ: Mapping[str, str] | None = None,
    gateways: Gateways | None = None,
) -> tuple[Inventory, list[Rejected], list[DiscoveryFailed]]:
    """The inventory the sweep takes, the discovered servers it cannot, and the projects whose
    discovery failed.

    Discovery sends through `gateways`, the run's (made here if not given). Every shard
    discovers the whole fleet and keeps its own part, page by page as the listing arrives:
    the split depends only on the servers' ids, so the shards agree without talking to each
    other. A `selection` is judged on the whole fleet (a term no server matches is reported,
    whichever shard would own it), so with one every server is kept until it has been applied.
    """
    if gateways is None:
        gateways = Gateways(session, settings)
    early = shard is not None and (selection is None or selection.everything)
    keep = shard.owns if shard is not None and early else None
    inventory = await with_credentials(inventory, os.environ if environ is None else environ)
    rejected: list[Rejected] = []
    failed: list[DiscoveryFailed] = []
    if any(project.discover is not None for project in inventory.projects):
        projects = []
        for project in inventory.projects:
            if project.discover is None:
                projects.append(project)
                continue
            try:
                found, listed = await discover_kept(project, gateways, keep)
            except CollectorError as exc:
                # The project's listed servers are still swept; the report says what is missing.
                log.error(
                    "%s: discovery failed: %s",
                    project.project_id,
                    exc,
                    extra=ev(
                        "discovery_failed",
                        project_id=project.project_id,
                        endpoint=project.endpoint,
                        error=str(exc),
                        error_kind=exc.kind,
                    ),
                )
                failed.append(DiscoveryFailed(project.project_id, project.endpoint, str(exc), exc.kind, exc))
                projects.append(project)
                continue
            wanted = chooser(project)
            chosen = [server for server in found if wanted(server)]
            projects.append(replace(project, servers=merge_discovered(project.servers, chosen)))
            rejected += [
                Rejected(project.project_id, s.id, s.name, s.problem or "") for s in unusable(project.servers, chosen)
            ]
            log.info(
                "%s: %d servers listed by the API, %d of them chosen by its discover: filter",
                project.project_id,
                listed,
                len(chosen),
                extra=ev(
                    "servers_discovered",
                    project_id=project.project_id,
                    endpoint=project.endpoint,
                    servers=listed,
                    chosen=len(chosen),
                ),
            )
        inventory = replace(inventory, projects=tuple(projects))
    if selection is not None and not selection.everything:
        chosen_pairs = selection.apply(inventory.targets())  # nothing at all: exit 2, no warning
        warn_unmatched(selection, inventory)
        inventory = restricted(inventory, chosen_pairs)
        rejected = [r for r in rejected if _selected(selection, r)]
    if shard is not None:
        inventory = shard.select(inventory)
        rejected = [r for r in rejected if shard.owns(r.project_id, r.server_id)]
    return inventory, rejected, failed


def warn_unmatched(selection: Selection, inventory: Inventory, flag: str = "--select") -> list[str]:
    """Warn about each term of `selection` (`flag`'s) that matches no server of `inventory`;
    return them."""
    unmatched = selection.unmatched(inventory.targets())
    if unmatched:
        log.warning(unmatched_line(unmatched, flag), extra=ev("selection_unmatched", flag=flag, terms=unmatched))
    return unmatched


async def with_credentials(inventory: Inventory, environ: Mapping[str, str]) -> Inventory:
    """Projects without `auth` get what the SDK's lookup finds, once for all of them."""
    if all(project.credentials is not None for project in inventory.projects):
        return inventory
    try:
        found = await default_chain(environ)
    except CredentialsUnavailable as exc:
        raise UsageError(f"no credentials: {exc.message}", exc.hint) from None
    except CollectorError as exc:  # a source that is there but refused us or did not answer
        raise UsageError(f"no credentials: {exc}", "fix that source, or give auth: in the inventory") from None
    log.info("credentials: %s", found.describe(), extra=ev("credentials_found", source=found.describe()))
    projects = tuple(p if p.credentials is not None else replace(p, credentials=found) for p in inventory.projects)
    return replace(inventory, projects=projects)


async def discover(project: Project, gateways: Gateways) -> list[DiscoveredServer]:
    """Every server the project lists, page by page, following `next_marker`."""
    found, _ = await discover_kept(project, gateways)
    return found


async def discover_kept(
    project: Project, gateways: Gateways, keep: Callable[[str, str], bool] | None = None
) -> tuple[list[DiscoveredServer], int]:
    """Every server the project lists, page by page, following `next_marker`, and how many
    were listed. With `keep` (a shard's `owns`), only the entries it takes are kept, as each
    page arrives."""
    client = CloudDC.for_project(gateways, project)
    cursor = PageCursor()
    found: list[DiscoveredServer] = []
    listed = 0
    while True:
        page = parse_server_page(await client.list_servers_page(cursor.marker, limit=PAGE_LIMIT))
        listed += len(page.servers)
        if keep is None:
            found += page.servers
        else:
            found += [server for server in page.servers if keep(project.project_id, server.id)]
        if not cursor.advance(page):
            return found, listed


def chooser(project: Project) -> Callable[[DiscoveredServer], bool]:
    """The project's `discover:` as a predicate: `true`, or globs on the name and tags."""
    spec = project.discover
    if spec is None:
        raise ValueError(f"{project.project_id}: no discover: to choose with")
    return discover_filter({"name": spec.name, "tags": dict(spec.tags)} if spec.name or spec.tags else True)


def restricted(inventory: Inventory, targets: Iterable[tuple[Project, Server]]) -> Inventory:
    """`inventory` with only these (project, server) pairs; projects left with none are dropped."""
    chosen: dict[int, list[Server]] = {}
    for project, server in targets:
        chosen.setdefault(id(project), []).append(server)
    projects = tuple(replace(p, servers=tuple(chosen[id(p)])) for p in inventory.projects if id(p) in chosen)
    return replace(inventory, projects=projects)


def _selected(selection: Selection, rejected: Rejected) -> bool:
    return selection.matches(rejected.project_id, Server(rejected.server_id, rejected.name))
