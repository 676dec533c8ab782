"""The poll schedule: backoff without knowledge, aiming at the estimate with it, and failure reasons."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from collector.clouddc.replies import ExportState, ExportStatus
from collector.sweep.polling import ExportDurations, OwnTime, PollSchedule


def status(percentage, state=ExportState.RUNNING, raw="Running"):
    return ExportStatus("1", state, raw, percentage, None)


def test_backoff_grows_to_the_longest_interval_without_progress_information():
    schedule = PollSchedule(first=5, longest=60, started=0)
    delays = [schedule.first_delay(0)]
    now = 0.0
    for _ in range(12):
        now += delays[-1]
        delays.append(schedule.next_delay(status(None), now))
    assert delays[:4] == [5, 7.5, 11.25, 16.875]
    assert max(delays) == 60 and delays[-1] == 60


def test_poll_aims_just_after_the_estimated_completion():
    schedule = PollSchedule(first=5, longest=60, started=0)
    schedule.first_delay(0)
    # 50 % after 5 s: done at about 10 s, so the next poll is about 5 s later, not 7.5
    delay = schedule.next_delay(status(50), now=5)
    assert 5 <= delay <= 6


def test_poll_never_sooner_than_the_shortest_interval():
    schedule = PollSchedule(first=5, shortest=1, started=0)
    schedule.first_delay(0)
    assert schedule.next_delay(status(99), now=5) == 1


def test_a_far_estimate_is_capped_at_the_longest_interval():
    schedule = PollSchedule(first=5, longest=60, started=0)
    schedule.first_delay(0)
    assert schedule.next_delay(status(1), now=5) == 60  # 1 % in 5 s: about 500 s to go


@pytest.mark.parametrize(
    ("samples", "words"),
    [
        ([status(40), status(40)], ["stuck at 40%"]),
        ([status(80), status(20)], ["went backwards", "80% -> 20%"]),
        ([status(10), status(None, ExportState.UNKNOWN, "Exploding")], ["'Exploding'", "not understood"]),
    ],
    ids=["stuck", "backwards", "unknown"],
)
def test_failure_reason_says_which(samples, words):
    schedule = PollSchedule(started=0)
    schedule.first_delay(0)
    for i, sample in enumerate(samples):
        schedule.next_delay(sample, now=5 + i)
    failure = schedule.failure(1800, 1812.4)
    for word in words:
        assert word in str(failure)
    assert "after 1812 s (--export-timeout 1800 s)" in str(failure)
    assert failure.reason and "%" not in failure.reason  # a group, not this server's numbers


def test_first_poll_waits_until_most_exports_of_the_run_are_done():
    durations = ExportDurations(spread=(0.9, 0.9))
    for seconds in [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]:
        durations.add(seconds)
    schedule = PollSchedule(first=5, longest=60, started=100, durations=durations)
    # the 90th percentile, measured from the export's start, a little after
    assert schedule.first_delay(now=100) == pytest.approx(14 * 1.05)
    late = PollSchedule(first=5, longest=60, started=100, durations=durations)
    assert late.first_delay(now=110) == pytest.approx(14 * 1.05 - 10)


def test_first_poll_uses_the_interval_until_enough_exports_are_seen():
    durations = ExportDurations()
    durations.add(30)
    assert PollSchedule(first=5, durations=durations).first_delay(0) == 5


def test_polls_teach_the_fleet_estimate():
    durations = ExportDurations()
    for _ in range(5):
        schedule = PollSchedule(started=0, durations=durations)
        schedule.first_delay(0)
        schedule.next_delay(status(25), now=5)  # 25 % after 5 s: about 20 s in all
    # 25 % is 25 to 26 %: the fleet's sample takes the middle (it took 100/25 x 5 s before)
    assert durations.quantile(0.5) == pytest.approx(5 * 100 / 25.5)


def test_resumed_export_is_timed_from_its_created_at():
    wall_now = 1_700_000_000.0
    created = datetime.fromtimestamp(wall_now - 30, UTC)
    schedule = PollSchedule(started=500, resumed=True, wall=lambda: wall_now)
    schedule.first_delay(500)
    # 50 % reached 30 s after it was created: another 30 s to go, not 0.5 s
    delay = schedule.next_delay(ExportStatus("1", ExportState.RUNNING, "Running", 50, created), now=500)
    assert 30 <= delay <= 34


def test_our_own_export_ignores_a_skewed_created_at():
    wall_now = 1_700_000_000.0
    skewed = datetime.fromtimestamp(wall_now - 3600, UTC)  # server clock an hour behind
    schedule = PollSchedule(started=500, wall=lambda: wall_now)
    schedule.first_delay(500)
    delay = schedule.next_delay(ExportStatus("1", ExportState.RUNNING, "Running", 50, skewed), now=505)
    assert 5 <= delay <= 7


def test_a_resumed_export_created_longer_ago_than_any_export_may_take_is_not_believed():
    """A created_at from years ago (a clock far off): timing from it would make this export's
    estimate, and through `durations` the fleet's, absurdly long."""
    wall_now = 1_700_000_000.0
    ancient = datetime.fromtimestamp(wall_now - 5 * 365 * 86400, UTC)
    durations = ExportDurations()
    schedule = PollSchedule(started=500, resumed=True, max_age=1800, durations=durations, wall=lambda: wall_now)
    schedule.first_delay(500)
    delay = schedule.next_delay(ExportStatus("1", ExportState.RUNNING, "Running", 50, ancient), now=505)
    assert 5 <= delay <= 7  # timed from when we took it up, 5 s ago
    assert durations.quantile(0.5) is None or durations.quantile(0.5) < 60


