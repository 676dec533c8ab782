"""Every kind of credentials sweeping a full fleet: issue 9's acceptance figures.

For each kind, a fresh ``collector simulate`` process (1,000 servers by default, IAM tokens
and pod identity keys that end every ``--lifetime`` seconds, 5 by default), then
``collector run`` as a measured child process with that kind in the inventory's ``auth`` and
its variables in the environment:

- ``aksk``: ``HUAWEICLOUD_SDK_AK``/``_SK``; every request signed, checked by the simulator's
  gateway (`collector.simulator.signing`, itself checked against the official SDK's signer);
- ``temporary``: the same keys made temporary (``--security-token``), with
  ``HUAWEICLOUD_SDK_SECURITY_TOKEN``;
- ``iam``: ``iam: {endpoint, domain, user, password_env}`` against the simulator's IAM;
- ``pod_identity``: ``HC_CONTAINER_CREDENTIALS_FULL_URI`` at the simulator's pod identity
  agent and ``HC_CONTAINER_AUTHORIZATION_TOKEN_FILE``.

One JSON line per kind: exit code, seconds (the collector process, start to exit), whether
every archive is exact (size and sha256 against the seed, and as report.json states), the
credential requests the simulator answered against issue 9's bound (seconds / lifetime + 2)
and against what the refresher's own policy allows (`RefreshPolicy().refresh_at`), the median
time between two fetches, and the API requests refused 401 (those refused because their
credential had ended among them). A summary line follows. Exits 1 unless every kind exits 0
with every archive exact and stays within issue 9's bound.

    python benchmarks/credentials.py [--servers 1000] [--lifetime 5] [--kinds aksk,temporary,iam,pod_identity]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from _common import (
    PYTHON,
    SimProcess,
    check_archives,
    code_version,
    collector_command,
    emit,
    load_report,
    note,
    parse_bytes_range,
    parse_range,
    run_measured,
    sim_flags,
)

from collector.auth import RefreshPolicy
from collector.simulator.config import SimConfig

KINDS = ("aksk", "temporary", "iam", "pod_identity")
SECURITY_TOKEN = "bench-temporary-security-token"
IAM_PASSWORD_ENV = "BENCH_IAM_PASSWORD"
# Variables of the machine running the benchmark must not choose the credentials.
CREDENTIAL_VARIABLES = ("HUAWEICLOUD_SDK_", "HC_CONTAINER_", IAM_PASSWORD_ENV)
LISTENING = re.compile(r"simulator listening on (http://\S+) ")


class IdentitySimProcess(SimProcess):
    """`SimProcess` with the identity flags: lifetimes, and the security token when given."""

    def __enter__(self) -> IdentitySimProcess:
        config = self.config
        command = [
            PYTHON,
            "-m",
            "collector",
            "simulate",
            *sim_flags(config),
            "--token-lifetime",
            repr(config.token_lifetime),
            "--credential-lifetime",
            repr(config.credential_lifetime),
            "--write-inventory",
            str(self.inventory),
        ]
        if config.security_token:
            command += ["--security-token", config.security_token]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if match := LISTENING.match(line):
                self.url = match.group(1)
                break
        if not self.url:
            self.__exit__(None, None, None)
            raise RuntimeError("the simulator did not start (see its stderr above)")
        return self


def auth_for(kind: str, config: SimConfig, sim: SimProcess, workdir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The inventory's ``auth`` and the environment variables for `kind`."""
    keys = {"HUAWEICLOUD_SDK_AK": config.access_key, "HUAWEICLOUD_SDK_SK": config.secret_key}
    if kind == "aksk":
        return {"aksk": {}}, keys
    if kind == "temporary":
        return {"aksk": {}}, {**keys, "HUAWEICLOUD_SDK_SECURITY_TOKEN": SECURITY_TOKEN}
    if kind == "iam":
        auth = {
            "iam": {
                "endpoint": sim.url,
                "domain": config.iam_domain,
                "user": config.iam_user,
                "password_env": IAM_PASSWORD_ENV,
            }
        }
        return auth, {IAM_PASSWORD_ENV: config.iam_password}
    token_file = workdir / "service-account-token"
    token_file.write_text(config.pod_token + "\n")
    return {"pod_identity": {}}, {
        "HC_CONTAINER_CREDENTIALS_FULL_URI": f"{sim.url}/pod-identity/v1/credentials",
        "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
    }


