"""The peer: the script a user would write with the official SDK instead of `collector`.

``huaweicloudsdkclouddc``'s client with AK/SK credentials (`BasicCredentials`) and the
endpoint set to the simulator over http, a ``ThreadPoolExecutor(32)`` over the servers, and
for each: export, poll every 2 s until completed, download (the SDK README idiom: read the
whole stream, write it to a file), with a simple retry: catch the SDK's exceptions, sleep 1 s,
try again, at most 5 retries per call.

Two deliberate kindnesses, so the comparison is with a sensible script, not a strawman:
the connection pool is as large as the thread pool (the SDK's default of 10 would make
urllib3 open and discard connections), and the SDK's TypeConversionWarning (it cannot parse
``created_at`` values ending in ``+00:00``) is silenced.

Run by ``sweep.py --peer`` (which measures it like the collector), or by hand::

    python benchmarks/peer_sdk.py --endpoint http://127.0.0.1:PORT --inventory inv.yaml -o out
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

PYTHON = sys.executable
HERE = Path(__file__).resolve().parent


def peer_command(
    url: str, config, inventory: Path, out_dir: Path, *, workers: int = 32, poll: float = 2.0
) -> list[str]:
    """The command line that runs this script against a simulator with `config` (a SimConfig)."""
    return [
        PYTHON,
        str(HERE / "peer_sdk.py"),
        "--endpoint",
        url,
        "--project-id",
        config.project_id,
        "--ak",
        config.access_key,
        "--sk",
        config.secret_key,
        "--inventory",
        str(inventory),
        "-o",
        str(out_dir),
        "--workers",
        str(workers),
        "--poll",
        str(poll),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="collect log bundles with the official SDK, 32 threads")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--project-id", default="0a5f3c2e9b8d47e1a6c4f2b7d9e31c80")
    parser.add_argument("--ak", default="SIMAK")
    parser.add_argument("--sk", default="SIMSK")
    parser.add_argument("--inventory", required=True, type=Path, help="the simulator's inventory (for server ids)")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--poll", type=float, default=2.0)
    args = parser.parse_args(argv)

    import yaml
    from huaweicloudsdkclouddc.v1 import (
        CloudDCClient,
        DownloadServerLogsRequest,
        ExportServerLogsRequest,
        ShowLogsExportStatusRequest,
    )
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.exceptions.exceptions import SdkException
    from huaweicloudsdkcore.http.http_config import HttpConfig

    warnings.simplefilter("ignore")
    server_ids = [s["id"] if isinstance(s, dict) else s for s in yaml.safe_load(args.inventory.read_text())["servers"]]

    config = HttpConfig.get_default_config()
    config.ignore_ssl_verification = True  # what users do against a test endpoint
    config.pool_connections = config.pool_maxsize = args.workers
    client = (
        CloudDCClient.new_builder()
        .with_credentials(BasicCredentials(args.ak, args.sk, args.project_id))
        .with_endpoint(args.endpoint)
        .with_http_config(config)
        .build()
    )
    folder = args.output / args.project_id
    folder.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def with_retries(call):
        for attempt in range(6):  # the first try and up to 5 retries
            try:
                return call()
            except SdkException as exc:
                with lock:
                    counts[f"error {getattr(exc, 'status_code', type(exc).__name__)}"] += 1
                if attempt == 5:
                    raise
                time.sleep(1)

    def collect(server_id: str) -> None:
        export = with_retries(lambda: client.export_server_logs(ExportServerLogsRequest(id=server_id)))
        while True:
            time.sleep(args.poll)
            status = with_retries(
                lambda: client.show_logs_export_status(
                    ShowLogsExportStatusRequest(id=server_id, export_id=export.export_id)
                )
            )
            state = (status.status or "").lower()
            if state == "completed":
                break
            if state in ("failed", "error"):
                raise RuntimeError(f"export {export.export_id} {status.status}")

        def download() -> None:
            response = client.download_server_logs(DownloadServerLogsRequest(id=server_id, export_id=export.export_id))

            def save(stream) -> None:
                with open(folder / f"{server_id}-dump.tar.gz", "wb") as file:
                    file.write(stream.content)

            response.consume_download_stream(save)

        with_retries(download)

    failures: list[str] = []
    started = time.monotonic()
    with ThreadPoolExecutor(args.workers) as pool:
        futures = {pool.submit(collect, sid): sid for sid in server_ids}
        for future in as_completed(futures):
            try:
                future.result()
                counts["collected"] += 1
            except Exception as exc:  # a failed server is a result here, as in the collector
                counts["failed"] += 1
                failures.append(f"{futures[future]}: {type(exc).__name__}: {exc}"[:300])
    client.close()
    summary = {
        "tool": "peer_sdk",
        "servers": len(server_ids),
        "duration_s": round(time.monotonic() - started, 3),
        **dict(counts),
        "failures": failures[:5],
    }
    print(json.dumps(summary), flush=True)
    return 0 if not counts["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
