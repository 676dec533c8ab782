"""Prometheus metrics: what the sweep's events and stats become, the textfile node_exporter
reads, and the push to a Pushgateway (a small one on loopback that keeps groups as the real
one does)."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import os
import re
import stat
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise
from pathlib import Path

import aiohttp
import anyio
import anyio.lowlevel
import pytest
import yaml
from _audit import watching
from _sockets import closed_port
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from collector.cli.logs import JsonFormatter, TextFormatter
from collector.clouddc.gateway import CallStats
from collector.config.inventory import load_inventory
from collector.control.throttle import RateLimiter
from collector.destinations.local import LocalDestination
from collector.errors import ConnectRefused, ExitCode, RequestTimeout, ServerError, ThrottledError, UsageError
from collector.observe.metrics import (
    Metrics,
    push,
    push_target,
    pushgateway_url,
    write_atomically,
    write_textfile,
    write_textfile_every,
)
from collector.simulator import SimConfig, Simulator
from collector.sweep.events import Events, Phase, PhaseChanged
from collector.sweep.pipeline import Sweep

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

DOCS = Path(__file__).parents[1] / "docs" / "metrics.md"
NAMES = {
    "collector_servers",
    "collector_requests_total",
    "collector_retries_total",
    "collector_throttled_total",
    "collector_bytes_total",
    "collector_rate_limit_per_second",
    "collector_run_duration_seconds",
    "collector_exit_code",
    "collector_last_success_timestamp_seconds",
}


def parse(text: str | bytes) -> dict[tuple[str, frozenset], float]:
    """Every sample: (name, its labels) -> value."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def servers(metrics: Metrics) -> dict[str, float]:
    samples = parse(metrics.text())
    return {dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "collector_servers"}


def moved(server_id: str, previous: Phase, phase: Phase) -> PhaseChanged:
    return PhaseChanged("p1", server_id, phase, previous)


def walk(metrics: Metrics, server_id: str, *phases: Phase) -> None:
    for previous, phase in pairwise((Phase.PENDING, *phases)):
        metrics.on_event(moved(server_id, previous, phase))


def full(**kwargs) -> Metrics:
    """Metrics with a sample in every family."""
    metrics = Metrics(servers=3, **kwargs)
    walk(metrics, "s1", Phase.EXPORTING, Phase.POLLING, Phase.DOWNLOADING, Phase.COLLECTED)
    metrics.request("export", 202)
    metrics.observe_stats(CallStats(requests=1, retries=1, throttled=1, bytes_downloaded=10))
    metrics.observe_limiters({"https://clouddc.example": RateLimiter(20)})
    metrics.finish(ExitCode.OK, 4.0, now=1_764_241_384.0)
    return metrics


# -- what the run's events and stats become --------------------------------------------------


async def test_servers_per_state_follow_the_sweeps_events():
    metrics = Metrics(servers=4)
    events = Events()
    events.subscribe(metrics.on_event)  # a plain function listener
    states = list(servers(metrics))
    assert states == ["pending", "exporting", "polling", "downloading", "collected", "failed"]
    assert servers(metrics) == dict.fromkeys(states, 0) | {"pending": 4}

    await events.emit(moved("s1", Phase.PENDING, Phase.EXPORTING))
    await events.emit(moved("s2", Phase.PENDING, Phase.EXPORTING))
    assert servers(metrics)["exporting"] == 2 and servers(metrics)["pending"] == 2
    await events.emit(moved("s1", Phase.EXPORTING, Phase.POLLING))
    await events.emit(moved("s2", Phase.EXPORTING, Phase.FAILED))
    assert servers(metrics) == {
        "pending": 2,
        "exporting": 0,
        "polling": 1,
        "downloading": 0,
        "collected": 0,
        "failed": 1,
    }
    await events.emit(moved("s1", Phase.POLLING, Phase.DOWNLOADING))
    assert servers(metrics)["downloading"] == 1 and servers(metrics)["polling"] == 0
    await events.emit(moved("s1", Phase.DOWNLOADING, Phase.COLLECTED))
    await events.emit(moved("s3", Phase.PENDING, Phase.COLLECTED))  # an earlier run collected it
    assert servers(metrics) == {
        "pending": 1,
        "exporting": 0,
        "polling": 0,
        "downloading": 0,
        "collected": 2,
        "failed": 1,
    }


