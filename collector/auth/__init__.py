"""Credentials: what each request carries to prove who we are, and where it comes from.

    protocol.py   Request, the Credentials protocol (apply / rejected / describe), Generation
    token.py      an IAM token given to us: StaticToken, from a variable or a (re-read) file
    signer.py     sign(): SDK-HMAC-SHA256, as the official SDK's Signer
    aksk.py       AkSk: signed requests, keys from variables (fixed or temporary)
    profile.py    the SDK's credentials file (~/.huaweicloud/credentials)
    iam.py        IamPassword: a token per project from IAM, user name and password
    pod.py        CCE pod identity: temporary keys for the pod's service account
    metadata.py   ECS metadata: temporary keys of the server's agency
    refresh.py    Refresher: one expiring credential, refreshed ahead of its end, single flight
    http.py       the bounded HTTP calls those sources make, errors translated
    chain.py      provider_from_spec (an inventory's auth entry), default_chain (the SDK's lookup)

The API client calls ``generation = await credentials.apply(request)`` last, on the finished
request, and on a 401 ``await credentials.rejected(generation)``: True means send it again
(once), False that the run must stop. Nothing in this package puts a secret in a repr, a
message or a log line.

Imports net/ (its calls go through the same session rules and error translation), control/
and the leaves.
"""

from collector.auth.aksk import AkSk
from collector.auth.chain import OPTIONS, default_chain, provider_from_spec
from collector.auth.http import SessionFactory, default_session
from collector.auth.iam import IamPassword, region_of
from collector.auth.protocol import Credentials, CredentialsUnavailable, Generation, Request
from collector.auth.refresh import RefreshPolicy
from collector.auth.signer import sign
from collector.auth.token import StaticToken, token_from_env, token_from_file

__all__ = [
    "OPTIONS",
    "AkSk",
    "Credentials",
    "CredentialsUnavailable",
    "Generation",
    "IamPassword",
    "RefreshPolicy",
    "Request",
    "SessionFactory",
    "StaticToken",
    "default_chain",
    "default_session",
    "provider_from_spec",
    "region_of",
    "sign",
    "token_from_env",
    "token_from_file",
]
