"""CCE pod identity: temporary AK/SK for the pod's service account, from the node's agent.

CCE sets ``HC_CONTAINER_CREDENTIALS_FULL_URI`` (the agent's URL) and
``HC_CONTAINER_AUTHORIZATION_TOKEN_FILE`` (a projected service-account token, rotated by the
kubelet). As the SDK's ``PodIdentityAccessor`` does, we POST ``{}`` to the URL with the file's
content, stripped, as ``Authorization``, and read temporary keys from the answer. The file is
read again for every fetch, since the kubelet rotates it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import yarl

from collector.auth.aksk import AkSk
from collector.auth.http import SessionFactory, default_session, exchange, json_object, status_error
from collector.auth.keys import AccessKeys, parse_temporary
from collector.auth.protocol import CredentialsUnavailable
from collector.auth.refresh import DEFAULT_REFRESH, Clock, Refresher, RefreshPolicy
from collector.auth.token import read_token_file
from collector.errors import UsageError

FULL_URI_ENV = "HC_CONTAINER_CREDENTIALS_FULL_URI"
TOKEN_FILE_ENV = "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE"
TIMEOUT = 5.0  # the SDK's (5, 5)
OPERATION = "CCE pod identity"


class PodIdentity:
    """Fetches temporary keys from the pod identity agent at `uri`."""

    def __init__(
        self, uri: str, token_file: Path, *, session_factory: SessionFactory = default_session, timeout: float = TIMEOUT
    ) -> None:
        self.uri = yarl.URL(uri)
        self.token_file = token_file
        self._session_factory = session_factory
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<PodIdentity {self.uri.host}>"

    async def fetch(self) -> tuple[AccessKeys, float]:
        try:
            token = read_token_file(self.token_file, what="pod identity token")
        except CredentialsUnavailable as exc:
            raise UsageError(f"{OPERATION}: {exc.message}", hint=exc.hint) from None
        answer = await exchange(
            self._session_factory,
            "POST",
            self.uri,
            operation=OPERATION,
            headers={"Authorization": token, "Content-Type": "application/json"},
            body=b"{}",
            deadline=self._timeout,
        )
        if not 200 <= answer.status < 300:
            raise status_error(OPERATION, answer, sent=(token,))
        return parse_temporary(json_object(answer, OPERATION), OPERATION)


def pod_identity_from_env(
    environ: Mapping[str, str],
    *,
    session_factory: SessionFactory = default_session,
    clock: Clock = time.time,
    policy: RefreshPolicy = DEFAULT_REFRESH,
) -> AkSk:
    """The pod identity CCE configured through the environment; checked, not yet fetched."""
    uri, file = environ.get(FULL_URI_ENV, "").strip(), environ.get(TOKEN_FILE_ENV, "").strip()
    if not uri or not file:
        missing = " and ".join(name for name, value in ((FULL_URI_ENV, uri), (TOKEN_FILE_ENV, file)) if not value)
        raise CredentialsUnavailable(
            f"{missing} not set: this is not a pod with CCE pod identity",
            hint="enable pod identity for the workload's service account, or choose another auth",
        )
    url = yarl.URL(uri)
    if url.scheme not in ("http", "https") or not url.host:
        raise CredentialsUnavailable(
            f"{FULL_URI_ENV} is not an http(s) URL", hint="it is set by CCE; check the pod's spec"
        )
    read_token_file(Path(file), what="pod identity token")  # fail now, not at the first request
    source = PodIdentity(uri, Path(file), session_factory=session_factory)
    description = f"temporary AK/SK from CCE pod identity ({url.host})"
    return AkSk(Refresher(source.fetch, clock=clock, policy=policy, what=OPERATION), description, clock=clock)