def test_fleet_size_given_after_the_first_events_still_adds_up():
    metrics = Metrics()
    walk(metrics, "s1", Phase.COLLECTED)
    metrics.set_servers(5)
    assert servers(metrics)["pending"] == 4 and servers(metrics)["collected"] == 1


def test_requests_count_by_operation_and_status_or_error_kind():
    metrics = Metrics()
    metrics.request("export", 202)
    metrics.request("status", 200)
    metrics.request("status", 200)
    metrics.request("status", ThrottledError(429, operation="ShowLogsExportStatus"))
    metrics.request("download", ServerError(503, operation="DownloadServerLogs"))
    metrics.request("status", RequestTimeout("no answer"))
    metrics.request("export", ConnectRefused("nothing listens"))
    metrics.request("auth", "401")
    samples = parse(metrics.text())
    counts = {
        (dict(labels)["operation"], dict(labels)["code"]): v
        for (name, labels), v in samples.items()
        if name == "collector_requests_total"
    }
    assert counts == {
        ("export", "202"): 1,
        ("status", "200"): 2,
        ("status", "429"): 1,
        ("download", "503"): 1,
        ("status", "timeout"): 1,
        ("export", "refused"): 1,
        ("auth", "401"): 1,
    }


def test_stats_counters_follow_call_stats_and_never_go_down():
    metrics = Metrics()
    stats = CallStats(requests=5, throttled=1, retries=2, bytes_downloaded=1000)
    metrics.observe_stats(stats)
    metrics.observe_stats(stats)  # the same stats twice count once
    samples = parse(metrics.text())
    assert value(samples, "collector_retries_total") == 2
    assert value(samples, "collector_throttled_total") == 1
    assert value(samples, "collector_bytes_total") == 1000

    stats.retries, stats.bytes_downloaded = 3, 5000  # read at every scrape: no call needed
    samples = parse(metrics.text())
    assert value(samples, "collector_retries_total") == 3 and value(samples, "collector_bytes_total") == 5000

    metrics.observe_stats(CallStats(retries=4))  # a second client's stats are added
    assert value(parse(metrics.text()), "collector_retries_total") == 7
    stats.retries = 0  # a source going down never takes a counter down
    assert value(parse(metrics.text()), "collector_retries_total") == 7


def test_rate_limit_gauge_shows_what_each_limiter_allows_now():
    slow, fast = RateLimiter(20), RateLimiter(100)
    metrics = Metrics()
    metrics.observe_limiters({"https://a.example": slow, "https://b.example": fast})
    slow.throttled()  # a 429 in start-up: the limiter halves (issue 14's start-up; it was 70 %)
    samples = parse(metrics.text())
    assert value(samples, "collector_rate_limit_per_second", endpoint="https://a.example") == pytest.approx(10)
    assert value(samples, "collector_rate_limit_per_second", endpoint="https://b.example") == 100


@pytest.mark.parametrize("code", [ExitCode.PARTIAL, ExitCode.AUTH, ExitCode.SIGTERM])
def test_last_success_is_set_only_by_a_run_that_exits_0(code):
    failed = Metrics()
    failed.finish(code, 12.5, now=1_764_241_384.0)
    samples = parse(failed.text())
    assert value(samples, "collector_exit_code") == int(code)
    assert value(samples, "collector_run_duration_seconds") == 12.5
    assert not any(name == "collector_last_success_timestamp_seconds" for name, _ in samples)

    succeeded = Metrics()
    succeeded.finish(ExitCode.OK, 12.5, now=1_764_241_384.0)
    samples = parse(succeeded.text())
    assert value(samples, "collector_exit_code") == 0
    assert value(samples, "collector_last_success_timestamp_seconds") == 1_764_241_384.0