def test_the_latest_end_the_percentages_allow_is_aimed_at():
    """A percentage is rounded down: 33 % after 5 s may end as late as 5 x 100 / 33 s."""
    schedule = PollSchedule(first=5, longest=60, started=0)
    schedule.first_delay(0)
    latest_end = 5 * 100 / 33
    delay = schedule.next_delay(status(33), now=5)
    assert latest_end - 5 < delay <= (latest_end - 5) * 1.02 + 0.2
    # two reports: no faster than from the first's top (34 %) to the latest's bottom (60 %)
    delay = schedule.next_delay(status(60), now=9)
    assert delay == pytest.approx((40 / (26 / 4)) * 1.02 + 0.2)


def test_a_first_poll_waits_for_the_fleet_estimate_learned_meanwhile():
    """Every export asked for before any was seen gets --poll-interval; when its poll comes
    and the fleet has been seen meanwhile, it waits for the fleet's likely end instead."""
    durations = ExportDurations(spread=(0.9, 0.9))
    schedule = PollSchedule(first=5, longest=600, started=0, durations=durations)
    assert schedule.first_delay(0) == 5
    for seconds in [80, 90, 100, 110, 120]:
        durations.add(seconds)
    assert schedule.postpone(5) == pytest.approx(120 * 1.05 - 5)
    assert schedule.postpone(5) == 0  # once
    schedule.next_delay(status(96), now=126)
    assert schedule.postpone(130) == 0  # and never after a poll


def test_a_prior_sample_answers_until_the_runs_own_push_it_out():
    durations = ExportDurations(size=30, prior=[60, 70, 80, 90, 100, 110, 120], spread=(0.9, 0.9))
    assert PollSchedule(first=5, longest=600, started=0, durations=durations).first_delay(0) == pytest.approx(126)
    assert durations.summary() == []  # nothing of this run's own to keep
    for _ in range(30):
        durations.add(10)
    assert durations.quantile(0.9) == 10
    assert durations.summary() == [10] * ExportDurations.KEPT


def test_an_export_found_done_at_a_first_poll_counts_as_a_duration_of_the_fleet_below_its_aim():
    """Its poll came after the fleet's q-th percentile (5 % later, and our queue's delay): as a
    sample it is a duration of the fleet's below that, or each run's estimate would drift later."""
    prior = [(i * 37) % 100 + 1 for i in range(100)]  # 1 to 100, in no order
    durations = ExportDurations(size=100, prior=prior, spread=(0.9, 0.9))
    for _ in range(100):  # the prior pushed out by these, one for one
        schedule = PollSchedule(first=5, longest=600, started=0, durations=durations)
        schedule.first_delay(0)
        schedule.completed(now=109)
    assert durations.quantile(1.0) <= 91
    assert durations.quantile(0.5) == pytest.approx(45, abs=5)  # the lower part stays


def test_first_polls_spread_over_the_fleets_likely_ends():
    """Exports asked for together are not all polled at one percentile (then all downloaded
    at once): their first polls spread evenly from the 60th to the 95th."""
    durations = ExportDurations(prior=range(1, 101))
    delays = sorted(
        PollSchedule(first=5, longest=600, started=0, durations=durations).first_delay(0) for _ in range(200)
    )
    assert delays[0] >= 60 * 1.05 and delays[-1] <= 96 * 1.05
    for i in range(0, 200, 20):  # evenly
        assert delays[i] / 1.05 == pytest.approx(60 + 35 * i / 200, abs=3)


def test_a_first_poll_aimed_at_long_exports_is_not_cut_to_the_backoffs_cap():
    """Exports of 60-120 s: --poll-max (60 s) caps the backoff, not the aim, else every first
    poll came at 60 s, when almost no export was done: a poll more per server (issue 14)."""
    durations = ExportDurations(spread=(0.9, 0.9))
    for seconds in [80, 90, 100, 110, 120]:
        durations.add(seconds)
    assert PollSchedule(first=5, longest=60, started=0, durations=durations).first_delay(0) == pytest.approx(126)
    waiting = PollSchedule(first=5, longest=60, started=0, durations=ExportDurations(spread=(0.9, 0.9)))
    assert waiting.first_delay(0) == 5
    waiting.durations = durations
    assert waiting.postpone(5) == pytest.approx(126 - 5)
    capped = PollSchedule(first=5, longest=60, started=0, max_age=100, durations=durations)
    assert capped.first_delay(0) == 100  # never past the longest an export may take


