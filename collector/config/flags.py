"""An inventory from the command line: the incident one-liner.

    collector run --region cn-north-4 --project ID [--project ID ...] --discover [--select EXPR]
    collector run --region cn-north-4 --project ID --server ID [ID ...]

It is the same frozen `Inventory` a file gives (with no path), and its values pass the file's
own checks (`collector.config.inventory`: a project id, a region, an endpoint, a server id),
each problem told against the flag that gave it. As an inventory without ``auth``, credentials
are looked up at run time as the SDK does (``HUAWEICLOUD_SDK_AK``/``_SK``, the credentials
file, pod identity, the metadata service); TLS verifies against the system's CAs; the settings
are the flags'. ``--endpoint`` replaces the endpoint the region gives (a private endpoint, the
simulator); the region then still names IAM's, when one is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.auth import region_of
from collector.config.inventory import (
    PROJECT_ID_HINT,
    DiscoverSpec,
    Inventory,
    Project,
    Server,
    endpoint_of,
    project_id_problem,
    region_problem,
)
from collector.config.names import check_file_name
from collector.config.urls import url_problem
from collector.errors import UsageError
from collector.text import quoted

__all__ = ["FleetFlags", "inventory_from_flags"]


@dataclass(frozen=True, slots=True)
class FleetFlags:
    """What the command line says about the fleet, instead of an inventory file."""

    region: str | None = None
    endpoint: str | None = None
    projects: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    discover: bool = False

    @property
    def given(self) -> list[str]:
        """The flags given, as typed: to say which ones clash with -i."""
        named = {
            "--region": self.region,
            "--endpoint": self.endpoint,
            "--project": self.projects,
            "--server": self.servers,
            "--discover": self.discover,
        }
        return [flag for flag, value in named.items() if value]


def inventory_from_flags(flags: FleetFlags) -> Inventory:
    """The inventory `flags` describe; `UsageError` for the first problem, naming its flag."""
    if not flags.projects:
        raise UsageError(
            "no fleet given: -i INVENTORY, or --project ID with --region (and --discover or --server ID)",
            "e.g. collector run --region cn-north-4 --project ID --discover",
        )
    for project_id in flags.projects:
        problem = project_id_problem(project_id)
        if problem:
            raise UsageError(f"--project {problem}", PROJECT_ID_HINT)
    if not flags.discover and not flags.servers:
        raise UsageError(
            "which servers? --project needs --discover (all the project's servers, or those --select picks) "
            "or --server ID ...",
            "e.g. collector run --region cn-north-4 --project ID --discover --select 'name:db-*'",
        )
    if flags.servers and len(flags.projects) > 1:
        raise UsageError(
            f"--server names servers of one project, and {len(flags.projects)} --project are given",
            "run once per project, or write an inventory (configs/example-inventory.yaml)",
        )
    for server_id in flags.servers:
        problem = check_file_name(server_id)
        if problem:
            raise UsageError(
                f"--server {quoted(server_id)} cannot be a server id: {problem}",
                "give the id exactly as CloudDC lists it",
            )
    region = flags.region
    if region is not None:
        wrong = region_problem(region)
        if wrong:
            raise UsageError(f"--{wrong[0]}", wrong[1])
    if flags.endpoint is not None:
        problem = url_problem(flags.endpoint)
        if problem:
            raise UsageError(
                f"--endpoint is not a usable endpoint: {problem}",
                "give the API's base URL, like https://clouddc.cn-north-4.myhuaweicloud.com",
            )
        endpoint = flags.endpoint.rstrip("/")
        region = region or region_of(endpoint)
    elif region is not None:
        endpoint = endpoint_of(region)
    else:
        raise UsageError(
            "where is the API? give --region (its endpoint follows) or --endpoint URL",
            "e.g. --region cn-north-4",
        )
    servers = tuple(Server(server_id) for server_id in dict.fromkeys(flags.servers))
    discover = DiscoverSpec() if flags.discover else None
    projects = tuple(
        Project(project_id, endpoint, None, servers, region=region, discover=discover)
        for project_id in dict.fromkeys(flags.projects)
    )
    return Inventory(None, projects)
