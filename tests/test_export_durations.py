"""ExportDurations keeps its sample sorted as estimates come and go (issue 14, section 3: the
quantile is asked on every export's first poll): the quantiles and the summary are exactly
those of the bounded sample sorted afresh, whatever the order and repeats of the estimates."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from collector.sweep.polling import ExportDurations

SECONDS = st.one_of(st.sampled_from([0.0, -1.0, 5.0, 7.5]), st.floats(min_value=-10, max_value=1e6))


@given(
    size=st.integers(min_value=1, max_value=12),
    prior=st.lists(SECONDS, max_size=20),
    added=st.lists(SECONDS, max_size=60),
    q=st.floats(min_value=0.0, max_value=1.0),
)
def test_the_kept_order_is_the_sample_sorted(size: int, prior: list[float], added: list[float], q: float) -> None:
    durations = ExportDurations(size=size, prior=prior)
    sample: deque[float] = deque((s for s in prior if s > 0), maxlen=size)
    for seconds in added:
        durations.add(seconds)
        if seconds > 0:
            sample.append(seconds)
        ordered = sorted(sample)
        expected = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if len(ordered) >= 5 else None
        assert durations.quantile(q) == expected
    if durations.seen >= ExportDurations.MIN_SAMPLES:
        ordered = sorted(sample)
        last = len(ordered) - 1
        kept = [round(ordered[round(last * i / (ExportDurations.KEPT - 1))], 3) for i in range(ExportDurations.KEPT)]
        assert durations.summary() == kept
