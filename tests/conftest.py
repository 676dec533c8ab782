"""Shared fixtures: the anyio backend, fast settings, and a simulated fleet swept in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from _moto import bucket, moto_server  # noqa: F401 - fixtures for the object-storage tests

from collector.config.settings import Settings
from collector.control.throttle import RetryPolicy


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# The defaults users get, scaled down in time so a test run takes seconds, not minutes.
FAST = Settings(
    poll_interval=0.05,
    poll_max=0.2,
    rate=2000,
    export_timeout=10,
    read_timeout=2,
    connect_timeout=2,
    grace=2,
    policy=RetryPolicy(base=0.01, cap=0.05, max_attempts=5, max_elapsed=30),
)


@pytest.fixture
def fast_settings() -> Settings:
    return FAST


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir(mode=0o700)
    return path
