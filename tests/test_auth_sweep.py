"""Every kind of credentials, end to end: a real `collector run` process sweeps the simulator,
which checks each request's token or signature and hands out (and ends) IAM tokens and pod
identity keys. Issue 9's acceptance, scaled down: 100 servers, lifetimes of 1 s, runs of a few
seconds (benchmarks/credentials.py runs it at full size).

Each run must exit 0 with every archive exact. For the kinds that fetch credentials, the
run must also have outlived its first credential (so renewal is what kept it going), and the
fetches must stay within what the refresher's own policy allows (`policy_bound`: a regression
to one fetch per request, or a 401 loop, fails). Issue 9's tighter bound, run time / lifetime
+ 2, is checked last: the default `RefreshPolicy` renews a credential when half its lifetime
is left once that lifetime is under 10 min, about twice what the bound allows, so a miss is
reported as an expected failure with its figures rather than passed over.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
import yaml
from _fleet import assert_exact

from collector.auth import RefreshPolicy
from collector.simulator import SimConfig, Simulator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

LIFETIME = 1.0
SERVERS = 100
# Exports of 1-3 s make each run span several lifetimes; quick ones do for fixed keys.
LONG = dict(
    servers=SERVERS,
    export_seconds=(1.0, 3.0),
    archive_bytes=(4096, 16384),
    token_lifetime=LIFETIME,
    credential_lifetime=LIFETIME,
    seed=9,
)
QUICK = dict(servers=SERVERS, export_seconds=(0.1, 0.5), archive_bytes=(4096, 16384), seed=9)
RUN_FLAGS = ["--no-progress", "--poll-interval", "0.1", "--rate", "200"]
# Whatever the developer's shell has must not decide which credentials a run uses.
CREDENTIAL_VARIABLES = ("HUAWEICLOUD_SDK_", "HC_CONTAINER_", "IAM_PASSWORD")


async def run_collector(tmp_path: Path, sim: Simulator, auth: dict, env: dict[str, str]):
    """`collector run` with `auth` in the inventory and `env` added; (process, seconds)."""
    sim.write_inventory(tmp_path / "sim.yaml")
    inventory = yaml.safe_load((tmp_path / "sim.yaml").read_text())
    inventory["auth"] = auth
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(inventory))
    base = {k: v for k, v in os.environ.items() if not k.startswith(CREDENTIAL_VARIABLES)}
    command = [
        sys.executable,
        "-m",
        "collector",
        "run",
        "-i",
        str(tmp_path / "fleet.yaml"),
        "-o",
        str(tmp_path / "out"),
        *RUN_FLAGS,
    ]
    started = anyio.current_time()
    run = await anyio.run_process(command, env={**base, **env}, check=False, cwd=tmp_path)
    return run, anyio.current_time() - started


def assert_collected_exactly(run, tmp_path: Path, sim: Simulator) -> None:
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    assert_exact(tmp_path, sim, sim.server_ids)


def policy_bound(seconds: float, lifetime: float) -> float:
    """Fetches the default policy can need in `seconds`: one per refresh interval, plus the
    first and one for a 401."""
    return seconds / RefreshPolicy().refresh_at(0.0, lifetime) + 2


def check_issue_bound(kind: str, fetched: int, seconds: float, lifetime: float) -> None:
    bound = seconds / lifetime + 2
    assert fetched <= bound, (
        f"{kind}: {fetched} credential requests in a {seconds:.2f} s run of {lifetime:g} s lifetimes, "
        f"over issue 9's bound of {bound:.2f}"
    )


async def test_aksk_sweep_is_exact_with_every_request_signed(tmp_path):
    config = SimConfig(**QUICK)
    async with Simulator(config) as sim:
        run, _ = await run_collector(
            tmp_path,
            sim,
            {"aksk": {}},
            {"HUAWEICLOUD_SDK_AK": config.access_key, "HUAWEICLOUD_SDK_SK": config.secret_key},
        )
        assert_collected_exactly(run, tmp_path, sim)
        assert sim.count(status=401) == 0
        assert sim.count("export", 202) == SERVERS


async def test_temporary_aksk_sweep_is_exact_with_the_security_token(tmp_path):
    config = SimConfig(**QUICK, security_token="sim-temporary-security-token")
    env = {
        "HUAWEICLOUD_SDK_AK": config.access_key,
        "HUAWEICLOUD_SDK_SK": config.secret_key,
        "HUAWEICLOUD_SDK_SECURITY_TOKEN": config.security_token,
    }
    async with Simulator(config) as sim:
        run, _ = await run_collector(tmp_path, sim, {"aksk": {}}, env)
        assert_collected_exactly(run, tmp_path, sim)
        assert sim.count(status=401) == 0


async def test_temporary_aksk_without_its_security_token_ends_the_run_with_exit_3(tmp_path):
    config = SimConfig(servers=5, security_token="sim-temporary-security-token")
    env = {"HUAWEICLOUD_SDK_AK": config.access_key, "HUAWEICLOUD_SDK_SK": config.secret_key}
    async with Simulator(config) as sim:
        run, _ = await run_collector(tmp_path, sim, {"aksk": {}}, env)
    assert run.returncode == 3, run.stderr.decode()[-3000:]
    assert "X-Security-Token" in run.stderr.decode()


async def test_iam_password_sweep_is_exact_with_tokens_that_expire_every_second(tmp_path):
    config = SimConfig(**LONG)
    auth = {"iam": {"domain": config.iam_domain, "user": config.iam_user, "password_env": "IAM_PASSWORD"}}
    async with Simulator(config) as sim:
        auth["iam"]["endpoint"] = sim.iam_url
        run, seconds = await run_collector(tmp_path, sim, auth, {"IAM_PASSWORD": config.iam_password})
        assert_collected_exactly(run, tmp_path, sim)
        fetched = sim.identity.tokens_issued
    assert sim.identity.refused == {}
    assert fetched >= 2, "the run should outlive its first token"
    assert fetched <= policy_bound(seconds, LIFETIME)
    check_issue_bound("IAM password", fetched, seconds, LIFETIME)


async def test_pod_identity_sweep_is_exact_with_keys_that_expire_every_second(tmp_path):
    config = SimConfig(**LONG)
    token_file = tmp_path / "service-account-token"
    token_file.write_text(config.pod_token + "\n")
    async with Simulator(config) as sim:
        env = {
            "HC_CONTAINER_CREDENTIALS_FULL_URI": sim.pod_identity_url,
            "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
        }
        run, seconds = await run_collector(tmp_path, sim, {"pod_identity": {}}, env)
        assert_collected_exactly(run, tmp_path, sim)
        fetched = sim.identity.credentials_issued
    assert sim.identity.refused == {}
    assert fetched >= 2, "the run should outlive its first keys"
    assert fetched <= policy_bound(seconds, LIFETIME)
    check_issue_bound("pod identity", fetched, seconds, LIFETIME)
