"""The simulator's settings: one frozen dataclass, validated when it is made.

`SimConfig` is everything that shapes the simulated CloudDC fleet and its misbehaviour. It is
built by tests directly and by `collector simulate` from flags; both get the same checks, so a
bad value fails before a socket is opened.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.simulator.archive import MIN_ARCHIVE_BYTES

DEFAULT_PROJECT_ID = "0a5f3c2e9b8d47e1a6c4f2b7d9e31c80"
DEFAULT_TOKEN = "MIIsimulated-clouddc-token-0000"
DEFAULT_ACCESS_KEY = "SIMAK"
DEFAULT_SECRET_KEY = "SIMSK"
DEFAULT_IAM_DOMAIN = "sim-account"
DEFAULT_IAM_USER = "sim-collector"
DEFAULT_IAM_PASSWORD = "sim-iam-password"
DEFAULT_POD_TOKEN = "sim-pod-service-account-token"
MAX_SERVERS = 1_000_000  # server ids end in six decimal digits


@dataclass(frozen=True)
class SimConfig:
    """How the simulated CloudDC behaves. Ranges are inclusive ``(lo, hi)`` pairs."""

    servers: int = 10
    project_id: str = DEFAULT_PROJECT_ID
    token: str = DEFAULT_TOKEN
    access_key: str = DEFAULT_ACCESS_KEY  # AK/SK for SDK-HMAC-SHA256 signed requests
    secret_key: str = DEFAULT_SECRET_KEY
    # With a security token the AK/SK above are temporary: signed requests must carry it in
    # X-Security-Token (and sign it); without one they are permanent keys.
    security_token: str | None = None
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0

    # Export lifecycle, drawn per server from the seed.
    export_seconds: tuple[float, float] = (0.1, 0.3)
    archive_bytes: tuple[int, int] = (16384, 65536)
    stuck: int = 0  # servers whose export never finishes
    failing: int = 0  # servers whose export ends "failed"
    export_ttl: float | None = None  # seconds a finished export stays visible

    # The API gateway.
    rate_limit: float | None = None  # requests per second over all API calls
    rate_burst: float | None = None  # the bucket's size: requests at once (default: a second's worth)
    retry_after: bool = True  # send Retry-After with every 429
    retry_after_seconds: int = 1  # the Retry-After of a scripted 429
    max_concurrent_exports: int | None = None
    # (after, seconds) from the first API call: every call refused 429, Retry-After retry_after_seconds
    outage: tuple[float, float] | None = None

    # Random faults, decided per (operation, server, attempt) from the seed.
    fault_500: float = 0.0
    fault_truncate: float = 0.0
    hostile: float = 0.0  # chance of an answer from the hostile catalogue (collector.simulator.hostile)
    hostile_archives: bool = False  # archives hostile inside (collector.simulator.archive.hostile_case)

    # Downloads.
    accept_ranges: bool = False
    redirect_downloads: bool = False
    oversize_bytes: int = 4 * 1024 * 1024
    chunk_bytes: int = 256 * 1024
    stall_seconds: float = 3600.0  # how long a "stall" fault holds the connection

    # Identity (collector.simulator.identity): IAM password tokens and CCE pod identity keys,
    # accepted by the gateway until they end.
    iam_domain: str = DEFAULT_IAM_DOMAIN
    iam_user: str = DEFAULT_IAM_USER
    iam_password: str = DEFAULT_IAM_PASSWORD
    token_lifetime: float = 86400.0  # seconds an IAM token is accepted (IAM's 24 h)
    pod_token: str = DEFAULT_POD_TOKEN  # the service-account token the pod identity agent expects
    credential_lifetime: float = 3600.0  # seconds temporary keys from pod identity are accepted

    @property
    def burst(self) -> float | None:
        """The gateway's bucket size, in requests (None: no limit)."""
        if self.rate_limit is None:
            return None
        return max(1.0, self.rate_limit) if self.rate_burst is None else self.rate_burst

    def __post_init__(self) -> None:
        # Accept lists (from YAML or JSON) but keep the frozen instance hashable.
        object.__setattr__(self, "export_seconds", tuple(map(float, self.export_seconds)))
        object.__setattr__(self, "archive_bytes", tuple(map(int, self.archive_bytes)))
        if self.outage is not None:
            object.__setattr__(self, "outage", tuple(map(float, self.outage)))
        _check(0 <= self.servers <= MAX_SERVERS, f"servers must be 0..{MAX_SERVERS}")
        _check(bool(self.project_id) and "/" not in self.project_id, "project_id must be a path segment")
        _check(bool(self.token), "token must not be empty")
        _check(bool(self.access_key) and bool(self.secret_key), "access_key and secret_key must not be empty")
        _check(self.security_token is None or bool(self.security_token), "security_token must not be empty")
        _check(
            all(bool(value) for value in (self.iam_domain, self.iam_user, self.iam_password, self.pod_token)),
            "iam_domain, iam_user, iam_password and pod_token must not be empty",
        )
        _check(
            self.token_lifetime > 0 and self.credential_lifetime > 0,
            "token_lifetime and credential_lifetime must be > 0",
        )
        lo, hi = self.export_seconds
        _check(0 <= lo <= hi, "export_seconds must be (lo, hi) with 0 <= lo <= hi")
        lo, hi = self.archive_bytes
        _check(
            MIN_ARCHIVE_BYTES <= lo <= hi,
            f"archive_bytes must be (lo, hi) with {MIN_ARCHIVE_BYTES} <= lo <= hi",
        )
        _check(self.oversize_bytes >= MIN_ARCHIVE_BYTES, f"oversize_bytes must be >= {MIN_ARCHIVE_BYTES}")
        _check(self.stuck >= 0 and self.failing >= 0, "stuck and failing must be >= 0")
        _check(self.stuck + self.failing <= self.servers, "stuck + failing must not exceed servers")
        _check(self.export_ttl is None or self.export_ttl > 0, "export_ttl must be > 0")
        _check(self.rate_limit is None or self.rate_limit > 0, "rate_limit must be > 0")
        _check(self.rate_burst is None or self.rate_burst >= 1, "rate_burst must be >= 1")
        _check(self.rate_burst is None or self.rate_limit is not None, "rate_burst needs rate_limit")
        _check(self.retry_after_seconds >= 1, "retry_after_seconds must be >= 1")
        _check(
            self.outage is None or (len(self.outage) == 2 and min(self.outage) >= 0),
            "outage must be (after, seconds) >= 0",
        )
        _check(
            self.max_concurrent_exports is None or self.max_concurrent_exports >= 1,
            "max_concurrent_exports must be >= 1",
        )
        _check(0.0 <= self.fault_500 <= 1.0, "fault_500 must be a probability")
        _check(0.0 <= self.fault_truncate <= 1.0, "fault_truncate must be a probability")
        _check(0.0 <= self.hostile <= 1.0, "hostile must be a probability")
        _check(self.chunk_bytes >= 1024, "chunk_bytes must be >= 1024")
        _check(self.stall_seconds >= 0, "stall_seconds must be >= 0")
        _check(0 <= self.port <= 65535, "port must be 0..65535")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