def test_run_results_are_absent_until_the_run_finishes():
    """A file written mid-run must not say exit 0."""
    names = {name for name, _ in parse(Metrics().text())}
    assert not names & {
        "collector_exit_code",
        "collector_run_duration_seconds",
        "collector_last_success_timestamp_seconds",
    }


def test_every_sample_has_the_shard_label_when_given_and_none_without():
    sharded = parse(full(shard="0-of-4").text())
    assert {name for name, _ in sharded} == NAMES
    assert all(dict(labels).get("shard") == "0-of-4" for _, labels in sharded)
    plain = parse(full().text())
    assert len(plain) == len(sharded)
    assert all("shard" not in dict(labels) for _, labels in plain)


def test_each_metrics_has_its_own_registry():
    from prometheus_client import REGISTRY

    one, two = Metrics(servers=1), Metrics(servers=2)
    assert one.registry is not two.registry
    assert REGISTRY.get_sample_value("collector_servers", {"state": "pending"}) is None
    assert servers(one)["pending"] == 1 and servers(two)["pending"] == 2


# -- the textfile --------------------------------------------------------------------------


def test_textfile_parses_back_with_every_metric(tmp_path):
    path = tmp_path / "collector.prom"
    assert write_textfile(path, full())
    samples = parse(path.read_text())
    assert {name for name, _ in samples} == NAMES
    assert value(samples, "collector_servers", state="collected") == 1
    assert value(samples, "collector_requests_total", operation="export", code="202") == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["collector.prom"]


def test_textfile_appears_only_complete_under_its_name(tmp_path):
    """Written in full, fsynced and 0644 under another name in the same folder, then renamed:
    node_exporter reads `*.prom`, so the temporary name must not end in `.prom`. (The rename is
    watched by an audit hook, which runs just before it happens.)"""
    path = tmp_path / "collector.prom"
    path.write_text("# an earlier run's\n")
    renames = []

    def on_rename(source, target, *dir_fds):
        source = Path(source)
        if source.parent == tmp_path:
            old = path.read_text()  # until the rename, the old file stands
            renames.append((source, Path(target), source.read_bytes(), stat.S_IMODE(source.stat().st_mode), old))

    metrics = full()
    with watching("os.rename", on_rename):
        assert write_textfile(path, metrics)
    [(source, target, data, mode, old)] = renames
    assert old == "# an earlier run's\n"
    assert target == path and source.parent == path.parent
    assert source != path and not source.name.endswith(".prom")
    assert data == metrics.text() and mode == 0o644
    assert path.read_bytes() == metrics.text()


def test_a_reader_never_sees_part_of_a_textfile(tmp_path):
    """A reader racing the writer reads one whole version or the other, never a mix or a cut."""
    path = tmp_path / "collector.prom"
    versions = []
    for n in (1, 2):
        metrics = Metrics()
        for i in range(1500):  # ~110 KB: writing takes long enough for a reader to land in it
            metrics.request("status", str(100 + i * n))
        versions.append(metrics.text())
    write_atomically(path, versions[0])
    done = threading.Event()

    def writer():
        for i in range(60):
            write_atomically(path, versions[i % 2])
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    try:
        while not done.is_set() or reads < 10:
            assert path.read_bytes() in versions
            reads += 1
    finally:
        thread.join()
    parse(path.read_bytes())


def test_a_failed_write_leaves_no_temporary_file_and_logs_once(tmp_path, caplog):
    path = tmp_path / "collector.prom"
    path.mkdir()  # a folder where the file should be: the rename fails
    caplog.set_level(logging.WARNING, logger="collector.metrics")
    assert not write_textfile(path, full())
    assert os.listdir(tmp_path) == ["collector.prom"] and os.listdir(path) == []
    [record] = caplog.records
    assert record.event == "metrics_failed" and record.fields["destination"] == str(path)