def run_kind(kind: str, base: SimConfig, workdir: Path, collector_args: list[str]) -> dict[str, Any]:
    config = replace(base, security_token=SECURITY_TOKEN if kind == "temporary" else None)
    workdir.mkdir(parents=True)
    out = workdir / "out"
    with IdentitySimProcess(config, workdir) as sim:
        auth, variables = auth_for(kind, config, sim, workdir)
        inventory = yaml.safe_load(sim.inventory.read_text())
        inventory["auth"] = auth
        fleet = workdir / "fleet.yaml"
        fleet.write_text(yaml.safe_dump(inventory, sort_keys=False))
        note(f"{kind}: collector run over {config.servers} servers")
        with environment(variables):
            measured = run_measured(collector_command(fleet, out, collector_args))
        stats = sim.stats()
    check = check_archives(config, out, report=load_report(out))
    identity = stats["identity"]
    lifetime = config.token_lifetime if kind == "iam" else config.credential_lifetime
    fetched = {"iam": identity["iam_tokens_issued"], "pod_identity": identity["pod_credentials_issued"]}.get(kind, 0)
    seconds = measured.wall_s
    issue_bound = seconds / lifetime + 2
    refused_401 = sum(
        statuses.get("401", 0) for op, statuses in stats["requests"].items() if op not in ("iam", "pod_identity")
    )
    issued_at = [t for t, _ in identity["issued"]]
    gaps = [later - earlier for earlier, later in pairwise(issued_at)]
    record: dict[str, Any] = {
        "kind": kind,
        "servers": config.servers,
        "exit_code": measured.exit_code,
        "seconds": round(seconds, 2),
        "archives_exact": check.ok,
        "archives_checked": check.checked,
        "problems": check.problems[:3],
        "credential_requests": fetched,
        "lifetime_s": lifetime if kind in ("iam", "pod_identity") else None,
        "issue_bound": round(issue_bound, 2) if kind in ("iam", "pod_identity") else None,
        "within_issue_bound": fetched <= issue_bound,
        "policy_bound": (
            round(seconds / RefreshPolicy().refresh_at(0.0, lifetime) + 2, 2)
            if kind in ("iam", "pod_identity")
            else None
        ),
        "median_s_between_fetches": round(statistics.median(gaps), 3) if gaps else None,
        "credential_requests_refused": identity["refused"],
        "api_401": refused_401,
        "api_401_expired": identity["expired_refused"],
        "api_requests": stats["requests_total"] - fetched,
    }
    if measured.exit_code != 0:
        record["stderr_tail"] = measured.stderr[-1500:]
    return record


@contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """This process's environment (which `run_measured`'s child inherits) without any
    credential variable but `variables`, restored afterwards."""
    saved = dict(os.environ)
    for name in [name for name in os.environ if name.startswith(CREDENTIAL_VARIABLES)]:
        del os.environ[name]
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--lifetime", type=float, default=5.0, help="seconds IAM tokens and pod identity keys last")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--export-seconds", default="1-5", help="export durations, drawn per server (default 1-5)")
    parser.add_argument("--archive-bytes", default="16K-64K", help="archive sizes (default 16K-64K)")
    parser.add_argument("--rate-limit", type=float, default=100.0, help="API requests/s; 0 for none (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--collector-args", default="", help='extra `collector run` flags, e.g. "--rate 100"')
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args()
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown kinds: {', '.join(unknown)}")
    base = SimConfig(
        servers=args.servers,
        seed=args.seed,
        export_seconds=parse_range(args.export_seconds),
        archive_bytes=parse_bytes_range(args.archive_bytes),
        rate_limit=args.rate_limit or None,
        token_lifetime=args.lifetime,
        credential_lifetime=args.lifetime,
    )
    root = Path(tempfile.mkdtemp(prefix="collector-credentials-"))
    records = []
    started = time.monotonic()
    try:
        for kind in kinds:
            record = run_kind(kind, base, root / kind, args.collector_args.split())
            emit(record)
            records.append(record)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            note(f"kept {root}")
    ok = all(r["exit_code"] == 0 and r["archives_exact"] and r["within_issue_bound"] for r in records)
    emit(
        {
            "summary": True,
            "ok": ok,
            "kinds": [r["kind"] for r in records],
            "exact_and_exit_0": all(r["exit_code"] == 0 and r["archives_exact"] for r in records),
            "within_issue_bound": all(r["within_issue_bound"] for r in records),
            "seconds_total": round(time.monotonic() - started, 1),
            **code_version(),
        }
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
