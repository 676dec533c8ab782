"""Which archives an output holds, and whose they are: the inverse of `archive_name`.

A run writes each server's archive as ``PROJECT/SERVER-dump.tar.gz`` under the output root
(a folder, or a prefix in a bucket), and its report(s) beside them. The archive's path gives
its project and server; the report, when there is one, gives the server's name for
``--select name:...``. Nothing here reads an archive's contents.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from collector.destinations.base import archive_name
from collector.destinations.location import S3Location

SUFFIX = archive_name("p", "s").removeprefix("p/s")  # "-dump.tar.gz"
REPORT_BYTES = 64 * 1024 * 1024  # a report larger than this is not read for names


@dataclass(frozen=True, slots=True)
class Listed:
    """A server as `--select` sees it: what the output tells of it (tags it never does)."""

    id: str
    name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Project:
    project_id: str


@dataclass(frozen=True, slots=True)
class Found:
    """One archive to search: whose it is, and where (a local path or an object's name)."""

    project: str
    server: Listed
    where: str  # as messages and --json name it: a path, or s3://BUCKET/KEY
    path: str | None = None  # local
    location: S3Location | None = None  # object storage: `name` under it
    name: str = ""  # relative to the output root
    size: int = 0


def owner(name: str) -> tuple[str, str] | None:
    """(project, server) of an archive's name relative to the root, or None if it is not one."""
    project, slash, rest = name.partition("/")
    if not slash or "/" in rest or not rest.endswith(SUFFIX):
        return None
    server = rest.removesuffix(SUFFIX)
    if not project or not server or archive_name(project, server) != name:
        return None
    return project, server


def names_in_report(data: bytes) -> dict[tuple[str, str], str]:
    """(project, server) -> name, from a report's bytes; nothing if it cannot be read."""
    try:
        servers = json.loads(data).get("servers", [])
    except (ValueError, AttributeError):
        return {}
    found: dict[tuple[str, str], str] = {}
    for entry in servers if isinstance(servers, list) else []:
        if isinstance(entry, dict):
            project, server, name = entry.get("project_id"), entry.get("server_id"), entry.get("name")
            if isinstance(project, str) and isinstance(server, str) and isinstance(name, str):
                found[(project, server)] = name
    return found


def is_report(name: str) -> bool:
    return "/" not in name and name.startswith("report") and name.endswith(".json")


def local_archives(root: Path) -> list[Found]:
    """Every archive a run wrote under the folder `root`, sorted; `OSError` if it cannot be listed."""
    names: dict[tuple[str, str], str] = {}
    found: list[tuple[str, str, Path, int]] = []
    with os.scandir(root) as top:
        entries = sorted(top, key=lambda e: e.name)
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and is_report(entry.name):
            try:
                if entry.stat().st_size <= REPORT_BYTES:
                    names.update(names_in_report(Path(entry.path).read_bytes()))
            except OSError:
                pass
        elif entry.is_dir(follow_symlinks=False):
            try:
                with os.scandir(entry.path) as inner:
                    files = sorted(inner, key=lambda e: e.name)
            except OSError:
                continue
            for file in files:
                whose = owner(f"{entry.name}/{file.name}")
                if whose is not None and file.is_file(follow_symlinks=False):
                    found.append((*whose, Path(file.path), file.stat(follow_symlinks=False).st_size))
    return [
        Found(project, Listed(server, names.get((project, server))), str(path), path=str(path), size=size)
        for project, server, path, size in found
    ]


async def bucket_archives(location: S3Location) -> list[Found]:
    """Every archive under an object-storage prefix, sorted; `StorageError` if it cannot be listed."""
    async with location.open() as bucket:
        listed = sorted(await bucket.list_names())
        names: dict[tuple[str, str], str] = {}
        for name in listed:
            if is_report(name):
                data = await bucket.read_bytes(name, REPORT_BYTES)
                if len(data) <= REPORT_BYTES:
                    names.update(names_in_report(data))
        return [
            Found(
                whose[0],
                Listed(whose[1], names.get(whose)),
                bucket.where(bucket.key(name)),
                location=location,
                name=name,
            )
            for name in listed
            if (whose := owner(name)) is not None
        ]
