"""The limiter's rules with the in-process store and a fake clock: what a request and a
turn are charged, refusals and their headers, budget windows that reset, seeding from the
ledger, and what the failure modes do when the store cannot answer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vocalbridge_common.errors import BudgetExceeded, LimitsUnavailable, RateLimited
from vocalbridge_common.limits.limiter import FailureMode, Limiter
from vocalbridge_common.limits.model import (
    TENANT,
    BudgetConfig,
    BudgetPeriod,
    LimitDefaults,
    RateLimitConfig,
    Target,
    TenantLimits,
    fixed_window,
    month_window,
)
from vocalbridge_common.limits.store import MemoryStore, StoreUnavailable

KEY = "key_00000000000000000000000001"
AGENT = "agt_00000000000000000000000001"
START = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Ledger:
    def __init__(self, spent: int = 0) -> None:
        self.spent_value = spent
        self.asked = 0

    async def spent(self, tenant_id, target, window) -> int:
        self.asked += 1
        return self.spent_value


class BrokenStore(MemoryStore):
    async def admit(self, *args, **kwargs):
        raise StoreUnavailable("down")

    async def settle(self, *args, **kwargs):
        raise StoreUnavailable("down")


def limits(*, rates=(), budgets=()) -> TenantLimits:
    return TenantLimits.of("ten_1", rates, budgets)


async def test_a_tenant_without_limits_never_reaches_the_store():
    limiter = Limiter(BrokenStore())
    assert await limiter.check_request(limits(), KEY) == {}
    assert await limiter.start_turn(limits(), KEY, AGENT, 100) is None


async def test_requests_are_charged_to_the_tenant_and_the_key_and_the_tightest_is_reported():
    clock = Clock()
    limiter = Limiter(MemoryStore(), clock=clock)
    config = limits(rates=[RateLimitConfig(TENANT, 10), RateLimitConfig(Target.key(KEY), 3)])
    headers = [await limiter.check_request(config, KEY) for _ in range(3)]
    assert [h["x-ratelimit-remaining"] for h in headers] == ["2", "1", "0"]
    assert headers[0]["x-ratelimit-limit"] == "3" and headers[-1]["x-ratelimit-reset"] == "60"
    with pytest.raises(RateLimited) as refused:
        await limiter.check_request(config, KEY)
    assert refused.value.headers["retry-after"] == "20"
    assert refused.value.metadata["rateLimit"] == f"rateLimits/{KEY}"
    # Another key of the tenant still has the tenant's room (7 left of 10).
    other = "key_00000000000000000000000002"
    assert (await limiter.check_request(config, other))["x-ratelimit-remaining"] == "6"
    clock.now += 20
    assert (await limiter.check_request(config, KEY))["x-ratelimit-remaining"] == "0"


async def test_tokens_of_finished_turns_refuse_later_requests_until_they_refill():
    clock = Clock()
    limiter = Limiter(MemoryStore(), clock=clock)
    config = limits(rates=[RateLimitConfig(TENANT, None, 600)])
    ticket = await limiter.start_turn(config, KEY, AGENT, 0)
    await limiter.finish_turn(ticket, tokens=900, spent_micros=0)
    with pytest.raises(RateLimited) as refused:
        await limiter.check_request(config, KEY)
    assert refused.value.metadata["limit"] == "tokensPerMinute"
    assert refused.value.headers["retry-after"] == "31"
    clock.now += 31
    assert await limiter.check_request(config, KEY) == {}


async def test_a_budget_reserves_the_worst_case_settles_the_actual_and_resets_with_its_window():
    clock = Clock()
    ledger = Ledger(spent=0)
    limiter = Limiter(MemoryStore(), clock=clock, spent=ledger)
    budget = BudgetConfig(TENANT, 1000, BudgetPeriod.FIXED_WINDOW, 60)
    config = limits(budgets=[budget])
    first = await limiter.start_turn(config, KEY, AGENT, 600)
    assert ledger.asked == 1  # the window's first use is seeded from the ledger
    with pytest.raises(BudgetExceeded) as refused:
        await limiter.start_turn(config, KEY, AGENT, 600)
    assert refused.value.headers == {"x-should-retry": "false"}
    assert refused.value.metadata["reservedMicros"] == "600"
    await limiter.finish_turn(first, tokens=10, spent_micros=250)
    window, state = await limiter.budget_state("ten_1", budget, datetime.fromtimestamp(clock.now, UTC))
    assert (state.spent, state.reserved) == (250, 0)
    second = await limiter.start_turn(config, KEY, AGENT, 600)
    await limiter.release_turn(second)  # a failed turn gives its reservation back
    assert (await limiter.budget_state("ten_1", budget, datetime.fromtimestamp(clock.now, UTC)))[1].reserved == 0
    await limiter.start_turn(config, KEY, AGENT, 750)
    with pytest.raises(BudgetExceeded):
        await limiter.start_turn(config, KEY, AGENT, 1)
    clock.now = window.end.timestamp()  # the next window: a fresh budget
    assert await limiter.start_turn(config, KEY, AGENT, 1000) is not None


async def test_every_applicable_budget_must_have_room():
    limiter = Limiter(MemoryStore(), clock=Clock(), spent=Ledger())
    config = limits(budgets=[BudgetConfig(TENANT, 10_000), BudgetConfig(Target.agent(AGENT), 500)])
    with pytest.raises(BudgetExceeded) as refused:
        await limiter.start_turn(config, KEY, AGENT, 600)
    assert refused.value.metadata["budget"] == f"budgets/{AGENT}"
    # The refusal reserved nothing in the tenant's budget either.
    assert await limiter.start_turn(config, KEY, "agt_00000000000000000000000002", 10_000) is not None


async def test_a_store_that_cannot_answer_fails_open_or_closed_as_configured():
    config = limits(rates=[RateLimitConfig(TENANT, 5)], budgets=[BudgetConfig(TENANT, 1000)])
    opened = Limiter(BrokenStore(), rate_failure=FailureMode.OPEN, budget_failure=FailureMode.OPEN, spent=Ledger())
    assert await opened.check_request(config, KEY) == {}
    ticket = await opened.start_turn(config, KEY, AGENT, 5000)
    await opened.finish_turn(ticket, tokens=5, spent_micros=5)  # never raises
    closed = Limiter(BrokenStore(), rate_failure=FailureMode.CLOSED, budget_failure=FailureMode.CLOSED)
    with pytest.raises(LimitsUnavailable) as refused:
        await closed.check_request(config, KEY)
    assert refused.value.headers["retry-after"] == "1"
    with pytest.raises(LimitsUnavailable):
        await closed.start_turn(config, KEY, AGENT, 1)


def test_windows_are_calendar_months_in_utc_or_fixed_from_the_epoch():
    december = month_window(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert (december.start, december.end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    day = fixed_window(datetime(2026, 11, 26, 13, 5, tzinfo=UTC), 86_400)
    assert (day.start, day.end) == (datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC))


def test_defaults_apply_only_where_a_tenant_has_no_limit_of_its_own():
    defaults = LimitDefaults(requests_per_minute=100, monthly_budget_micros=5_000_000)
    applied = defaults.apply(limits())
    assert applied.rate(TENANT) == RateLimitConfig(TENANT, 100, None)
    assert applied.budget(TENANT) == BudgetConfig(TENANT, 5_000_000)
    own = defaults.apply(limits(rates=[RateLimitConfig(TENANT, 7)]))
    assert own.rate(TENANT) == RateLimitConfig(TENANT, 7)
    assert LimitDefaults().apply(limits()).empty
