"""botocore's exceptions, translated once into `StorageError` with a reason users can act on.

The reason is short and stable (the summary groups failures by it); the message adds which
object and the request id, for a support ticket. Neither ever carries the server's own error
text: some S3-compatible stores echo the access key id in it, and a credential must never
reach a log, a report or an exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ValidationError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from collector.errors import StorageError

# Error codes that mean "who you are" is wrong, as opposed to "what you may do".
CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",  # most often a region that is not the bucket's
    }
)
DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"})
THROTTLE_CODES = frozenset({"SlowDown", "503", "ServiceUnavailable", "RequestLimitExceeded", "Throttling"})


def reason_for(exc: BaseException) -> str:
    """The summary's grouping key for a botocore failure."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in CREDENTIAL_CODES:
            return f"object storage refused our credentials ({code})"
        if code == "RequestTimeTooSkewed":
            return "our clock is too far from object storage's (RequestTimeTooSkewed)"
        if code in DENIED_CODES:
            return f"object storage denied access ({code})"
        if code == "NoSuchBucket":
            return "object storage has no such bucket (NoSuchBucket)"
        if code in THROTTLE_CODES:
            return f"object storage kept throttling us ({code})"
        return f"object storage error ({code})"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return "no usable credentials for object storage"
    if isinstance(exc, CredentialRetrievalError):
        return "could not obtain credentials for object storage"
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return f"object storage unreachable ({type(exc).__name__})"
    return f"object storage failed ({type(exc).__name__})"


def error_code(exc: ClientError) -> str:
    """The S3 error code, or the HTTP status when the answer had no body (HEAD)."""
    error = exc.response.get("Error") or {}
    code = str(error.get("Code") or "")
    if code:
        return code
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(status or "unknown")


def http_status(exc: BaseException) -> int | None:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    return None


def translate(exc: BaseException, action: str) -> StorageError:
    """`action` says what failed and on which object: "store s3://bucket/key"."""
    reason = reason_for(exc)
    message = f"cannot {action}: {reason}"
    if isinstance(exc, ClientError):
        if error_code(exc) == "403":
            # A HEAD answer has no body, so no code to tell refused credentials from a policy.
            message += " (credentials refused, or s3:GetObject/s3:ListBucket not allowed)"
        request_id = exc.response.get("ResponseMetadata", {}).get("RequestId")
        if request_id:
            message += f" (request id {request_id})"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        message += (
            "; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with a pod or instance role"
        )
    return StorageError(message, reason=reason)


@contextmanager
def translating(action: str) -> Iterator[None]:
    """Raise botocore's failures inside as `StorageError`; bugs (ours or a bad parameter) pass."""
    try:
        yield
    except (ParamValidationError, ValidationError):
        raise
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, action) from exc