def test_a_failed_run_keeps_the_last_success_the_file_held(tmp_path):
    """The file is rewritten each run; a run that fails keeps the earlier success, or the
    'no success in 26 h' alert would go quiet after the first failed night."""
    path = tmp_path / "collector.prom"
    first = Metrics(shard="1-of-2")
    first.finish(ExitCode.OK, 3.0, now=1_000_000.0)
    assert write_textfile(path, first)

    second = Metrics(shard="1-of-2")
    second.finish(ExitCode.PARTIAL, 5.0, now=2_000_000.0)
    assert write_textfile(path, second)
    samples = parse(path.read_text())
    assert value(samples, "collector_last_success_timestamp_seconds", shard="1-of-2") == 1_000_000.0
    assert value(samples, "collector_exit_code", shard="1-of-2") == 1

    other_shard = Metrics(shard="0-of-2")  # another shard's success is not ours
    other_shard.finish(ExitCode.PARTIAL, 5.0)
    assert write_textfile(path, other_shard)
    assert "collector_last_success_timestamp_seconds" not in path.read_text()


async def test_periodic_writer_writes_every_interval_and_once_more_when_cancelled(tmp_path):
    path = tmp_path / "collector.prom"
    metrics = Metrics(servers=2)
    seen: list[tuple[float, dict]] = []

    async with anyio.create_task_group() as tasks:

        async def sleep(seconds: float) -> None:
            seen.append((seconds, parse(path.read_text())))
            if len(seen) == 1:
                walk(metrics, "s1", Phase.EXPORTING)
            elif len(seen) == 2:
                walk(metrics, "s1", Phase.COLLECTED)
                walk(metrics, "s2", Phase.FAILED)
                metrics.finish(ExitCode.PARTIAL, 9.0)
                tasks.cancel_scope.cancel()
            await anyio.lowlevel.checkpoint()

        tasks.start_soon(functools.partial(write_textfile_every, path, metrics, 7.5, sleep=sleep))

    assert [seconds for seconds, _ in seen] == [7.5, 7.5]
    assert value(seen[0][1], "collector_servers", state="pending") == 2  # written before the first wait
    assert value(seen[1][1], "collector_servers", state="exporting") == 1
    final = parse(path.read_text())  # the write after cancellation
    assert value(final, "collector_servers", state="failed") == 1
    assert value(final, "collector_exit_code") == 1 and value(final, "collector_run_duration_seconds") == 9.0


async def test_periodic_writer_that_cannot_write_logs_once_and_never_stops_the_run(tmp_path, caplog):
    path = tmp_path / "missing" / "collector.prom"
    caplog.set_level(logging.WARNING, logger="collector.metrics")
    ticks = 0
    with anyio.CancelScope() as scope:

        async def sleep(seconds: float) -> None:
            nonlocal ticks
            ticks += 1
            if ticks == 3:
                scope.cancel()
            await anyio.lowlevel.checkpoint()

        await write_textfile_every(path, Metrics(), sleep=sleep)
    assert ticks == 3  # it went on after the failures
    failures = [r for r in caplog.records if getattr(r, "event", None) == "metrics_failed"]
    assert len(failures) == 1
    assert str(path) in failures[0].getMessage() and "No such file or directory" in failures[0].getMessage()


# -- the Pushgateway -----------------------------------------------------------------------


class Gateway:
    """The Pushgateway's push API, enough to test against: PUT replaces a group, POST only
    the metric names it carries; a body that does not parse is a 400, as there."""

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.status = status
        self.hang = hang
        self.seen: list[dict] = []
        self.groups: dict[str, dict[str, dict]] = {}
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.raw_path,
                "body": body,
                "authorization": request.headers.get("Authorization"),
                "content_type": request.headers.get("Content-Type"),
            }
        )
        if self.hang:
            await self.release.wait()
        if self.status != 200:
            return web.Response(status=self.status, text="storage is on fire\nand more")
        try:
            families = {f.name: parse_family(f) for f in text_string_to_metric_families(body.decode())}
        except ValueError as exc:
            return web.Response(status=400, text=f"text format parsing error: {exc}")
        group = request.match_info["group"]
        if request.method == "PUT":
            self.groups[group] = {}
        self.groups.setdefault(group, {}).update({name: f for name, f in families.items() if f})
        return web.Response(status=200)

    def value(self, group: str, name: str, **labels: str) -> float | None:
        for family in self.groups.get(group, {}).values():
            if (name, frozenset(labels.items())) in family:
                return family[name, frozenset(labels.items())]
        return None


