"""The order exports are asked in when earlier runs said how long each takes (collector.sweep.plan)."""

from __future__ import annotations

from collector.sweep.plan import asking_order
from collector.sweep.polling import OwnTime


def order(seconds, *, rate, endpoint=lambda name: "https://a", unknown=()):
    names = [f"s{i}" for i in range(len(seconds) + len(unknown))]
    known = {("p", name): OwnTime(s, exact=True) for name, s in zip(names, seconds, strict=False)}
    rates = {endpoint(name): rate for name in names}
    return asking_order(names, known, lambda name: ("p", name), endpoint, rates)


def test_where_the_slowest_export_sets_the_end_the_exports_that_must_start_early_go_first():
    # 10 servers at 10 req/s: asking takes 1 s, the requests 3 s, the slowest export 10 s. An
    # export of more than 10 - 1 = 9 s asked last would end after the slowest asked first.
    seconds = [2, 9.5, 3, 10, 4, 9.2, 5, 1, 8, 6]
    assert order(seconds, rate=10) == ["s3", "s1", "s5", "s0", "s2", "s4", "s6", "s7", "s8", "s9"]


def test_where_the_rate_sets_the_end_the_inventory_order_stays():
    # 100 servers at 10 req/s: 30 s of requests, 10 s of asking; no export is longer than 20 s.
    seconds = [float(1 + i % 15) for i in range(100)]
    assert order(seconds, rate=10) == [f"s{i}" for i in range(100)]


def test_a_server_no_earlier_run_saw_is_asked_first_and_nothing_known_changes_nothing():
    assert order([1, 2, 3], rate=100, unknown=["new"])[0] == "s3"
    assert asking_order(["a", "b"], {}, lambda n: ("p", n), lambda n: "https://a", {"https://a": 1.0}) == ["a", "b"]


def test_each_endpoint_is_planned_at_its_own_rate():
    # The same times at two endpoints: at 1,000 req/s asking is instant (horizon 9.997 s: only
    # the 10 s export moves); at 0.5 req/s the rate sets the end (18 s, horizon 12 s: nothing moves).
    seconds = [2, 10, 5, 2, 10, 5]
    names = [f"s{i}" for i in range(6)]
    known = {("p", n): OwnTime(s, exact=True) for n, s in zip(names, seconds, strict=True)}
    where = {n: ("fast" if i < 3 else "slow") for i, n in enumerate(names)}
    planned = asking_order(names, known, lambda n: ("p", n), where.__getitem__, {"fast": 1000.0, "slow": 0.5})
    assert planned == ["s1", "s0", "s2", "s3", "s4", "s5"]
