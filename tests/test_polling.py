"""The poll schedule: backoff without knowledge, aiming at the estimate with it, and failure reasons."""

from __future__ import annotations

import pytest

from collector.api import ExportState, ExportStatus
from collector.polling import PollSchedule


def status(percentage, state=ExportState.RUNNING, raw="Running"):
    return ExportStatus("1", state, raw, percentage, None)


def test_backoff_grows_to_the_longest_interval_without_progress_information():
    schedule = PollSchedule(first=5, longest=60, started=0)
    delays = [schedule.first_delay()]
    now = 0.0
    for _ in range(12):
        now += delays[-1]
        delays.append(schedule.next_delay(status(None), now))
    assert delays[:4] == [5, 7.5, 11.25, 16.875]
    assert max(delays) == 60 and delays[-1] == 60


def test_poll_aims_just_after_the_estimated_completion():
    schedule = PollSchedule(first=5, longest=60, started=0)
    schedule.first_delay()
    # 50 % after 5 s: done at about 10 s, so the next poll is about 5 s later, not 7.5
    delay = schedule.next_delay(status(50), now=5)
    assert 5 <= delay <= 6


def test_poll_never_sooner_than_the_shortest_interval():
    schedule = PollSchedule(first=5, shortest=1, started=0)
    schedule.first_delay()
    assert schedule.next_delay(status(99), now=5) == 1


def test_slow_export_is_polled_at_the_backoff_not_the_far_estimate():
    schedule = PollSchedule(first=5, longest=60, started=0)
    schedule.first_delay()
    assert schedule.next_delay(status(1), now=5) == 7.5


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
    schedule.first_delay()
    for i, sample in enumerate(samples):
        schedule.next_delay(sample, now=5 + i)
    reason = schedule.failure_reason(1800)
    for word in words:
        assert word in reason
    assert "1800 s" in reason
