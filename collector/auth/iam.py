"""IAM password tokens: a user name and password exchanged for a token per project.

``POST {iam}/v3/auth/tokens`` with the password identity, scoped to the project id, answers
201 with the token in ``X-Subject-Token`` and its end in the body's ``token.expires_at``
(24 h after issue). Each project the run touches gets its own token, fetched when first
needed, refreshed ahead of its end, once for every task (`Refresher`). We ask with
``nocatalog=true``: the service catalogue is tens of KiB we do not read.

The password stays in memory only, out of every repr and message; the token is never logged.
The endpoint must be https, except on loopback (tests), so the password never crosses a
network in the clear. IAM's 401/403 (wrong password, user locked) are `AuthError`: exit 3.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

import yarl

from collector.auth.http import (
    DEFAULT_TIMEOUT,
    Answer,
    SessionFactory,
    default_session,
    exchange,
    json_object,
    status_error,
)
from collector.auth.keys import is_word, parse_time
from collector.auth.protocol import Request, set_headers
from collector.auth.refresh import DEFAULT_REFRESH, Clock, Refresher, RefreshPolicy
from collector.errors import ProtocolError, UsageError

_MAX_ANSWER = 1024 * 1024
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
# clouddc.cn-east-3.myhuaweicloud.com -> cn-east-3
_REGION_HOST = re.compile(r"^[a-z0-9-]+\.([a-z]{2,}-[a-z]+-\d{1,2})\.(?:my)?huaweicloud\.com$")


def iam_endpoint(region: str) -> str:
    return f"https://iam.{region}.myhuaweicloud.com"


def region_of(endpoint: str) -> str | None:
    """The region in a Huawei Cloud endpoint's host name (``clouddc.cn-east-3...`` -> ``cn-east-3``)."""
    match = _REGION_HOST.match(yarl.URL(endpoint).host or "")
    return match.group(1) if match else None


def is_loopback(url: yarl.URL) -> bool:
    return (url.host or "") in _LOOPBACK


@dataclass(frozen=True, slots=True)
class Password:
    value: str = field(repr=False)
    source: str  # "$IAM_PASSWORD" or "/run/secrets/iam-password"


class IamPassword:
    """A token per project id, from IAM, for the user `user` of account (domain) `domain`."""

    def __init__(
        self,
        *,
        endpoint: str,
        domain: str,
        user: str,
        password: Password,
        session_factory: SessionFactory = default_session,
        clock: Clock = time.time,
        policy: RefreshPolicy = DEFAULT_REFRESH,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoint = yarl.URL(endpoint.rstrip("/"))
        self.domain = domain
        self.user = user
        self._password = password
        self._session_factory = session_factory
        self._clock = clock
        self._policy = policy
        self._timeout = timeout
        self._tokens: dict[str, Refresher[str]] = {}

    def __repr__(self) -> str:
        return f"<IamPassword {self.describe()}>"

    def describe(self) -> str:
        return (
            f"IAM token of user {self.user} (account {self.domain}) from {self.endpoint}, "
            f"password from {self._password.source}"
        )

    def refresher(self, project_id: str) -> Refresher[str]:
        if project_id not in self._tokens:

            async def fetch() -> tuple[str, float]:
                return await self._fetch(project_id)

            self._tokens[project_id] = Refresher(
                fetch, clock=self._clock, policy=self._policy, what=f"IAM token for project {project_id}"
            )
        return self._tokens[project_id]

    async def apply(self, request: Request) -> object:
        if not request.project_id:
            raise UsageError(
                "an IAM password token is scoped to a project, and this request names none",
                hint="give the project's id (a bug if it happens in collector run)",
            )
        lease = await self.refresher(request.project_id).get()
        set_headers(request.headers, {"X-Auth-Token": lease.value})
        return lease.generation

    async def rejected(self, generation: object) -> bool:
        for refresher in self._tokens.values():
            if refresher.owns(generation):
                return await refresher.rejected(generation)
        return False

    async def _fetch(self, project_id: str) -> tuple[str, float]:
        operation = f"IAM token for project {project_id}"
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"domain": {"name": self.domain}, "name": self.user, "password": self._password.value}
                    },
                },
                "scope": {"project": {"id": project_id}},
            }
        }
        answer = await exchange(
            self._session_factory,
            "POST",
            (self.endpoint / "v3" / "auth" / "tokens").with_query(nocatalog="true"),
            operation=operation,
            headers={"Content-Type": "application/json;charset=UTF-8", "Accept": "application/json"},
            body=json.dumps(body).encode(),
            deadline=self._timeout,
            max_body=_MAX_ANSWER,
        )
        if answer.status not in (200, 201):
            raise status_error(operation, answer, sent=(self._password.value,))
        return _token(answer, operation), _expires_at(answer, operation)


def _token(answer: Answer, operation: str) -> str:
    token = answer.headers.get("X-Subject-Token", "").strip()
    if not token:
        raise ProtocolError(f"{operation}: IAM answered {answer.status} without X-Subject-Token")
    if not is_word(token):
        raise ProtocolError(f"{operation}: X-Subject-Token is not one word of printable ASCII")
    return token


def _expires_at(answer: Answer, operation: str) -> float:
    token = json_object(answer, operation).get("token")
    expires = token.get("expires_at") if isinstance(token, dict) else None
    if not isinstance(expires, str):
        raise ProtocolError(f"{operation}: the answer has no token.expires_at")
    return parse_time(expires, operation, "token.expires_at")
