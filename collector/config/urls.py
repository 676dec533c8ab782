"""Whether a URL the user gave (an endpoint in the inventory, `--s3-endpoint`, `--pushgateway`)
is one we can send requests to: one check for all of them, so that a host yarl cannot encode
is a usage error naming where it came from, never an internal error at the first request."""

from __future__ import annotations

from urllib.parse import urlsplit

import yarl

from collector.text import unsafe_char


def url_problem(url: str, *, userinfo: bool = False) -> str | None:
    """Why `url` cannot be an http(s) URL we send requests to, or None if it can. A user name
    and password are refused unless `userinfo` (basic auth of a Pushgateway); the problem
    never repeats the URL, which may hold them."""
    if unsafe_char(url, spaces=False, unprintable=False) is not None:
        return "it contains spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port is what raises for a bad one
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "it must start with https:// (or http://)"
    if not parts.hostname:
        return "it has no host"
    try:  # what aiohttp sends (the host in IDNA) and what our messages show (it decoded)
        parsed = yarl.URL(url)
        parsed.raw_host  # noqa: B018 -- encoding the host is what raises
        parsed.host  # noqa: B018 -- and so is decoding it
    except ValueError:  # UnicodeError included
        return "its host is not a valid DNS name (IDNA: a label empty, over 63 characters, or a bad xn--)"
    if not userinfo and (parts.username is not None or parts.password is not None):
        return "it holds a user name or password"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "it has a query or fragment"
    return None
