"""The idempotency repository on PostgreSQL keeps the promises the unit tests' fake
store makes: one record per tenant and key, and a claim taken over after its lease is
lost by its old holder, who can neither complete nor free it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from vocalbridge_common.db import utcnow
from vocalbridge_common.errors import Aborted
from vocalbridge_conversation.repository import IdempotencyRepository
from vocalbridge_conversation.service.idempotency import Claimed, Replay, claim

LEASE, TTL = timedelta(minutes=2), timedelta(hours=24)


async def test_a_taken_over_claim_is_lost_by_its_old_holder(database, tenant):
    async def attempt(at, key="k"):
        async with database.tenant_transaction(tenant) as tx:
            return await claim(IdempotencyRepository(tx, tenant), key, "fingerprint", at, LEASE, TTL)

    async def as_holder(record_id, action, *args):
        async with database.tenant_transaction(tenant) as tx:
            await getattr(IdempotencyRepository(tx, tenant), action)(record_id, *args)

    start = utcnow()
    old = await attempt(start)
    new = await attempt(start + LEASE)
    assert isinstance(old, Claimed) and isinstance(new, Claimed) and new.record_id != old.record_id

    await as_holder(old.record_id, "complete", b"old")
    await as_holder(old.record_id, "release")
    with pytest.raises(Aborted):
        await attempt(start + LEASE)  # still the new holder's, still running

    await as_holder(new.record_id, "complete", b"new")
    assert await attempt(start + LEASE) == Replay(b"new")
    # Keys are per tenant: the same key is free for another tenant.
    async with database.tenant_transaction("ten_other") as tx:
        assert isinstance(await claim(IdempotencyRepository(tx, "ten_other"), "k", "f", start, LEASE, TTL), Claimed)
