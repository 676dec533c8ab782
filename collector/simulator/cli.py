"""``collector simulate``: run the simulator as a server until SIGINT or SIGTERM.

`add_arguments` fills the subcommand's parser and `main` runs it; ``collector.cli.main`` wires them
in, and ``python -m collector.simulator`` runs them alone. When both origins listen it prints
one line, ``simulator listening on URL (N servers, project ID, token T: export
CLOUDDC_TOKEN=T)``, and flushes it: benchmarks
read that line to learn the port. With ``--write-inventory`` the inventory is written before
that line and named on the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import Callable

from collector.errors import ExitCode
from collector.simulator.config import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_IAM_DOMAIN,
    DEFAULT_IAM_PASSWORD,
    DEFAULT_IAM_USER,
    DEFAULT_POD_TOKEN,
    DEFAULT_PROJECT_ID,
    DEFAULT_SECRET_KEY,
    DEFAULT_TOKEN,
    SimConfig,
)
from collector.simulator.server import Simulator

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from ``"65536"``, ``"256K"``, ``"1.5M"``, ``"2GiB"`` (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 65536, 256K, 1M, 2G)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def _split_range(text: str) -> tuple[str, str]:
    lo, sep, hi = text.partition("-")
    return (lo, hi) if sep else (lo, lo)


def seconds_range(text: str) -> tuple[float, float]:
    """``"2-5"``, ``"0.5-1.5"`` or a single ``"3"``: seconds, lo <= hi."""
    try:
        lo, hi = (float(part) for part in _split_range(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a range of seconds: {text!r} (try 2-5 or 0.5)") from None
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"need 0 <= LO <= HI: {text!r}")
    return lo, hi


def bytes_range(text: str) -> tuple[int, int]:
    """``"256K-1M"``, ``"16384-65536"`` or a single ``"4M"``: bytes, lo <= hi."""
    lo, hi = (parse_size(part) for part in _split_range(text))
    if lo > hi:
        raise argparse.ArgumentTypeError(f"need LO <= HI: {text!r}")
    return lo, hi


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"not a probability between 0 and 1: {text!r}")
    return value


def _number(kind: type[int] | type[float], minimum: float, text: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not value >= minimum:  # NaN compares false both ways
        raise argparse.ArgumentTypeError(f"need a number >= {minimum}: {text!r}")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    return lambda text: int(_number(int, minimum, text))


def _float_at_least(minimum: float) -> Callable[[str], float]:
    return lambda text: float(_number(float, minimum, text))


def _positive_float(text: str) -> float:
    value = _number(float, 0, text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"need a number > 0: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SimConfig()
    lo, hi = defaults.export_seconds
    blo, bhi = defaults.archive_bytes
    add = parser.add_argument
    add("--host", default=defaults.host, help="address to listen on (default: %(default)s)")
    add("--port", type=_int_at_least(0), default=0, help="API port; 0 picks a free one (default)")
    add("--servers", type=_int_at_least(0), default=defaults.servers, help="fleet size (%(default)s)")
    add("--project-id", default=DEFAULT_PROJECT_ID, help="project id in the API paths")
    add("--token", default=DEFAULT_TOKEN, help="the X-Auth-Token the API accepts")
    add("--access-key", default=DEFAULT_ACCESS_KEY, help="the AK of SDK-HMAC-SHA256 signed requests")
    add("--secret-key", default=DEFAULT_SECRET_KEY, help="the SK of SDK-HMAC-SHA256 signed requests")
    add(
        "--security-token",
        help="make --access-key/--secret-key temporary: signed requests must carry this X-Security-Token",
    )
    add("--iam-domain", default=DEFAULT_IAM_DOMAIN, help="the account IAM (POST /v3/auth/tokens) knows")
    add("--iam-user", default=DEFAULT_IAM_USER, help="the IAM user of that account")
    add("--iam-password", default=DEFAULT_IAM_PASSWORD, help="that user's password")
    add(
        "--token-lifetime",
        type=_positive_float,
        default=defaults.token_lifetime,
        metavar="SECONDS",
        help="how long a token IAM issues is accepted (default: %(default)g)",
    )
    add(
        "--pod-token",
        default=DEFAULT_POD_TOKEN,
        help="the service-account token the pod identity agent (/pod-identity/v1/credentials) expects",
    )
    add(
        "--credential-lifetime",
        type=_positive_float,
        default=defaults.credential_lifetime,
        metavar="SECONDS",
        help="how long temporary keys from pod identity are accepted (default: %(default)g)",
    )
    add(
        "--export-seconds",
        type=seconds_range,
        default=defaults.export_seconds,
        metavar="LO-HI",
        help=f"how long exports take, drawn per server (default: {lo:g}-{hi:g})",
    )
    add(
        "--archive-bytes",
        type=bytes_range,
        default=defaults.archive_bytes,
        metavar="LO-HI",
        help=f"archive sizes, drawn per server; K/M/G suffixes (default: {blo}-{bhi})",
    )
    add("--rate-limit", type=_positive_float, metavar="R", help="API requests per second; 429 above")
    add(
        "--rate-burst",
        type=_float_at_least(1),
        metavar="N",
        help="requests the gateway's bucket lets through at once (default: a second's worth of --rate-limit)",
    )
    add(
        "--retry-after",
        action=argparse.BooleanOptionalAction,
        default=defaults.retry_after,
        help="send Retry-After with 429s (default: on)",
    )
    add("--max-concurrent-exports", type=_int_at_least(1), metavar="N", help="429 for exports beyond N")
    add("--export-ttl", type=_positive_float, metavar="SECONDS", help="finished exports vanish after this")
    add("--fault-500", type=probability, default=0.0, metavar="P", help="chance any call answers 500")
    add("--fault-truncate", type=probability, default=0.0, metavar="P", help="chance a download is cut")
    add(
        "--hostile",
        type=probability,
        default=0.0,
        metavar="P",
        help="chance any export, status or download call answers junk from the hostile catalogue",
    )
    add("--hostile-archives", action="store_true", help="archives with hostile members (see simulator/archive.py)")
    add("--stuck", type=_int_at_least(0), default=0, metavar="N", help="servers whose export never ends")
    add("--failing", type=_int_at_least(0), default=0, metavar="N", help="servers whose export fails")
    add("--accept-ranges", action="store_true", help="honour Range: bytes=N- on downloads")
    add("--redirect-downloads", action="store_true", help="302 every download to the storage origin")
    add("--seed", type=int, default=defaults.seed, help="seed for everything random (default: 0)")
    add("--write-inventory", metavar="PATH", help="write an inventory YAML and token file for this run")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The SimConfig the flags describe. Raises ValueError for combinations that cannot work."""
    return SimConfig(
        servers=args.servers,
        project_id=args.project_id,
        token=args.token,
        access_key=args.access_key,
        secret_key=args.secret_key,
        security_token=args.security_token,
        iam_domain=args.iam_domain,
        iam_user=args.iam_user,
        iam_password=args.iam_password,
        token_lifetime=args.token_lifetime,
        pod_token=args.pod_token,
        credential_lifetime=args.credential_lifetime,
        seed=args.seed,
        host=args.host,
        port=args.port,
        export_seconds=args.export_seconds,
        archive_bytes=args.archive_bytes,
        stuck=args.stuck,
        failing=args.failing,
        export_ttl=args.export_ttl,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        retry_after=args.retry_after,
        max_concurrent_exports=args.max_concurrent_exports,
        fault_500=args.fault_500,
        fault_truncate=args.fault_truncate,
        hostile=args.hostile,
        hostile_archives=args.hostile_archives,
        accept_ranges=args.accept_ranges,
        redirect_downloads=args.redirect_downloads,
    )


def main(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"collector simulate: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    return asyncio.run(_serve(config, args.write_inventory))


async def _serve(config: SimConfig, inventory: str | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        simulator = Simulator(config)
        try:
            await simulator.start()
        except OSError as exc:
            where = f"{config.host}:{config.port}"
            print(f"collector simulate: error: cannot listen on {where}: {exc}", file=sys.stderr)
            return ExitCode.USAGE
        try:
            try:
                written = simulator.write_inventory(inventory) if inventory else None
            except OSError as exc:
                print(f"collector simulate: error: cannot write the inventory: {exc}", file=sys.stderr)
                return ExitCode.USAGE
            count = len(simulator.server_ids)
            # The token it accepts is the simulator's own, made up for it: said here, so that an
            # inventory of your own can use it (auth: {token_env: CLOUDDC_TOKEN}).
            print(
                f"simulator listening on {simulator.url} ({count} servers, project {simulator.project_id}, "
                f"token {simulator.token}: export CLOUDDC_TOKEN={simulator.token})"
            )
            if written:
                print(f"inventory written to {written}")
            sys.stdout.flush()
            await stop.wait()
        finally:
            await simulator.stop()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return ExitCode.OK
