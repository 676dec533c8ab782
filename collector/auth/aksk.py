"""AK/SK credentials: every request signed with SDK-HMAC-SHA256 (see `collector.auth.signer`).

The keys come from environment variables (the SDK's ``HUAWEICLOUD_SDK_AK``, ``_SK`` and
``_SECURITY_TOKEN`` by default), from the SDK's credentials file, or, as temporary keys with
an expiry, from CCE pod identity or the ECS metadata service. The last two are refreshed
ahead of their end by a `Refresher`; fixed keys go through one too, whose fetch always
answers the same keys, so a 401 for them is final.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from collector.auth.keys import AccessKeys
from collector.auth.protocol import CredentialsUnavailable, Request, set_headers
from collector.auth.refresh import Clock, Refresher
from collector.auth.signer import sign
from collector.auth.token import env_value

AK_ENV = "HUAWEICLOUD_SDK_AK"
SK_ENV = "HUAWEICLOUD_SDK_SK"
SECURITY_TOKEN_ENV = "HUAWEICLOUD_SDK_SECURITY_TOKEN"


class AkSk:
    """Signs each request with the current keys; `rejected` refetches keys that can change."""

    def __init__(self, keys: Refresher[AccessKeys], description: str, *, clock: Clock = time.time) -> None:
        self._keys = keys
        self._description = description
        self._clock = clock

    @classmethod
    def fixed(cls, keys: AccessKeys, description: str, *, clock: Clock = time.time) -> AkSk:
        async def same() -> tuple[AccessKeys, None]:
            return keys, None

        return cls(Refresher(same, clock=clock, what=description), description, clock=clock)

    async def apply(self, request: Request) -> object:
        lease = await self._keys.get()
        keys = lease.value
        signed = sign(request, keys.access, keys.secret, self._clock(), security_token=keys.security_token)
        set_headers(request.headers, signed)
        return lease.generation

    async def rejected(self, generation: object) -> bool:
        return await self._keys.rejected(generation)

    def describe(self) -> str:
        return self._description

    def __repr__(self) -> str:
        return f"<AkSk {self._description}>"

    @property
    def refresher(self) -> Refresher[AccessKeys]:
        return self._keys


def keys_from_env(
    environ: Mapping[str, str],
    *,
    ak_env: str | None = None,
    sk_env: str | None = None,
    security_token_env: str | None = None,
    clock: Clock = time.time,
) -> AkSk:
    """Keys from the SDK's variables, or from the variables named. A security token variable
    that is named must be set; the SDK's own is used when set, with the SDK's AK/SK only."""
    sdk_names = ak_env is None and sk_env is None
    ak_env, sk_env = ak_env or AK_ENV, sk_env or SK_ENV
    ak = env_value(ak_env, environ, what="access key", option="ak_env")
    sk = env_value(sk_env, environ, what="secret key", option="sk_env")
    token = None
    if security_token_env is not None:
        token = env_value(security_token_env, environ, what="security token", option="security_token_env")
    elif sdk_names and environ.get(SECURITY_TOKEN_ENV, "").strip():
        token = env_value(SECURITY_TOKEN_ENV, environ, what="security token", option="security_token_env")
    kind = "temporary AK/SK" if token else "AK/SK"
    return AkSk.fixed(AccessKeys(ak, sk, token), f"{kind} from ${ak_env}", clock=clock)


def check_env_names(options: Mapping[str, str]) -> dict[str, str]:
    """`ak_env` and `sk_env` go together; `security_token_env` only with them."""
    names = {name: options[name] for name in ("ak_env", "sk_env", "security_token_env") if name in options}
    if names and not ("ak_env" in names and "sk_env" in names):
        missing = "sk_env" if "ak_env" in names else "ak_env"
        raise CredentialsUnavailable(
            f"{missing} is missing", hint="name both variables: {ak_env: MY_AK, sk_env: MY_SK}", option=missing
        )
    return names
