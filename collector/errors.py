"""Every error collector raises, and the exit codes they end in.

    CollectorError
    ├── UsageError ............ bad flags or environment; nothing was sent        (exit 2)
    │   └── InventoryError .... the inventory file is wrong (file, key, line)     (exit 2)
    │       └── InventoryErrors  several things are wrong: `problems`, one line each
    ├── RequestError .......... no answer came back; `sent` says whether the request may
    │   │                       have reached the server (it matters for a POST)
    │   ├── ConnectRefused .... nothing listens there (never sent)
    │   ├── NameNotResolved ... DNS has no such host (never sent)
    │   ├── TLSFailed ......... the certificate did not verify, or the handshake failed (never sent)
    │   ├── RequestTimeout .... no answer in time (maybe sent)
    │   └── ConnectionReset ... the connection broke, or the body was cut off (maybe sent)
    ├── APIError .............. the API answered with an error status
    │   ├── ThrottledError .... 429; carries the Retry-After it gave, if any
    │   ├── AuthError ......... 401: credentials rejected, even fresh ones         (exit 3)
    │   ├── Forbidden ......... 403: these credentials may not do this; fails that server
    │   ├── NotFoundError ..... 404: export expired, vanished or never existed
    │   └── ServerError ....... 5xx
    ├── ProtocolError ......... a 2xx that makes no sense (bad JSON, a refused redirect)
    ├── ExportFailed .......... the export itself ended badly (failed, stuck, timed out)
    ├── ArchiveError .......... the downloaded bytes are not the archive (short, not gzip)
    │   ├── ArchiveTooLarge ... larger than --max-archive-bytes; not retried
    │   └── ArchiveDamaged .... not whole gzip twice in a row: the server's copy is bad; not retried
    └── StorageError .......... the archive cannot be stored (disk full, permissions); not retried

aiohttp's exceptions are translated once, in `collector.net.transport`, with ``raise ... from exc``.
Per-server errors end up as that server's result; only `AuthError` and `UsageError` end a run.

Every error has a `kind`: a short, stable word ("refused", "dns", "tls", "timeout", "reset",
"http", "protocol", "export", "archive", "storage", ...) that the summary groups by, with the
HTTP status and the API's error_code where there is one.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any


class ExitCode(enum.IntEnum):
    """The process exit codes, listed in the README. Decided only in `collector.run.outcome`."""

    OK = 0  # every server collected
    PARTIAL = 1  # the run finished, some servers failed
    USAGE = 2  # bad flags or inventory; no request was sent
    AUTH = 3  # the API rejected our credentials; the run stopped early
    UNREACHABLE = 4  # the API could not be reached (dead endpoint, or an outage outlasted --outage-timeout)
    TOO_MANY_FAILURES = 5  # the error budget (--max-failures) ran out; the rest is pending
    DEADLINE = 6  # --deadline came before every server was collected; the rest is pending
    INTERNAL = 70  # a bug in collector itself (sysexits EX_SOFTWARE); the report is still written
    SIGINT = 130
    SIGTERM = 143


class CollectorError(Exception):
    """Root of every error collector raises on purpose."""

    kind = "error"


class UsageError(CollectorError):
    """The user asked for something that cannot work. One line, with a hint."""

    kind = "usage"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class InventoryError(UsageError):
    """The inventory is wrong: says which file, which key and, where YAML knows it, which line."""

    def __init__(
        self,
        path: Path | str,
        message: str,
        *,
        key: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        where = str(path)
        if line is not None:
            where += f":{line}"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {message}", hint)
        self.path = Path(path)
        self.key = key
        self.line = line


class InventoryErrors(InventoryError):
    """Several things are wrong with the inventory, all reported at once (in file order).

    Its own key, line and message are the first problem's; `lines()` is what to print.
    """

    SHOWN = 20  # lines printed before "... and N more"

    def __init__(self, problems: list[InventoryError]) -> None:
        first = problems[0]
        UsageError.__init__(self, first.message, first.hint)
        self.path, self.key, self.line = first.path, first.key, first.line
        self.problems = tuple(problems)

    def lines(self) -> list[str]:
        shown = [str(problem) for problem in self.problems[: self.SHOWN]]
        if len(self.problems) > self.SHOWN:
            shown.append(f"... and {len(self.problems) - self.SHOWN} more")
        return shown

    def __str__(self) -> str:
        return "\n".join(self.lines())


class RequestError(CollectorError):
    """The request did not get an answer: connection refused or reset, timeout, cut-off body.

    `sent` is False only when the request certainly never reached the server (no connection
    was made): a POST can then be retried without any chance of starting a second export.
    """

    kind = "network"
    sent = True

    def __init__(self, message: str, *, host: str | None = None) -> None:
        super().__init__(message)
        self.host = host


class ConnectRefused(RequestError):
    """Nothing accepted the connection (or the host is unreachable)."""

    kind = "refused"
    sent = False


class NameNotResolved(RequestError):
    """The endpoint's host name does not resolve."""

    kind = "dns"
    sent = False