def parse_family(family) -> dict:
    return {(s.name, frozenset(s.labels.items())): s.value for s in family.samples}


@asynccontextmanager
async def gateway(**kwargs) -> AsyncIterator[Gateway]:
    gw = Gateway(**kwargs)
    app = web.Application()
    for prefix in ("", "/prefix"):  # a gateway behind a proxy has a path of its own
        app.router.add_route("PUT", prefix + "/metrics/job/{group:.+}", gw.handle)
        app.router.add_route("POST", prefix + "/metrics/job/{group:.+}", gw.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    gw.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield gw
    finally:
        gw.release.set()
        await runner.cleanup()


def formatted(records: list[logging.LogRecord]) -> str:
    return "\n".join(f.format(r) for r in records for f in (JsonFormatter(), TextFormatter()))


async def test_push_sends_every_metric_to_the_job_and_shard_group():
    metrics = full(shard="2-of-4")
    async with gateway() as gw:
        assert await push(gw.url, metrics, job="nightly")
    [request] = gw.seen
    assert request["method"] == "POST"
    assert request["path"] == "/metrics/job/nightly/shard/2-of-4"
    assert request["content_type"].startswith("text/plain; version=0.0.4")
    samples = parse(request["body"])
    assert {name for name, _ in samples} == NAMES
    assert value(samples, "collector_servers", state="collected", shard="2-of-4") == 1
    assert request["authorization"] is None


async def test_a_failed_run_pushed_after_a_success_keeps_the_gateways_last_success():
    async with gateway() as gw:
        assert await push(gw.url, full())
        failed = Metrics(servers=3)
        walk(failed, "s1", Phase.EXPORTING, Phase.FAILED)
        failed.finish(ExitCode.PARTIAL, 8.0)
        assert await push(gw.url, failed)
    assert gw.value("collector", "collector_exit_code") == 1
    assert gw.value("collector", "collector_servers", state="failed") == 1
    assert gw.value("collector", "collector_last_success_timestamp_seconds") == 1_764_241_384.0


async def test_push_with_credentials_in_the_url_authenticates_and_never_logs_them(caplog):
    caplog.set_level(logging.WARNING, logger="collector.metrics")
    async with gateway() as gw:
        url = gw.url.replace("http://", "http://ops:s3cr%2Ft@") + "/prefix/"
        assert await push(url, full(), grouping={"site": "eu/west", "rack": ""})
    [request] = gw.seen
    assert request["authorization"] == "Basic " + base64.b64encode(b"ops:s3cr/t").decode()
    assert request["path"] == "/prefix/metrics/job/collector/site@base64/ZXUvd2VzdA==/rack@base64/="

    async with gateway(status=500) as gw:
        url = gw.url.replace("http://", "http://ops:s3cr%2Ft@")
        assert not await push(url, full())
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "metrics_failed"]
    text = formatted([record])
    assert "HTTP 500" in text and "storage is on fire" in text and gw.url in text
    assert "s3cr" not in text and "ops" not in text


async def test_push_refused_by_the_gateway_logs_one_line_and_returns(caplog):
    caplog.set_level(logging.WARNING, logger="collector.metrics")
    async with gateway(status=500) as gw:
        assert await push(gw.url, full()) is False
    [record] = caplog.records
    assert record.event == "metrics_failed" and record.fields["status"] == 500
    assert all("\n" not in f.format(record) for f in (JsonFormatter(), TextFormatter()))
    assert "storage is on fire" in record.getMessage()


