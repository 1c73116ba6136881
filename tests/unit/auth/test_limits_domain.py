"""Limits and budgets as the auth API manages them, and the last-use recorder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vocalbridge_auth.domain.limits import (
    BUDGET_FIELDS,
    BUDGETS,
    RATE_LIMIT_FIELDS,
    RATE_LIMITS,
    BudgetPatch,
    RateLimitPatch,
    etag_of,
    parse_limit_name,
    patched_budget,
    patched_rate_limit,
    resolve_mask,
)
from vocalbridge_auth.last_use import LastUseRecorder
from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.limits.model import TENANT, BudgetConfig, BudgetPeriod, RateLimitConfig, Target, TargetKind

KEY = "key_00000000000000000000000001"


def fields_of(error: InvalidArgument) -> set[str]:
    return {v.field for v in error.field_violations}


def test_names_name_a_target_or_nothing():
    assert parse_limit_name("rateLimits/tenant", RATE_LIMITS) == TENANT
    assert parse_limit_name(f"budgets/{KEY}", BUDGETS) == Target(TargetKind.KEY, KEY)
    assert parse_limit_name("budgets/agt_00000000000000000000000001", BUDGETS).kind is TargetKind.AGENT
    for bad in (
        "rateLimits/tenant",
        "budgets/key_short",
        "budgets/ten_00000000000000000000000001",
        "budgets/",
        "x/tenant",
    ):
        assert parse_limit_name(bad, BUDGETS) is None, bad


def test_masks_accept_both_spellings_and_name_every_bad_path():
    assert resolve_mask(["requestsPerMinute", "tokens_per_minute"], RATE_LIMIT_FIELDS, "RateLimit") == RATE_LIMIT_FIELDS
    with pytest.raises(InvalidArgument) as caught:
        resolve_mask(["etag", "nope", "limitMicros"], BUDGET_FIELDS, "Budget")
    assert [v.description for v in caught.value.field_violations] == [
        "'etag' cannot be changed",
        "'nope' is not a field of Budget",
    ]


def test_rate_limit_values_are_bounded_and_a_limit_limits_something():
    fields = frozenset(RATE_LIMIT_FIELDS)
    assert patched_rate_limit(TENANT, None, RateLimitPatch(1, 10_000_000_000), fields) == RateLimitConfig(
        TENANT, 1, 10_000_000_000
    )
    with pytest.raises(InvalidArgument) as caught:
        patched_rate_limit(TENANT, None, RateLimitPatch(0, 10_000_000_001), fields)
    assert fields_of(caught.value) == {"rate_limit.requests_per_minute", "rate_limit.tokens_per_minute"}
    with pytest.raises(InvalidArgument) as caught:
        patched_rate_limit(
            TENANT, RateLimitConfig(TENANT, 5), RateLimitPatch(None, None), frozenset({"requests_per_minute"})
        )
    assert fields_of(caught.value) == {"rate_limit"}
    # Only the masked field changes.
    kept = patched_rate_limit(
        TENANT, RateLimitConfig(TENANT, 5, 7), RateLimitPatch(9, None), frozenset({"requests_per_minute"})
    )
    assert kept == RateLimitConfig(TENANT, 9, 7)


def test_budget_windows_are_whole_seconds_and_only_for_fixed_windows():
    fields = frozenset(BUDGET_FIELDS)
    assert patched_budget(TENANT, None, BudgetPatch(10, None, None), frozenset({"limit_micros"})) == BudgetConfig(
        TENANT, 10
    )
    fixed = patched_budget(TENANT, None, BudgetPatch(10, BudgetPeriod.FIXED_WINDOW, 3600), fields)
    assert (fixed.period, fixed.window_seconds) == (BudgetPeriod.FIXED_WINDOW, 3600)
    for patch, bad in (
        (BudgetPatch(0, None, None), {"budget.limit_micros"}),
        (BudgetPatch(10**15 + 1, None, None), {"budget.limit_micros"}),
        (BudgetPatch(10, BudgetPeriod.FIXED_WINDOW, None), {"budget.window_duration"}),
        (BudgetPatch(10, BudgetPeriod.FIXED_WINDOW, 0), {"budget.window_duration"}),
        (BudgetPatch(10, BudgetPeriod.FIXED_WINDOW, None, window_has_fraction=True), {"budget.window_duration"}),
        (BudgetPatch(10, BudgetPeriod.CALENDAR_MONTH, 60), {"budget.window_duration"}),
        (BudgetPatch(None, None, None, period_unknown=True), {"budget.limit_micros", "budget.period"}),
    ):
        with pytest.raises(InvalidArgument) as caught:
            patched_budget(TENANT, None, patch, patch.populated() | {"limit_micros"})
        assert fields_of(caught.value) == bad, patch
    # Switching an existing fixed window to calendar months drops its length.
    monthly = patched_budget(TENANT, fixed, BudgetPatch(None, BudgetPeriod.CALENDAR_MONTH, None), frozenset({"period"}))
    assert monthly == BudgetConfig(TENANT, 10)


def test_etags_change_with_each_revision_and_each_life_of_a_limit():
    at = datetime(2026, 11, 26, tzinfo=UTC)
    later = datetime(2026, 11, 27, tzinfo=UTC)
    assert etag_of(TENANT, 1, at) == etag_of(TENANT, 1, at)
    assert len({etag_of(TENANT, 1, at), etag_of(TENANT, 2, at), etag_of(TENANT, 1, later)}) == 3


async def test_last_use_is_noted_at_most_once_a_minute_and_written_in_one_batch():
    now = [100.0]
    written: list[dict] = []

    async def write(used):
        written.append(dict(used))

    recorder = LastUseRecorder(write, monotonic=lambda: now[0])
    for _ in range(1000):
        recorder.used(KEY)
    recorder.used("key_00000000000000000000000002")
    await recorder.flush()
    assert [set(batch) for batch in written] == [{KEY, "key_00000000000000000000000002"}]
    now[0] += 59
    recorder.used(KEY)
    await recorder.flush()
    assert len(written) == 1
    now[0] += 1
    recorder.used(KEY)
    await recorder.flush()
    assert set(written[-1]) == {KEY}


async def test_last_use_that_cannot_be_written_is_kept_for_the_next_flush():
    calls = []

    async def flaky(used):
        calls.append(dict(used))
        if len(calls) == 1:
            raise OSError("database down")

    recorder = LastUseRecorder(flaky)
    recorder.used(KEY)
    await recorder.flush()
    await recorder.flush()
    assert [set(c) for c in calls] == [{KEY}, {KEY}]
