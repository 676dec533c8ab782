"""ECS metadata: the temporary AK/SK of the agency attached to the server we run on.

As the SDK's ``MetadataAccessor`` does: a session token first (``PUT
/meta-data/latest/api/token`` with ``X-Metadata-Token-Ttl-Seconds``; where that API is absent,
404/405/503, we go on without one and ask again a day later), then ``GET
/openstack/latest/securitykey`` with ``X-Metadata-Token``; a 401 that is not "configure an
agency first" means the session token ended, so it is fetched again and the key asked for
once more. The answer carries temporary keys and their end.

The endpoint is the link-local http://169.254.169.254 unless the spec's ``endpoint`` (tests)
says otherwise. The default chain probes it with a short timeout, since most machines that
are not ECS servers simply never answer.
"""

from __future__ import annotations

import time

import yarl

from collector.auth.aksk import AkSk
from collector.auth.http import Answer, SessionFactory, default_session, exchange, json_object, status_error
from collector.auth.keys import AccessKeys, is_word, parse_temporary
from collector.auth.refresh import DEFAULT_REFRESH, Clock, Refresher, RefreshPolicy
from collector.errors import ProtocolError

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_PATH = "/meta-data/latest/api/token"
KEY_PATH = "/openstack/latest/securitykey"
TOKEN_TTL = 6 * 3600  # what we ask for, as the SDK does
RETRY_TOKEN_API = 24 * 3600  # after the token API said it does not exist
NO_AGENCY = "Please configure Cloud Service Agency first"
TIMEOUT = 3.0  # the SDK's (3, 3)
OPERATION = "ECS metadata security key"


class MetadataService:
    """Fetches the agency's temporary keys from the metadata service at `endpoint`."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        session_factory: SessionFactory = default_session,
        clock: Clock = time.time,
        timeout: float = TIMEOUT,
    ) -> None:
        self.endpoint = yarl.URL(endpoint.rstrip("/"))
        self.timeout = timeout
        self._session_factory = session_factory
        self._clock = clock
        self._token: str | None = None
        self._token_until = float("-inf")
        self._token_api_absent_at: float | None = None

    def __repr__(self) -> str:
        return f"<MetadataService {self.endpoint}>"

    async def fetch(self) -> tuple[AccessKeys, float]:
        now = self._clock()
        if now >= self._token_until and (
            self._token_api_absent_at is None or now - self._token_api_absent_at > RETRY_TOKEN_API
        ):
            await self._update_token(required=False)
        answer = await self._get_key()
        if answer.status == 401 and NO_AGENCY.encode() not in answer.body:
            await self._update_token(required=True)
            answer = await self._get_key()
        if answer.status != 200:
            raise status_error(OPERATION, answer)
        return parse_temporary(json_object(answer, OPERATION), OPERATION)

    async def _get_key(self) -> Answer:
        headers = {"X-Metadata-Token": self._token} if self._token else {}
        return await exchange(
            self._session_factory,
            "GET",
            self.endpoint.with_path(KEY_PATH),
            operation=OPERATION,
            headers=headers,
            deadline=self.timeout,
        )

    async def _update_token(self, *, required: bool) -> None:
        operation = "ECS metadata session token"
        answer = await exchange(
            self._session_factory,
            "PUT",
            self.endpoint.with_path(TOKEN_PATH),
            operation=operation,
            headers={"X-Metadata-Token-Ttl-Seconds": str(TOKEN_TTL)},
            deadline=self.timeout,
            max_body=16 * 1024,
        )
        now = self._clock()
        if answer.status == 200:
            token = answer.body.decode("ascii", "replace").strip()
            if not is_word(token):
                raise ProtocolError(f"{operation}: the token is not one word of printable ASCII")
            self._token, self._token_until, self._token_api_absent_at = token, now + TOKEN_TTL - 60, None
        elif answer.status in (404, 405, 503) and not required:
            self._token, self._token_api_absent_at = None, now
        else:
            raise status_error(operation, answer)


def metadata_credentials(
    source: MetadataService, *, clock: Clock = time.time, policy: RefreshPolicy = DEFAULT_REFRESH
) -> AkSk:
    """Requests signed with the keys `source` answers, refreshed ahead of their end."""
    description = "temporary AK/SK from the ECS metadata service (the server's agency)"
    if source.endpoint != yarl.URL(DEFAULT_ENDPOINT):
        description += f" at {source.endpoint}"
    return AkSk(Refresher(source.fetch, clock=clock, policy=policy, what=OPERATION), description, clock=clock)
