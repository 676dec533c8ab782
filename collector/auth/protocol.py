"""The seam between the API client and whatever proves who we are.

The client builds the final `Request` (method, absolute URL, every header it will send
including ``Host``, the body) and hands it to its project's `Credentials` last, just before
sending: a token provider adds ``X-Auth-Token``, an AK/SK provider signs exactly those bytes.
`apply` returns an opaque *generation*; when the API answers 401 the client passes it back to
`rejected`, which refreshes the credential once for every task that was using it (single
flight) and says whether a different one is now available (resend once) or not (fatal).

Everything here is free of secrets in its reprs and messages: the header values a provider
adds are hidden from `Request`'s repr, and `CredentialsUnavailable` only ever names where a
secret was looked for.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Protocol

import yarl


@dataclass
class Request:
    """The final request, exactly as it goes on the wire.

    `url` is absolute; ``url.raw_path`` and ``url.raw_query_string`` are what is sent. `headers`
    holds every header the client sets itself, ``Host`` included; providers add theirs in
    place. Headers aiohttp adds on its own (``User-Agent``, ``Accept-Encoding``,
    ``Content-Length``) are not signed, which the gateway allows.
    """

    method: str
    url: yarl.URL
    headers: dict[str, str] = field(repr=False)  # after `apply` they hold a token or a signature
    body: bytes = field(default=b"", repr=False)
    project_id: str | None = None


class Credentials(Protocol):
    """What the API client asks, for each request and on each 401."""

    async def apply(self, request: Request) -> object:
        """Add this provider's headers to `request` in place (last, after every other header is
        final), and return an opaque token for the credential used."""
        ...

    async def rejected(self, generation: object) -> bool:
        """A 401 came back for a request sent with `generation`.

        Refreshes (once, for every task that calls this with the same generation) if that is
        still the current credential. True: a different, fresh credential is available now,
        send the request again, once. False: nothing fresher can be had; the run must stop
        (exit 3). May raise `AuthError` (the credential source itself refused us, a clearer
        reason than the API's 401) or a `RequestError` (the source could not be reached).
        """
        ...

    def describe(self) -> str:
        """Kind and source, for logs: ``AK/SK from $HUAWEICLOUD_SDK_AK``; never a secret."""
        ...


class CredentialsUnavailable(Exception):
    """The credential cannot be had: variable unset, file missing, value unusable.

    `message` and `hint` name where the secret was looked for, never the secret itself.
    `option` is the spec option at fault (``ak_env``), when there is one, so the inventory can
    point at that key.
    """

    def __init__(self, message: str, hint: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.option = option


_serials = itertools.count(1)


class Generation:
    """One issued credential, as `apply` reports it and `rejected` gets it back. Opaque."""

    __slots__ = ("forced", "issued_at", "owner", "serial")

    def __init__(self, issued_at: float, *, forced: bool = False, owner: object = None) -> None:
        self.serial = next(_serials)
        self.issued_at = issued_at
        self.forced = forced  # fetched because the previous one was rejected
        self.owner = owner  # the refresher that issued it

    def __repr__(self) -> str:
        return f"<credential generation {self.serial}>"


def set_headers(headers: MutableMapping[str, str], new: Mapping[str, str]) -> None:
    """Set `new` in `headers`, replacing any header of the same name in another letter case."""
    lowered = {name.lower() for name in new}
    for name in [name for name in headers if name.lower() in lowered]:
        del headers[name]
    headers.update(new)


def host_header(url: yarl.URL) -> str:
    """The ``Host`` aiohttp sends for `url`: the port only when it is not the scheme's default."""
    return url.host_port_subcomponent or ""
