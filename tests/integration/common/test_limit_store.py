"""The counter rules of rate limits and budgets, run against both stores: Redis (the Lua
scripts, on the machine's server under a key prefix of the test's own) and the in-process
fallback. Time is given to the store, so no test waits."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import REDIS_URL, throwaway_redis
from vocalbridge_common.limits.redis_store import RedisStore
from vocalbridge_common.limits.store import Bucket, Hold, MemoryStore, Spend, StoreUnavailable

NOW = 1_800_000_000_000  # epoch ms
MINUTE = 60_000


@pytest.fixture(params=["redis", "memory"])
async def store(request, redis_prefix):
    if request.param == "memory":
        yield MemoryStore(), redis_prefix
        return
    redis_store = RedisStore.from_url(REDIS_URL, 2.0)
    yield redis_store, redis_prefix
    await redis_store.close()


async def test_a_request_bucket_lets_its_limit_through_at_once_then_refills_continuously(store):
    counters, p = store
    bucket = Bucket(p + "req", limit=5)
    allowed = [(await counters.admit(NOW, [bucket])).allowed for _ in range(8)]
    assert allowed == [True] * 5 + [False] * 3
    refused = await counters.admit(NOW, [bucket])
    assert refused.refused_bucket == 0
    # One request's worth refills every 12 s: the refusal says so, and it is true.
    assert refused.buckets[0].retry_after_ms == 12_000
    assert not (await counters.admit(NOW + 11_999, [bucket])).allowed
    later = await counters.admit(NOW + 12_000, [bucket])
    assert later.allowed and later.buckets[0].remaining == 0
    assert later.buckets[0].reset_ms == MINUTE


async def test_a_charge_is_all_or_nothing_across_buckets(store):
    counters, p = store
    tight, loose = Bucket(p + "tight", limit=1), Bucket(p + "loose", limit=100)
    assert (await counters.admit(NOW, [tight, loose])).allowed
    refused = await counters.admit(NOW, [loose, tight])
    assert not refused.allowed and refused.refused_bucket == 1
    # The refused charge took nothing from the bucket that had room.
    state = (await counters.peek_buckets(NOW, [loose]))[0]
    assert state.remaining == 99


async def test_tokens_counted_after_the_fact_overdraw_and_refuse_until_paid_back(store):
    counters, p = store
    tokens = Bucket(p + "tok", limit=600, cost=0, consume=False)  # 10 tokens a second
    assert (await counters.admit(NOW, [tokens])).allowed
    await counters.settle(NOW, forced=[Bucket(p + "tok", 600, 900)])
    refused = await counters.admit(NOW, [tokens])
    assert not refused.allowed and refused.buckets[0].remaining == -300
    assert refused.buckets[0].retry_after_ms == 30_001  # until something is left
    assert not (await counters.admit(NOW + 30_000, [tokens])).allowed
    assert (await counters.admit(NOW + 30_001, [tokens])).allowed


def _hold(p: str, amount: int, seed: int | None = None, limit: int = 1000) -> Hold:
    return Hold(p + "budget", limit, amount, NOW + 10 * MINUTE, seed)


async def test_a_missing_budget_window_is_reported_not_guessed_and_a_seed_fills_it(store):
    counters, p = store
    missing = await counters.admit(NOW, [], [_hold(p, 100)], "r1", NOW + MINUTE)
    assert missing.missing == (0,) and not missing.allowed
    assert await counters.peek_budget(NOW, p + "budget") is None
    seeded = await counters.admit(NOW, [], [_hold(p, 100, seed=850)], "r1", NOW + MINUTE)
    assert seeded.allowed
    assert await counters.peek_budget(NOW, p + "budget") == type(seeded.budgets[0])(850, 100)
    # A second seed does not overwrite what the store now counts.
    refused = await counters.admit(NOW, [], [_hold(p, 100, seed=0)], "r2", NOW + MINUTE)
    assert not refused.allowed and refused.refused_budget == 0


async def test_reservations_never_let_spent_plus_reserved_pass_the_limit(store):
    counters, p = store
    await counters.admit(NOW, [], [_hold(p, 0, seed=0)], "seed", NOW + MINUTE)
    results = await asyncio.gather(
        *(counters.admit(NOW, [], [_hold(p, 300)], f"r{i}", NOW + MINUTE) for i in range(10))
    )
    winners = [f"r{i}" for i, r in enumerate(results) if r.allowed]
    assert len(winners) == 3  # 3 × 300 ≤ 1000 < 4 × 300
    # Settling replaces a reservation by the actual cost, freeing the rest.
    await counters.settle(NOW, held=[p + "budget"], reservation_id=winners[0], spends=[Spend(p + "budget", 120)])
    state = await counters.peek_budget(NOW, p + "budget")
    assert (state.spent, state.reserved) == (120, 600)
    assert (await counters.admit(NOW, [], [_hold(p, 280)], "more", NOW + MINUTE)).allowed
    # Settling twice (a retried settlement) takes the reservation away once only.
    await counters.settle(NOW, held=[p + "budget"], reservation_id=winners[0])
    state = await counters.peek_budget(NOW, p + "budget")
    assert (state.spent, state.reserved) == (120, 880)


async def test_a_reservation_that_is_never_settled_expires(store):
    counters, p = store
    assert (await counters.admit(NOW, [], [_hold(p, 900, seed=0)], "lost", NOW + MINUTE)).allowed
    assert not (await counters.admit(NOW + 1, [], [_hold(p, 900)], "next", NOW + 2 * MINUTE)).allowed
    assert (await counters.admit(NOW + MINUTE, [], [_hold(p, 900)], "next", NOW + 2 * MINUTE)).allowed
    # The dead turn's late settlement cannot take the new reservation away.
    await counters.settle(NOW + MINUTE, held=[p + "budget"], reservation_id="lost")
    state = await counters.peek_budget(NOW + MINUTE, p + "budget")
    assert state.reserved == 900


async def test_spend_into_a_window_the_store_lost_is_left_to_the_ledger(store):
    counters, p = store
    await counters.settle(NOW, spends=[Spend(p + "gone", 500)])
    assert await counters.peek_budget(NOW, p + "gone") is None


async def test_a_budget_and_a_bucket_refuse_together_or_not_at_all(store):
    counters, p = store
    bucket = Bucket(p + "req", limit=10)
    refused = await counters.admit(NOW, [bucket], [_hold(p, 2000, seed=0)], "big", NOW + MINUTE)
    assert not refused.allowed and refused.refused_budget == 0
    assert (await counters.peek_buckets(NOW, [bucket]))[0].remaining == 10


async def test_redis_that_is_gone_is_reported_as_unavailable():
    with throwaway_redis() as (url, stop, _start):
        counters = RedisStore.from_url(url, 0.5)
        assert (await counters.admit(NOW, [Bucket("vbtest:x", 5)])).allowed
        stop()
        with pytest.raises(StoreUnavailable):
            await counters.admit(NOW, [Bucket("vbtest:x", 5)])
        await counters.close()
