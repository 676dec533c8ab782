"""The simulated identity services: IAM password tokens and CCE pod identity's temporary keys.

Both are served by the API origin, beside the API, so one simulator proves every kind of
credentials end to end:

- IAM, ``POST /v3/auth/tokens``: the password identity of `SimConfig.iam_user` in account
  `SimConfig.iam_domain`, scoped to the simulator's project, answers 201 with a new token in
  ``X-Subject-Token`` and its end in ``token.expires_at`` (`SimConfig.token_lifetime` later);
  anything else that is well formed is 401, as IAM answers a wrong password.
- the pod identity agent, ``POST /pod-identity/v1/credentials`` (what
  ``HC_CONTAINER_CREDENTIALS_FULL_URI`` points at): with ``Authorization`` equal to
  `SimConfig.pod_token` it answers 200 ``{"credential": {"access", "secret", "securitytoken",
  "expires_at"}}``, new keys each time that end `SimConfig.credential_lifetime` later; 401
  otherwise.

The gate (`collector.simulator.app`) asks `token_refusal` about an ``X-Auth-Token`` and
`signing_keys` about the access key of a signature: an issued token or key is accepted until
it ends, then refused with 401 like any bad credential. Issued credentials are counted (the
issue's bound on credential requests is checked against these counts) and those that ended
a lifetime ago are forgotten, so a long run with short lifetimes holds only the recent ones.

Expiry is wall-clock time (`wall_clock`), since ``expires_at`` is a wall-clock time that the
client compares with its own clock.
"""

from __future__ import annotations

import hmac
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from collector.simulator.config import SimConfig
from collector.simulator.responses import json_response
from collector.simulator.signing import SignatureError, parse_authorization

IAM_PATH = "/v3/auth/tokens"
POD_IDENTITY_PATH = "/pod-identity/v1/credentials"
SECURITY_TOKEN_HEADER = "X-Security-Token"
IAM, POD_IDENTITY = "iam", "pod_identity"  # their operation names in the recorder's counts

# How much of a request body the identity services read: IAM's password body is < 1 KiB.
_MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """What the gate needs to check a signature: the secret, and the security token the
    request must carry (None for permanent keys)."""

    secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class _Temporary:
    keys: SigningKeys
    expires_at: float


