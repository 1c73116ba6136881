"""The pure half of the daily rollups: how a report's range splits into whole UTC days
(read from the rollups) and the partial days at its edges (read from the ledger), and the
latency histogram whose percentiles stand in for exact ones, with the error bound the API
documents."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from vocalbridge_billing.domain import (
    LATENCY_RELATIVE_ERROR,
    LATENCY_SUB_BUCKET_BITS,
    DaySplit,
    UsageFilter,
    histogram_percentile,
    latency_bucket,
    latency_bucket_bounds,
    latency_bucket_value,
    ledger_only,
    percentile_cont,
    report_split,
    split_by_day,
)

BASE = datetime(2026, 11, 20, tzinfo=UTC)
MIDNIGHTS = [BASE + timedelta(days=k) for k in range(5)]
MAX_LATENCY = 2**63 - 1  # the ledger's bigint


def _instant() -> st.SearchStrategy[datetime]:
    """Times over four days, UTC midnights and their neighbours often."""
    anywhere = st.integers(0, 4 * 86_400 * 10**6).map(lambda us: BASE + timedelta(microseconds=us))
    near_midnight = st.tuples(st.sampled_from(MIDNIGHTS), st.sampled_from([-1, 0, 1])).map(
        lambda pair: pair[0] + timedelta(microseconds=pair[1])
    )
    return st.one_of(anywhere, near_midnight)


latencies = st.one_of(
    st.integers(0, 200),
    st.integers(0, MAX_LATENCY),
    st.integers(1, 62).flatmap(lambda bits: st.sampled_from([2**bits - 1, 2**bits, 2**bits + 1])),
    st.integers(10**6, 10**10),  # a millisecond to ten seconds: provider calls
)


# -- the split --------------------------------------------------------------------


def _day_of(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%d")


def _read_from(split: DaySplit, instant: datetime) -> list[str]:
    """Which parts of the split an event at `instant` is read by (the rollups: "days")."""
    parts = []
    if split.days is not None:
        first, end = split.days
        if (first is None or _day_of(instant) >= first) and _day_of(instant) < end:
            parts.append("days")
    for start, end in split.windows:
        if (start is None or start <= instant) and instant < end:
            parts.append(f"window {start}..{end}")
    return parts


@given(start=st.one_of(st.none(), _instant()), end=_instant(), events=st.lists(_instant(), max_size=30))
def test_a_split_reads_every_event_of_the_range_once_and_no_other(start, end, events):
    assume(start is None or start < end)
    split = split_by_day(start, end)
    for instant in [*events, *MIDNIGHTS, end, end - timedelta(microseconds=1)]:
        in_range = (start is None or start <= instant) and instant < end
        assert len(_read_from(split, instant)) == (1 if in_range else 0), (split, instant)


@given(start=st.one_of(st.none(), _instant()), end=_instant())
def test_the_ledger_is_read_for_less_than_a_day_at_either_edge(start, end):
    assume(start is None or start < end)
    split = split_by_day(start, end)
    if split.days is None:
        assert split.windows == ((start, end),) and start is not None and end - start < timedelta(days=2)
        return
    first, last = split.days
    assert first is None or first < last
    for window_start, window_end in split.windows:
        assert window_start is not None and window_end - window_start < timedelta(days=1)
        assert _day_of(window_start) == _day_of(window_end - timedelta(microseconds=1))


def test_splits_by_hand():
    noon = BASE + timedelta(hours=12)
    assert split_by_day(BASE, BASE + timedelta(days=3)) == DaySplit(("2026-11-20", "2026-11-23"), ())
    assert split_by_day(noon, noon + timedelta(days=2)) == DaySplit(
        ("2026-11-21", "2026-11-22"),
        ((noon, BASE + timedelta(days=1)), (BASE + timedelta(days=2), noon + timedelta(days=2))),
    )
    assert split_by_day(None, noon) == DaySplit((None, "2026-11-20"), ((BASE, noon),))
    # Across one midnight but no whole day: all of it from the ledger.
    assert split_by_day(noon, noon + timedelta(days=1)) == DaySplit(None, ((noon, noon + timedelta(days=1)),))
    assert split_by_day(noon, noon + timedelta(hours=1)) == DaySplit(None, ((noon, noon + timedelta(hours=1)),))


def test_a_session_filter_is_read_from_the_ledger_alone():
    ranged = UsageFilter(start=BASE, end=BASE + timedelta(days=3))
    assert report_split(ranged).days == ("2026-11-20", "2026-11-23")
    with_session = UsageFilter(start=BASE, end=BASE + timedelta(days=3), session_id="ses_1")
    assert (
        report_split(with_session) == ledger_only(with_session) == DaySplit(None, ((BASE, BASE + timedelta(days=3)),))
    )
    with pytest.raises(ValueError):
        ledger_only(UsageFilter(start=BASE))


# -- the latency histogram -------------------------------------------------------------


@given(latencies)
@example(0)
@example(63)
@example(64)
@example(MAX_LATENCY)
def test_a_latency_lies_in_its_bucket_and_the_midpoint_is_within_the_bound(latency):
    bucket = latency_bucket(latency)
    low, high = latency_bucket_bounds(bucket)
    assert low <= latency <= high
    assert abs(latency_bucket_value(bucket) - latency) <= latency * LATENCY_RELATIVE_ERROR
    if latency < 2 ** (LATENCY_SUB_BUCKET_BITS + 1):
        assert (low, high) == (latency, latency)  # small latencies are exact


def test_buckets_tile_the_latencies_in_order():
    """Consecutive buckets meet end to end, from 0 up to the largest bigint: a bucket's
    number orders latencies, which the percentile walk relies on."""
    expected_low = 0
    bucket = 0
    while True:
        low, high = latency_bucket_bounds(bucket)
        assert low == expected_low and high >= low, bucket
        assert latency_bucket(low) == latency_bucket(high) == bucket
        if high >= MAX_LATENCY:
            break
        expected_low, bucket = high + 1, bucket + 1
    assert latency_bucket(MAX_LATENCY) == bucket
    # 32 buckets per doubling: about 1,900 buckets cover every possible latency.
    assert bucket < 64 * 32


def test_the_bound_is_tight_not_vacuous():
    """The worst case sits at the bottom of a wide bucket, just under the bound."""
    worst = max(
        abs(latency_bucket_value(latency_bucket(low)) - low) / low
        for low in (latency_bucket_bounds(b)[0] for b in range(64, 2000))
    )
    assert LATENCY_RELATIVE_ERROR * 0.95 < worst <= LATENCY_RELATIVE_ERROR


def _histogram(values: list[int]) -> list[tuple[int, int]]:
    return sorted(Counter(latency_bucket(value) for value in values).items())


@given(st.lists(latencies, min_size=1, max_size=300), st.sampled_from([0.0, 0.05, 0.5, 0.95, 0.99, 1.0]))
def test_histogram_percentiles_are_within_the_documented_bound_of_the_exact_ones(values, fraction):
    exact = percentile_cont(sorted(values), fraction)
    estimate = histogram_percentile(_histogram(values), fraction)
    assert exact is not None and estimate is not None
    assert abs(estimate - exact) <= exact * LATENCY_RELATIVE_ERROR * (1 + 1e-12)


@given(st.lists(latencies, min_size=1, max_size=100), st.lists(latencies, min_size=1, max_size=100))
def test_histograms_merge_by_adding_counts(first, second):
    """The histograms of two days, added, give what the two days' latencies together give."""
    merged = Counter(dict(_histogram(first))) + Counter(dict(_histogram(second)))
    for fraction in (0.5, 0.95):
        assert histogram_percentile(sorted(merged.items()), fraction) == histogram_percentile(
            _histogram(first + second), fraction
        )


def test_histogram_percentiles_by_hand():
    assert histogram_percentile([], 0.5) is None
    assert histogram_percentile([(latency_bucket(40), 3)], 0.95) == 40  # exact below 64 ns
    # 100 and 200 ms: percentile_cont gives 150 ms; the estimate is within 1/64 of it.
    ms = 1_000_000
    estimate = histogram_percentile(_histogram([100 * ms, 200 * ms]), 0.5)
    assert estimate is not None and estimate != 150 * ms and abs(estimate - 150 * ms) <= 150 * ms / 64
    # The median of many equal latencies is their bucket's midpoint.
    many = [123_456_789] * 101
    assert histogram_percentile(_histogram(many), 0.5) == latency_bucket_value(latency_bucket(123_456_789))
    assert statistics.median(many) == 123_456_789
