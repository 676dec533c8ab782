"""Where a run's output goes, from the `-o` text: a local folder or `s3://BUCKET/PREFIX`.

Parsed and checked before the event loop starts, like the inventory: a bad URL is a
`UsageError` with a hint, and nothing is sent. `obs://` (Huawei Cloud OBS) is the same as
`s3://` but has no default endpoint, so it needs one.

The prefix may hold `{date}` and `{datetime}`, the UTC time of parsing, so a nightly job
writes each night under its own prefix: `{date}` is `2026-11-30`, `{datetime}` is
`2026-11-30T0405Z`. Both sort as text in time order, and neither has a colon (awkward in
keys that tools map to file names). The expansion happens once, so every object of a run
shares it.

The endpoint is, in order: the `endpoint_url` given (a command-line option), then the
standard `AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL` (as the AWS SDKs read them, unless
`AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true), else AWS's own. Credentials and region are
left to botocore's usual chain, except that an OBS endpoint
(`https://obs.REGION.myhuaweicloud.com`) gives the region when none is set. This module does
not import aiobotocore: a local run never loads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from collector.config.urls import url_problem
from collector.errors import UsageError

if TYPE_CHECKING:
    from collector.destinations.s3 import S3Destination

SCHEMES = ("s3", "obs")
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
ENDPOINT_OPTION = "--s3-endpoint"
MAX_PREFIX_BYTES = 768  # S3 keys are at most 1024 bytes; leave room for the archive names

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FORMATS = {"date": "%Y-%m-%d", "datetime": "%Y-%m-%dT%H%MZ"}
_URL_FORMS = "s3://BUCKET/PREFIX or obs://BUCKET/PREFIX"
_OBS_HOST = re.compile(r"^obs\.([a-z0-9-]+)\.myhuaweicloud\.com$")


@dataclass(frozen=True)
class LocalLocation:
    path: Path


@dataclass(frozen=True)
class S3Location:
    """A bucket and prefix in object storage, and where to reach it."""

    bucket: str
    prefix: str  # without leading or trailing slashes; placeholders expanded
    endpoint_url: str | None = None
    region: str | None = None
    scheme: str = "s3"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}" if self.prefix else f"{self.scheme}://{self.bucket}"

    def open(self, **options: Any) -> S3Destination:
        """An `S3Destination` for this location (enter it with ``async with``)."""
        from collector.destinations.s3 import S3Destination

        return S3Destination(self.bucket, self.prefix, endpoint_url=self.endpoint_url, region=self.region, **options)


def parse_destination(
    text: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> LocalLocation | S3Location:
    """Parse `-o`: a folder, or an object-storage URL. Raises `UsageError` with a hint."""
    match = _URL.match(text)
    if match is None:
        if endpoint_url:
            raise UsageError(f"{ENDPOINT_OPTION} is for object storage", hint=f"give -o as {_URL_FORMS}")
        return LocalLocation(Path(_expand(text, now or datetime.now(UTC))))
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise UsageError(f"-o: unsupported URL scheme '{_printable(scheme)}:'", hint=f"give a folder, or {_URL_FORMS}")
    if not match.group(2):
        raise UsageError(f"-o: '{scheme}:' must be followed by //BUCKET", hint=f"give {_URL_FORMS}")
    env = os.environ if env is None else env
    bucket, prefix = _split(text[match.end() :], scheme)
    prefix = _expand(prefix, now or datetime.now(UTC))
    endpoint = _endpoint(endpoint_url, env)
    if scheme == "obs" and endpoint is None:
        raise UsageError(
            "obs:// needs the OBS endpoint of the bucket's region",
            hint=f"give {ENDPOINT_OPTION} https://obs.REGION.myhuaweicloud.com or set AWS_ENDPOINT_URL_S3",
        )
    if region is None and not env.get("AWS_DEFAULT_REGION") and endpoint is not None:
        region = _obs_region(endpoint)
    return S3Location(bucket, prefix, endpoint, region, scheme)


def _split(rest: str, scheme: str) -> tuple[str, str]:
    """`BUCKET/PREFIX` into the bucket and a normalised prefix."""
    if "?" in rest or "#" in rest:
        raise UsageError("-o: the URL cannot have a query (?) or fragment (#)", hint=f"give {_URL_FORMS}")
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        # Never echo it: this is where someone puts ACCESS:SECRET@.
        raise UsageError(
            "-o: the URL cannot carry credentials or a port",
            hint=f"give {scheme}://BUCKET/PREFIX; credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            f"or a profile, the endpoint from {ENDPOINT_OPTION}",
        )
    if not bucket:
        raise UsageError("-o: the URL has no bucket", hint=f"give {scheme}://BUCKET/PREFIX")
    if not _BUCKET.match(bucket) or ".." in bucket or _IP.match(bucket):
        raise UsageError(
            f"-o: '{_printable(bucket)}' is not a valid bucket name",
            hint="bucket names are 3 to 63 lowercase letters, digits, dots and hyphens, "
            "starting and ending with a letter or digit",
        )
    prefix = prefix.strip("/")
    if any(not c.isprintable() or c == "\\" for c in prefix):
        raise UsageError(
            "-o: the prefix has control characters or a backslash", hint="use letters, digits, - _ . and /"
        )
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise UsageError(
            f"-o: prefix '{prefix}' has an empty, '.' or '..' segment",
            hint="write it as folder names separated by single slashes",
        )
    return bucket, prefix


def _expand(prefix: str, now: datetime) -> str:
    """Put the UTC date or time in place of `{date}` and `{datetime}`."""
    now = now.astimezone(UTC)

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in _FORMATS:
            raise UsageError(
                f"-o: unknown placeholder '{{{name}}}' in the prefix",
                hint="the prefix may use {date} (2026-11-30) and {datetime} (2026-11-30T0405Z), in UTC",
            )
        return now.strftime(_FORMATS[name])

    expanded = _PLACEHOLDER.sub(value, prefix)
    if "{" in expanded or "}" in expanded:
        raise UsageError("-o: unmatched brace in the prefix", hint="placeholders are written {date} and {datetime}")
    if len(expanded.encode()) > MAX_PREFIX_BYTES:
        raise UsageError(f"-o: the prefix is longer than {MAX_PREFIX_BYTES} bytes", hint="use a shorter prefix")
    return expanded


def _endpoint(given: str | None, env: Mapping[str, str]) -> str | None:
    if given:
        return _check_endpoint(given, ENDPOINT_OPTION)
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    for variable in ENDPOINT_VARIABLES:
        if env.get(variable):
            return _check_endpoint(env[variable], variable)
    return None


def _check_endpoint(url: str, source: str) -> str:
    """An http(s) URL with a host, and nothing secret in it. Its text is never shown: it may
    hold credentials."""
    problem = url_problem(url)
    if problem is not None:
        raise UsageError(
            f"{source}: not a usable object-storage endpoint: {problem}",
            hint="give it as https://HOST[:PORT], e.g. https://obs.cn-north-4.myhuaweicloud.com; credentials "
            "come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile",
        )
    return url.rstrip("/")


def _obs_region(endpoint: str) -> str | None:
    """OBS signs with the region its endpoint names (obs.cn-north-4.myhuaweicloud.com); botocore
    would otherwise sign for us-east-1 and be refused."""
    match = _OBS_HOST.match(urlsplit(endpoint).hostname or "")
    return match.group(1) if match else None


def _printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")[:80]