async def test_push_to_nothing_listening_logs_and_returns(caplog):
    caplog.set_level(logging.WARNING, logger="collector.metrics")
    port = closed_port()
    assert await push(f"http://u:hunter2@127.0.0.1:{port}", full()) is False
    [record] = caplog.records
    assert record.event == "metrics_failed" and f"127.0.0.1:{port}" in record.getMessage()
    assert "hunter2" not in formatted([record])


async def test_push_to_a_gateway_that_never_answers_gives_up_after_the_timeout(caplog):
    caplog.set_level(logging.WARNING, logger="collector.metrics")
    async with gateway(hang=True) as gw:
        assert await push(gw.url, full(), timeout=0.2) is False
    [record] = caplog.records
    assert "timed out" in record.getMessage()


@pytest.mark.parametrize("url", ["ftp://ops:s3cret@gw.example", "http://ops:s3cret@/x", "s3cret", "http://[::1"])
async def test_a_bad_pushgateway_url_is_a_usage_error_that_does_not_repeat_it(url, caplog):
    with pytest.raises(UsageError) as caught:
        pushgateway_url(url)
    assert "s3cret" not in str(caught.value) and "--pushgateway" in str(caught.value)
    caplog.set_level(logging.WARNING, logger="collector.metrics")
    assert await push(url, full()) is False  # and push itself never raises on it
    assert "s3cret" not in formatted(caplog.records)


def test_push_target_encodes_the_job_and_grouping_as_the_pushgateway_expects():
    base = pushgateway_url("https://gw.example:9091")
    assert str(push_target(base, "collector", {})) == "https://gw.example:9091/metrics/job/collector"
    assert (
        str(push_target(base, "a b", {"shard": "0-of-4"})) == "https://gw.example:9091/metrics/job/a%20b/shard/0-of-4"
    )
    assert str(push_target(base, "x/y", {})) == "https://gw.example:9091/metrics/job@base64/eC95"
    with pytest.raises(UsageError):
        push_target(base, "collector", {"not a label": "x"})


# -- the docs ----------------------------------------------------------------------------------


def test_the_docs_table_lists_exactly_the_metrics_written():
    documented = set(re.findall(r"^\| `(collector_\w+)` \|", DOCS.read_text(), re.MULTILINE))
    assert documented == NAMES
    assert {name for name, _ in parse(full().text())} == NAMES


def test_the_example_alert_rules_are_prometheus_rule_files_on_our_metrics():
    [block] = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    rules = yaml.safe_load(block)
    [group] = rules["groups"]
    assert group["name"] and set(group) == {"name", "rules"}
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert set(alerts) == {"CollectorNoSuccessfulRun", "CollectorRunFailed"}
    for rule in alerts.values():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert isinstance(rule["expr"], str) and rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert set(re.findall(r"collector_\w+", rule["expr"])) <= NAMES
    assert alerts["CollectorNoSuccessfulRun"]["expr"] == "time() - collector_last_success_timestamp_seconds > 26 * 3600"
    assert "collector_exit_code" in alerts["CollectorRunFailed"]["expr"]
    assert 'collector_servers{state="failed"}' in alerts["CollectorRunFailed"]["expr"]


# -- with the real sweep ---------------------------------------------------------------------


