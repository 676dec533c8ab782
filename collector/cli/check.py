"""Asking the API before a run: `collector check` and `collector validate --discover`.

`check` sends each project one authenticated ListServers with ``limit=1``, through the
machinery a run uses: the run's session (proxies, timeouts), one gateway per endpoint
(`collector.clouddc.gateway`: its rate limiter, `EndpointHealth` and retry budget), the retry
policy, and the credentials the run would use (the
SDK's lookup for projects without auth, `collector.run.prepare.with_credentials`). It is the
cheapest authenticated call there is, and what ``discover:`` needs anyway. What changes is
patience: an endpoint that never answers is given up after `timeout` seconds (10) instead of
the run's 30, a connection attempt waits no longer than that, and retries of an endpoint that
answers badly end within `MAX_ELAPSED` seconds.

`validate --discover` runs a run's discovery (`collector.run.prepare.discover`, each project's
``discover:`` filter, then ``--select``) and shows what it found; it sends only ListServers.

Both end the way a run does (`exit_code`): 3 when credentials were rejected (401) or may not
list servers (403: the nightly job cannot do its work with them either), else 4 when an
endpoint could not be reached, else 1 when the API answered but not usefully (5xx, a reply
that makes no sense), else 0. Credentials first, as `collector.run.outcome.exit_code` decides:
they are the operator's to fix, and a 401 proves the endpoint answers.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import aiohttp
import anyio

from collector.clouddc.api import CloudDC
from collector.clouddc.discovery import DiscoveredServer, merge_discovered, parse_server_page, unusable
from collector.clouddc.gateway import LIST, Gateways
from collector.clouddc.replies import parse_json
from collector.config.inventory import DiscoverSpec, Inventory, Project
from collector.config.settings import Settings
from collector.control.endpoint import Unreachable
from collector.errors import AuthError, CollectorError, ExitCode, Forbidden, RequestError
from collector.run.prepare import chooser, discover, with_credentials
from collector.text import clean_text

DEFAULT_TIMEOUT = 10.0  # seconds an endpoint may take to answer at all
MAX_ELAPSED = 60.0  # seconds of retries against an endpoint that answers, but badly


class Verdict(enum.Enum):
    """How one project's check ended; the exit code follows from the worst (`exit_code`)."""

    OK = "ok"
    REJECTED = "rejected"  # 401, or the credential source refused: exit 3
    FORBIDDEN = "forbidden"  # 403: the credentials work, but may not list servers: exit 3
    UNREACHABLE = "unreachable"  # the endpoint (or the credential source) never answered: exit 4
    FAILED = "failed"  # it answered, with an error or nonsense: exit 1


def verdict_of(exc: CollectorError) -> Verdict:
    if isinstance(exc, Forbidden):
        return Verdict.FORBIDDEN
    if isinstance(exc, AuthError):
        return Verdict.REJECTED
    if isinstance(exc, (Unreachable, RequestError)):
        return Verdict.UNREACHABLE
    return Verdict.FAILED


def exit_code(verdicts: Iterable[Verdict]) -> ExitCode:
    """The worst of `verdicts`, in `collector.run.outcome.exit_code`'s order: 3, then 4, then 1."""
    found = set(verdicts)
    if found & {Verdict.REJECTED, Verdict.FORBIDDEN}:
        return ExitCode.AUTH
    if Verdict.UNREACHABLE in found:
        return ExitCode.UNREACHABLE
    if Verdict.FAILED in found:
        return ExitCode.PARTIAL
    return ExitCode.OK