class TLSFailed(RequestError):
    """The TLS handshake failed: most often a certificate that does not verify."""

    kind = "tls"
    sent = False


class RequestTimeout(RequestError):
    """No answer (or no more data) within the timeout."""

    kind = "timeout"


class ConnectionReset(RequestError):
    """The connection broke: reset, closed early, or the body was cut off."""

    kind = "reset"


class APIError(CollectorError):
    """The API answered with an error status."""

    kind = "http"

    def __init__(
        self,
        status: int,
        *,
        operation: str,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.operation = operation
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id
        text = f"{operation}: HTTP {status}" + (f" {error_code}" if error_code else "")
        if error_msg:
            text += f": {error_msg}"
        if request_id:
            text += f" (request id {request_id})"
        super().__init__(text)

    @property
    def reason(self) -> str:
        """A short, stable grouping key for the summary: 'HTTP 500 SVC.0001'."""
        return f"HTTP {self.status}" + (f" {self.error_code}" if self.error_code else "")


class ThrottledError(APIError):
    """429 from the API gateway."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class AuthError(APIError):
    """401: the credentials are wrong or expired, and a fresh one (where the kind can be
    refreshed) was refused too. Ends the run with exit 3."""

    kind = "auth"


class Forbidden(APIError):
    """403: the credentials are good but may not do this (a policy, another project's server).
    Fails that server; the other servers and projects go on."""

    kind = "forbidden"


class NotFoundError(APIError):
    """404: the export expired or vanished (or the server id is wrong)."""


class ServerError(APIError):
    """5xx from the API; a 503 may say when to come back (`retry_after`)."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ProtocolError(CollectorError):
    """The API answered with something we cannot use: bad JSON, too large, an unsafe export id,
    a refused redirect."""

    kind = "protocol"


class ExportFailed(CollectorError):
    """The export task ended without an archive: failed, stuck, went backwards, timed out.
    `reason` groups it in the summary; the message has this server's details."""

    kind = "export"

    def __init__(self, message: str, reason: str = "export failed on the server") -> None:
        super().__init__(message)
        self.reason = reason


class ArchiveError(CollectorError):
    """The bytes downloaded are not a complete archive. Retried."""

    kind = "archive"


class ArchiveTooLarge(ArchiveError):
    """The archive is larger than the configured limit. Not retried."""

    kind = "too_large"
    reason = "archive larger than --max-archive-bytes"


class ArchiveDamaged(ArchiveError):
    """The bytes arrived whole but are not whole gzip (cut short, bad CRC, junk after the end).

    Raised by `collector.transfer.gzipcheck`; `collector.transfer.download` fetches the archive once more from
    zero and raises it only when the second copy is bad too. Not retried after that.
    """

    reason = "archive damaged on the server"

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.reason}: {detail}")
        self.detail = detail


class StorageError(CollectorError):
    """The archive cannot be stored: disk full, no permission, I/O error. Not retried.

    `reason` groups it in the summary without the archive's name.
    """

    kind = "storage"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