async def test_a_swept_fleet_shows_in_the_metrics(tmp_path, fast_settings, out_dir):
    config = SimConfig(servers=6, failing=1, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), seed=11)
    async with Simulator(config) as sim:
        sim.write_inventory(tmp_path / "inventory.yaml")
        inventory = load_inventory(tmp_path / "inventory.yaml")
        metrics = Metrics(shard="0-of-1")
        metrics.set_servers(inventory.server_count)
        events = Events()
        events.subscribe(metrics.on_event)
        async with aiohttp.ClientSession() as session:
            sweep = Sweep(inventory, fast_settings, LocalDestination(out_dir), session, events)
            metrics.observe_stats(sweep.stats)
            metrics.observe_limiters({c.endpoint: c.limiter for c in sweep.clients.values()})
            results = await sweep.run()
        limiter = next(iter(sweep.clients.values())).limiter
    metrics.finish(ExitCode.PARTIAL, 1.0)
    samples = parse(metrics.text())
    shard = {"shard": "0-of-1"}
    assert sorted(r.state for r in results) == ["collected"] * 5 + ["failed"]
    assert value(samples, "collector_servers", state="collected", **shard) == 5
    assert value(samples, "collector_servers", state="failed", **shard) == 1
    assert sum(v for (name, _), v in samples.items() if name == "collector_servers") == 6
    assert (
        value(samples, "collector_bytes_total", **shard)
        == sweep.stats.bytes_downloaded
        == sum(r.bytes or 0 for r in results)
    )
    assert value(samples, "collector_retries_total", **shard) == sweep.stats.retries
    assert value(samples, "collector_rate_limit_per_second", endpoint=sim.url, **shard) == limiter.rate


async def test_a_run_with_metrics_flags_writes_the_file_and_pushes_once_at_the_end(tmp_path, fast_settings):
    """Through the runner, as `collector run --metrics-file F --pushgateway URL` does it."""
    from collector.config.inventory import load_inventory
    from collector.run.runner import run_sweep
    from collector.simulator import SimConfig, Simulator

    pushed: list[tuple[str, str, bytes]] = []

    async def gateway(request: web.Request) -> web.Response:
        pushed.append((request.method, request.path, await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gateway)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        config = SimConfig(servers=5, failing=1, export_seconds=(0.05, 0.1), archive_bytes=(4096, 8192), seed=4)
        async with Simulator(config) as sim:
            sim.write_inventory(tmp_path / "inventory.yaml")
            settings = fast_settings.__class__(
                **{
                    **fast_settings.__dict__,
                    "metrics_file": str(tmp_path / "collector.prom"),
                    "pushgateway": url,
                    "metrics_job": "nightly",
                }
            )
            outcome = await run_sweep(load_inventory(tmp_path / "inventory.yaml"), settings, tmp_path / "out")
    finally:
        await runner.cleanup()
    assert [r.state for r in outcome.results].count("failed") == 1
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families((tmp_path / "collector.prom").read_text())
        for s in family.samples
    }
    assert samples[("collector_servers", (("state", "collected"),))] == 4
    assert samples[("collector_servers", (("state", "failed"),))] == 1
    assert samples[("collector_exit_code", ())] == 1
    assert ("collector_last_success_timestamp_seconds", ()) not in samples
    assert samples[("collector_requests_total", (("code", "202"), ("operation", "export")))] == 5
    assert samples[("collector_requests_total", (("code", "200"), ("operation", "download")))] == 4
    assert len(pushed) == 1 and pushed[0][0] == "POST" and pushed[0][1] == "/metrics/job/nightly"
    assert b"collector_exit_code 1" in pushed[0][2]


async def test_requests_of_credential_sources_count_as_auth_while_a_run_observes_them():
    from yarl import URL

    from collector.auth.http import default_session, exchange
    from collector.errors import ConnectRefused
    from collector.net.transport import auth_requests

    async def token(request: web.Request) -> web.Response:
        return web.Response(status=201, text="{}")

    app = web.Application()
    app.router.add_post("/v3/auth/tokens", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    metrics = Metrics()
    observing = auth_requests.set(metrics.request)
    try:
        await exchange(default_session, "POST", URL(f"http://127.0.0.1:{port}/v3/auth/tokens"), operation="IAM")
        await runner.cleanup()
        with pytest.raises(ConnectRefused):
            await exchange(default_session, "POST", URL(f"http://127.0.0.1:{port}/v3/auth/tokens"), operation="IAM")
    finally:
        auth_requests.reset(observing)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.text().decode())
        for s in family.samples
    }
    assert samples[("collector_requests_total", (("code", "201"), ("operation", "auth")))] == 1
    assert samples[("collector_requests_total", (("code", "refused"), ("operation", "auth")))] == 1