def patient_for(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> Settings:
    """`settings` with a check's patience: see the module's docstring."""
    policy = replace(settings.policy, max_elapsed=min(settings.policy.max_elapsed, MAX_ELAPSED))
    return replace(settings, dead_after=timeout, connect_timeout=min(settings.connect_timeout, timeout), policy=policy)


@dataclass(frozen=True, slots=True)
class ProjectCheck:
    """One project's answer to `check`: its line says it all."""

    project_id: str
    endpoint: str
    credentials: str  # kind and source, never a secret
    verdict: Verdict
    servers: int | None = None  # the listing's count, or (not `exact`) how many the page held
    exact: bool = False
    error: str | None = None
    answered: bool = False  # the endpoint answered (any status), so it is reachable

    def line(self) -> str:
        head = f"{self.project_id}  {self.endpoint}  "
        reached = "reachable, " if self.answered else ""
        if self.verdict is Verdict.OK:
            return (
                f"{head}ok: reachable, credentials accepted ({self.credentials}), {_visible(self.servers, self.exact)}"
            )
        if self.verdict is Verdict.REJECTED:
            return (
                f"{head}FAILED: {reached}credentials rejected ({self.credentials}): {self.error}; "
                "give valid credentials"
            )
        if self.verdict is Verdict.FORBIDDEN:
            return (
                f"{head}FAILED: reachable, credentials accepted ({self.credentials}) but not allowed to "
                f"list servers: {self.error}; give these credentials CloudDC access to this project's "
                "servers (listing them and exporting their logs)"
            )
        if self.verdict is Verdict.UNREACHABLE:
            return f"{head}FAILED: unreachable: {self.error}"
        return f"{head}FAILED: {reached}{LIST} did not succeed: {self.error}"


def _visible(servers: int | None, exact: bool) -> str:
    if exact:
        return f"{servers:,} server{'s' * (servers != 1)} visible"
    return f"at least {servers:,} server{'s' * (servers != 1)} visible"


async def check_inventory(
    inventory: Inventory, settings: Settings, session: aiohttp.ClientSession, *, environ: Mapping[str, str]
) -> list[ProjectCheck]:
    """Every project's check, in inventory order; they run at once."""
    inventory = await with_credentials(inventory, environ)
    gateways = Gateways(session, settings)
    results: list[ProjectCheck | None] = [None] * len(inventory.projects)

    async def check(index: int, project: Project) -> None:
        client = CloudDC.for_project(gateways, project)
        results[index] = await check_project(project, client)

    async with anyio.create_task_group() as tasks:
        for index, project in enumerate(inventory.projects):
            tasks.start_soon(check, index, project)
    return [result for result in results if result is not None]


async def check_project(project: Project, client: CloudDC) -> ProjectCheck:
    """One ListServers with ``limit=1`` for `project`, and what it proves."""
    described = project.describe_credentials()
    try:
        body = await client.list_servers_page(None, limit=1)
        servers, exact = servers_visible(body)
    except CollectorError as exc:
        return ProjectCheck(
            project.project_id,
            project.endpoint,
            described,
            verdict_of(exc),
            error=_reason(exc, project.endpoint),
            answered=client.health.answered_once,
        )
    return ProjectCheck(project.project_id, project.endpoint, described, Verdict.OK, servers, exact, answered=True)


def servers_visible(body: bytes) -> tuple[int, bool]:
    """How many servers a ListServers answer says there are: its ``count`` (exact), else the
    servers on the page, plus one if another page follows (a lower bound)."""
    page = parse_server_page(body)
    value = parse_json(body, operation=LIST)
    count = value.get("count") if isinstance(value, dict) else None
    if isinstance(count, int) and not isinstance(count, bool) and count >= len(page.servers):
        return count, True
    return len(page.servers) + (page.next_marker is not None), False


def _reason(exc: CollectorError, endpoint: str) -> str:
    """The error for a line that already names the endpoint."""
    text = str(exc)
    prefix = f"API unreachable: {endpoint}: "
    return clean_text(text[len(prefix) :] if text.startswith(prefix) else text, 400)


# -- validate --discover ----------------------------------------------------------------------


@dataclass
class Discovery:
    """What discovery found for one project with ``discover:``."""

    project: Project  # as the inventory gives it, credentials settled
    found: int = 0  # entries ListServers listed
    chosen: list[DiscoveredServer] = field(default_factory=list)  # usable, and picked by the filter
    unusable: list[DiscoveredServer] = field(default_factory=list)  # picked, but cannot be collected
    error: CollectorError | None = None

    @property
    def verdict(self) -> Verdict:
        return Verdict.OK if self.error is None else verdict_of(self.error)

    def line(self) -> str:
        project = self.project
        head = f"{project.project_id}  {project.endpoint}  "
        if self.error is not None:
            return f"{head}discovery FAILED: {_reason(self.error, project.endpoint)}"
        listed = f"{len(project.servers):,} listed + " if project.servers else ""
        line = (
            f"{head}{listed}{self.found:,} found by {LIST}, {len(self.chosen):,} chosen by "
            f"{describe_filter(project.discover)}"
        )
        if self.unusable:
            line += f", {len(self.unusable):,} unusable"
        return f"{line}  ({project.describe_credentials()})"


def describe_filter(spec: DiscoverSpec | None) -> str:
    if spec is None:
        return "nothing (no discover:)"
    terms = ([f"name {clean_text(spec.name, 60)}"] if spec.name else []) + [
        f"tag {clean_text(key, 40)}={clean_text(glob, 60)}" for key, glob in spec.tags.items()
    ]
    return "discover: " + (", ".join(terms) if terms else "true")


async def discover_inventory(
    inventory: Inventory, settings: Settings, session: aiohttp.ClientSession, *, environ: Mapping[str, str]
) -> tuple[Inventory, list[Discovery]]:
    """The inventory a run would sweep (before ``--select``), and what each ``discover:`` found.

    As `collector.run.prepare.prepare` does, a project at a time; a project whose listing fails
    keeps its listed servers and its `Discovery` holds the error.
    """
    inventory = await with_credentials(inventory, environ)
    gateways = Gateways(session, settings)
    projects, found = [], []
    for project in inventory.projects:
        if project.discover is None:
            projects.append(project)
            continue
        result = Discovery(project)
        found.append(result)
        try:
            listed = await discover(project, gateways)
        except CollectorError as exc:
            result.error = exc
            projects.append(project)
            continue
        wanted = chooser(project)
        picked = [server for server in listed if wanted(server)]
        result.found = len(listed)
        result.chosen = [server for server in picked if server.usable]
        result.unusable = unusable(project.servers, picked)
        projects.append(replace(project, servers=merge_discovered(project.servers, picked)))
    return replace(inventory, projects=tuple(projects)), found
