"""No secret leaks: not in log lines (either format, at -vv), the report, the journal, the
state folder, exceptions or argv. Real `collector run` processes against the simulator, one
per kind of credentials it accepts; every byte they leave behind is searched."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import anyio
import pytest
import yaml

from collector.simulator import SimConfig, Simulator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


def everything_written(*roots: Path) -> bytes:
    """Every file under `roots`, concatenated: archives aside, what a run leaves is small."""
    data = b""
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.endswith(".tar.gz"):
                data += path.read_bytes()
    return data


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("kind", ["token_env", "token_file", "aksk", "aksk_temporary", "iam", "pod_identity"])
async def test_no_secret_appears_in_anything_a_run_writes(tmp_path, kind, log_format):
    token, ak, sk, security, password, pod_token = (secrets.token_urlsafe(24) for _ in range(6))
    config = SimConfig(
        servers=6,
        export_seconds=(0.05, 0.1),
        archive_bytes=(4096, 8192),
        token=token,
        access_key=ak,
        secret_key=sk,
        fault_500=0.3,
        seed=5,
        iam_password=password,
        pod_token=pod_token,
        token_lifetime=1.0,
        credential_lifetime=1.0,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_SDK_")}
    async with Simulator(config) as sim:
        sim.write_inventory(tmp_path / "sim.yaml")
        inventory = yaml.safe_load((tmp_path / "sim.yaml").read_text())
        (tmp_path / "sim.token").unlink()  # the simulator's own copy; ours is below
        secret_dir = tmp_path / "secrets"
        secret_dir.mkdir()
        if kind == "token_env":
            inventory["auth"] = {"token_env": "CLOUDDC_TOKEN"}
            env["CLOUDDC_TOKEN"] = token
        elif kind == "token_file":
            (secret_dir / "token").write_text(token + "\n")
            inventory["auth"] = {"token_file": str(secret_dir / "token")}
        elif kind == "iam":
            inventory["auth"] = {
                "iam": {
                    "endpoint": sim.iam_url,
                    "domain": config.iam_domain,
                    "user": config.iam_user,
                    "password_env": "IAM_PASSWORD",
                }
            }
            env["IAM_PASSWORD"] = password
        elif kind == "pod_identity":
            (secret_dir / "sa-token").write_text(pod_token + "\n")
            inventory["auth"] = {"pod_identity": {}}
            env["HC_CONTAINER_CREDENTIALS_FULL_URI"] = sim.pod_identity_url
            env["HC_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(secret_dir / "sa-token")
        else:
            inventory["auth"] = {"aksk": {}}
            env["HUAWEICLOUD_SDK_AK"], env["HUAWEICLOUD_SDK_SK"] = ak, sk
            if kind == "aksk_temporary":
                env["HUAWEICLOUD_SDK_SECURITY_TOKEN"] = security
        (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(inventory))
        out = tmp_path / "out"
        command = [
            sys.executable,
            "-m",
            "collector",
            "run",
            "-i",
            str(tmp_path / "fleet.yaml"),
            "-o",
            str(out),
            "-vv",
            "--log-format",
            log_format,
            "--no-progress",
            "--poll-interval",
            "0.05",
        ]
        run = await anyio.run_process(command, env=env, check=False, cwd=tmp_path)
        # A second run whose credentials are refused: the error path must not echo them either.
        if kind.startswith("token"):
            sim.revoke_token()
        refused_env = dict(
            env, CLOUDDC_TOKEN="wrong-" + token, HUAWEICLOUD_SDK_SK="wrong-" + sk, IAM_PASSWORD="wrong-" + password
        )
        if kind == "pod_identity":
            (secret_dir / "sa-token").write_text("wrong-" + pod_token + "\n")
        refused = await anyio.run_process([*command, "--fresh"], env=refused_env, check=False, cwd=tmp_path)
    assert run.returncode in (0, 1), run.stderr.decode()[-2000:]
    assert refused.returncode == 3, refused.stderr.decode()[-2000:]
    assert b"Traceback" not in run.stderr + refused.stderr
    written = run.stdout + run.stderr + refused.stdout + refused.stderr + everything_written(out)
    assert (out / "report.json").exists() and (out / ".collector" / "journal.db").exists()
    assert " ".join(command).find(token) == -1  # argv: the secret is never a flag
    for secret in (token, sk, security, password, pod_token):
        assert secret.encode() not in written, f"{kind}: a secret leaked"
    # What the simulator's IAM and pod identity issue (tokens, temporary SKs, security tokens)
    # all start so: none may appear either.
    for issued in (b"MIIsim-iam-", b"sim-temporary-sk-", b"sim-security-token-"):
        assert issued not in written, f"{kind}: an issued credential leaked"