class Identity:
    """IAM and pod identity: what they issued, until when, and how often they were asked."""

    def __init__(
        self,
        config: SimConfig,
        *,
        wall_clock: Callable[[], float],
        request_id: Callable[[], str],
    ) -> None:
        self.config = config
        self.wall_clock = wall_clock
        self.request_id = request_id
        self._random = random.Random(f"{config.seed}:identity")
        self._tokens: dict[str, float] = {}  # live IAM token -> its end (Unix time)
        self._keys: dict[str, _Temporary] = {}  # live temporary access key -> its secret, token, end
        self.tokens_issued = 0
        self.credentials_issued = 0
        # (service, status) of refused credential requests: ("iam", 401), ("pod_identity", 401)
        self.refused: Counter[tuple[str, int]] = Counter()
        self.expired_refused = 0  # API requests refused because their token or key had ended
        self.issued: list[tuple[float, str]] = []  # (wall time, service) of every issue
        self.t0 = 0.0

    def add_routes(self, app: web.Application, record: Callable[[str, int], None]) -> None:
        """Serve both services on `app`; `record(operation, status)` counts each answer."""

        def recorded(
            operation: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
            async def handle(request: web.Request) -> web.StreamResponse:
                response = await handler(request)
                record(operation, response.status)
                return response

            return handle

        app.router.add_post(IAM_PATH, recorded(IAM, self._iam_tokens))
        app.router.add_post(POD_IDENTITY_PATH, recorded(POD_IDENTITY, self._pod_credentials))

    def started(self) -> None:
        self.t0 = self.wall_clock()

    # What the gate asks.

    def token_refusal(self, token: str | None) -> str | None:
        """Why an ``X-Auth-Token`` IAM issued is refused, or None if it is live. A token IAM
        never issued (or forgot after it ended) is refused as unknown."""
        expires_at = None if token is None else self._tokens.get(token)
        if expires_at is None:
            return "the X-Auth-Token is missing, invalid or expired"
        if self.wall_clock() >= expires_at:
            self.expired_refused += 1
            return "the token has expired"
        return None

    def signing_keys(self, authorization: str) -> tuple[str, SigningKeys]:
        """The access key a signature names and the keys to check it with: the configured
        AK/SK (temporary when `SimConfig.security_token` is set) or live pod identity keys.
        `SignatureError` for a key that is unknown or has ended."""
        access = parse_authorization(authorization).access_key
        if hmac.compare_digest(access, self.config.access_key):
            return access, SigningKeys(self.config.secret_key, self.config.security_token)
        temporary = self._keys.get(access)
        if temporary is None:
            raise SignatureError("unknown access key")
        if self.wall_clock() >= temporary.expires_at:
            self.expired_refused += 1
            raise SignatureError("the temporary access key has expired")
        return access, temporary.keys

    # The services.

    async def _iam_tokens(self, request: web.Request) -> web.Response:
        rid = self.request_id()
        body = await _json_body(request)
        identity = _password_identity(body)
        if identity is None:
            self.refused[IAM, 400] += 1
            return _iam_error(400, "The request body is not a password identity scoped to a project.", rid)
        domain, user, password, project_id = identity
        config = self.config
        good = all(
            hmac.compare_digest(given.encode(), wanted.encode())
            for given, wanted in (
                (domain, config.iam_domain),
                (user, config.iam_user),
                (password, config.iam_password),
                (project_id, config.project_id),
            )
        )
        if not good:
            self.refused[IAM, 401] += 1
            return _iam_error(401, "The username or password is wrong.", rid)
        now = self.wall_clock()
        self._forget_ended(now)
        token = f"MIIsim-iam-{self.tokens_issued + 1}-{self._random.getrandbits(128):032x}"
        expires_at = now + config.token_lifetime
        self._tokens[token] = expires_at
        self.tokens_issued += 1
        self.issued.append((now, IAM))
        answer: dict[str, object] = {
            "token": {
                "expires_at": iso(expires_at),
                "issued_at": iso(now),
                "methods": ["password"],
                "project": {"id": project_id, "name": "cn-sim-1", "domain": {"name": domain}},
                "user": {"name": user, "domain": {"name": domain}},
            }
        }
        if request.query.get("nocatalog") != "true":
            answer["token"]["catalog"] = []  # type: ignore[index]
        return json_response(201, answer, rid, headers={"X-Subject-Token": token})

    async def _pod_credentials(self, request: web.Request) -> web.Response:
        rid = self.request_id()
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), self.config.pod_token.encode()):
            self.refused[POD_IDENTITY, 401] += 1
            body = {"error_code": "PI.0401", "error_msg": "the service account token is missing or invalid"}
            return json_response(401, body, rid)
        now = self.wall_clock()
        self._forget_ended(now)
        n = self.credentials_issued + 1
        access = f"SIMTMP{n:06d}{self._random.getrandbits(40):010X}"
        keys = SigningKeys(
            f"sim-temporary-sk-{self._random.getrandbits(128):032x}",
            f"sim-security-token-{self._random.getrandbits(256):064x}",
        )
        expires_at = now + self.config.credential_lifetime
        self._keys[access] = _Temporary(keys, expires_at)
        self.credentials_issued = n
        self.issued.append((now, POD_IDENTITY))
        credential = {
            "access": access,
            "secret": keys.secret,
            "securitytoken": keys.security_token,
            "expires_at": iso(expires_at),
        }
        return json_response(200, {"credential": credential}, rid)

    def _forget_ended(self, now: float) -> None:
        """Drop what ended over a lifetime ago: until then a use is still told (and counted)
        as expired rather than unknown."""
        tokens_before = now - self.config.token_lifetime
        for token in [token for token, end in self._tokens.items() if end <= tokens_before]:
            del self._tokens[token]
        keys_before = now - self.config.credential_lifetime
        for access in [access for access, temporary in self._keys.items() if temporary.expires_at <= keys_before]:
            del self._keys[access]

    def snapshot(self, *, timeline: bool = True) -> dict[str, object]:
        """Counts for ``/_sim/stats``; with `timeline`, when each was issued (seconds since start)."""
        snapshot: dict[str, object] = {
            "iam_tokens_issued": self.tokens_issued,
            "pod_credentials_issued": self.credentials_issued,
            "token_lifetime": self.config.token_lifetime,
            "credential_lifetime": self.config.credential_lifetime,
            "refused": {f"{service} {status}": n for (service, status), n in sorted(self.refused.items())},
            "expired_refused": self.expired_refused,
        }
        if timeline:
            snapshot["issued"] = [[round(when - self.t0, 6), service] for when, service in self.issued]
        return snapshot


def check_security_token(headers: Mapping[str, str], signed_headers: tuple[str, ...], expected: str) -> None:
    """Temporary keys are only good with their security token, signed with the request."""
    given = headers.get(SECURITY_TOKEN_HEADER)
    if given is None:
        raise SignatureError("temporary access key used without X-Security-Token")
    if SECURITY_TOKEN_HEADER.lower() not in signed_headers:
        raise SignatureError("X-Security-Token is not signed")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise SignatureError("X-Security-Token does not belong to this access key")


def iso(when: float) -> str:
    """The format IAM and the SDK use: 2027-01-15T08:00:00.000000Z."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _json_body(request: web.Request) -> object:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        return None
    data = await request.content.read(_MAX_BODY + 1)
    if len(data) > _MAX_BODY:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _password_identity(body: object) -> tuple[str, str, str, str] | None:
    """(domain name, user name, password, project id) from IAM's password body, or None."""
    try:
        auth = body["auth"]  # type: ignore[index]
        identity = auth["identity"]
        user = identity["password"]["user"]
        fields = (user["domain"]["name"], user["name"], user["password"], auth["scope"]["project"]["id"])
        methods = identity["methods"]
    except (KeyError, TypeError):
        return None
    if not isinstance(methods, list) or "password" not in methods:
        return None
    if not all(isinstance(value, str) for value in fields):
        return None
    return fields


def _iam_error(status: int, message: str, rid: str) -> web.Response:
    title = "Unauthorized" if status == 401 else "Bad Request"
    body = {"error": {"code": status, "message": message, "title": title}}
    return json_response(status, body, rid, headers={"X-IAM-Trace-Id": rid})