def test_a_poll_that_waited_for_its_turn_gives_no_duration_only_a_prompt_one_does():
    """Before the fleet's durations are known, a first poll due at 5 s that waited 20 s for the
    rate limiter (exports go first) and found the export done says nothing of how long exports
    take: taken as 25 s, every later first poll would wait that long (issue 14)."""
    durations = ExportDurations()
    for _ in range(ExportDurations.MIN_SAMPLES):
        schedule = PollSchedule(first=5, started=0, durations=durations)
        schedule.first_delay(0)
        schedule.completed(now=25, due=5)
    assert durations.quantile(0.5) is None
    for _ in range(ExportDurations.MIN_SAMPLES):
        schedule = PollSchedule(first=5, started=0, durations=durations)
        schedule.first_delay(0)
        schedule.completed(now=5.2, due=5)
    assert durations.quantile(0.5) == pytest.approx(5.2)


def test_a_servers_own_earlier_time_is_aimed_at_rather_than_the_fleets():
    durations = ExportDurations(spread=(0.9, 0.9))
    for seconds in [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]:
        durations.add(seconds)
    own = PollSchedule(started=100, durations=durations, expected=OwnTime(6.0, exact=True))
    assert own.first_delay(now=100) == pytest.approx(6 * PollSchedule.OWN_MARGIN)
    assert own.postpone(now=101) == 0  # nothing to wait for: its own time is known
    # Found done there: its time confirmed, kept exact (a bound had the next run poll it early
    # and find it running, every other run: issue 14).
    own.completed(now=100 + 6.2)
    assert own.took == OwnTime(6.0, exact=True)


def test_a_bound_from_an_earlier_run_caps_the_fleets_aim_and_stays_a_bound():
    durations = ExportDurations(spread=(0.9, 0.9))
    for seconds in [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]:
        durations.add(seconds)
    unbounded = PollSchedule(started=0, durations=durations, expected=OwnTime(30.0, exact=False))
    assert unbounded.first_delay(now=0) == pytest.approx(14 * 1.05)  # the fleet's aim is sooner
    bounded = PollSchedule(started=0, durations=durations, expected=OwnTime(8.0, exact=False))
    assert bounded.first_delay(now=0) == pytest.approx(8.0)  # done by 8 s last time: no later
    bounded.completed(now=8.1)
    assert bounded.took == OwnTime(8.0, exact=False)


def test_an_exports_own_time_is_where_its_percentages_put_its_end_else_a_bound():
    measured = PollSchedule(first=5, started=0)
    measured.first_delay(0)
    measured.next_delay(status(50), now=5)  # half-way at 5 s: done by 10 s at the latest
    measured.completed(now=12)  # found done two seconds after
    assert measured.took is not None and measured.took.exact
    assert 9.9 <= measured.took.seconds < 10.5
    # Done at its first poll, nothing else known: a bound, the poll's moment, not the fleet's draw.
    durations = ExportDurations(spread=(0.9, 0.9))
    for seconds in [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]:
        durations.add(seconds)
    found = PollSchedule(started=0, durations=durations)
    found.first_delay(0)
    found.completed(now=14.7)
    assert found.took == OwnTime(14.7, exact=False)


def test_an_export_that_may_end_the_run_aims_at_the_middle_of_what_its_percentage_allows():
    """33 % after 5 s: it ends between 5 x 100 / 34 and 5 x 100 / 33 s. `next_delay` aims past
    the latest, with a margin; an export that may end the run is polled at the middle, and
    near its end no sooner than `TIGHTEST` after."""
    schedule = PollSchedule(first=5, longest=60, started=0)
    schedule.first_delay(0)
    assert schedule.tight_delay(0) is None  # nothing known yet
    late = schedule.next_delay(status(33), now=5)
    assert schedule.end == pytest.approx(5 * 100 / 33)
    tight = schedule.tight_delay(5)
    assert tight == pytest.approx(5 * 100 / 33.5 - 5)
    assert tight < late - 0.2
    schedule.next_delay(status(99), now=14.9)
    assert schedule.tight_delay(14.9) == PollSchedule.TIGHTEST  # the middle of 99 % is 0.07 s away


def test_an_export_without_percentages_has_no_tight_aim():
    schedule = PollSchedule(first=2, longest=60, started=0)
    schedule.first_delay(0)
    schedule.next_delay(status(None), now=2)
    assert schedule.end is None and schedule.tight_delay(2) is None
