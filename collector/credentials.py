"""Where `collector.auth` used to live: kept so that existing imports go on working.

New code imports from `collector.auth`.
"""

from collector.auth import Credentials, CredentialsUnavailable, StaticToken, token_from_env, token_from_file

__all__ = ["Credentials", "CredentialsUnavailable", "StaticToken", "token_from_env", "token_from_file"]
