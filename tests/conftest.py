"""Shared fixtures: the anyio backend, fast settings, and a simulated fleet swept in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from _moto import bucket, moto_server  # noqa: F401 - fixtures for the object-storage tests
from hypothesis import HealthCheck, settings

from collector.config.settings import Settings
from collector.control.throttle import RetryPolicy

# The one hypothesis profile: deterministic in CI (the same examples every run, nothing
# remembered between runs), no deadline (the machine is shared and xdist runs four at once).
# A test that needs more or fewer examples says so with `@settings(max_examples=...)`.
settings.register_profile(
    "collector",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("collector")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long end-to-end runs (marked slow) first, the rest in their order.

    With pyproject's `--maxschedchunk 1`, xdist hands each worker two tests to begin with and
    then one at a time as it finishes: the long runs start at once on different workers and
    overlap everything else (longest first), instead of one of them starting last and holding
    up the suite. (With the default chunks, the first worker would get all of them.)"""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


@pytest.fixture(autouse=True)
def own_state_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's `collector` processes keep their learned rates (collector.run.learned) in a
    folder of the test's own: no test starts where another (or the machine's user) left off."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def fast_settings() -> Settings:
    return FAST


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir(mode=0o700)
    return path
