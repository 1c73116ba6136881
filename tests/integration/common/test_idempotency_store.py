"""Every service's idempotency store (the common SqlIdempotencyStore on the service's own
table) keeps the promises the unit tests' fake store makes, on PostgreSQL and SQLite: one
record per tenant and key, and a claim taken over after its lease is lost by its old
holder, who can neither complete nor free it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import Aborted
from vocalbridge_common.idempotency import Claimed, Replay, claim
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate
from vocalbridge_conversation.repository import IdempotencyRepository as ConversationKeys
from vocalbridge_conversation.server import MIGRATIONS_DIR as CONVERSATION_MIGRATIONS
from vocalbridge_voice.repository import IdempotencyRepository as VoiceKeys
from vocalbridge_voice.server import MIGRATIONS_DIR as VOICE_MIGRATIONS

LEASE, TTL = timedelta(minutes=2), timedelta(hours=24)
STORES = {"conversation": (CONVERSATION_MIGRATIONS, ConversationKeys), "voice": (VOICE_MIGRATIONS, VoiceKeys)}


@pytest.fixture(params=[(service, backend) for service in sorted(STORES) for backend in ("postgresql", "sqlite")])
async def keys(request, pg_url, tmp_path):
    """(Database, the service's store class) on a migrated database of the backend."""
    service, backend = request.param
    directory, store = STORES[service]
    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / (service + '.db')}"
    migrate(url, service, directory)
    db = Database(url, service)
    yield db, store
    await db.dispose()


async def test_a_taken_over_claim_is_lost_by_its_old_holder(keys):
    db, store = keys
    tenant = new_id("ten")

    async def attempt(at, key="k"):
        async with db.tenant_transaction(tenant) as tx:
            return await claim(store(tx, tenant), key, "fingerprint", at, LEASE, TTL)

    async def as_holder(record_id, action, *args):
        async with db.tenant_transaction(tenant) as tx:
            return await getattr(store(tx, tenant), action)(record_id, *args)

    start = utcnow()
    old = await attempt(start)
    new = await attempt(start + LEASE)
    assert isinstance(old, Claimed) and isinstance(new, Claimed) and new.record_id != old.record_id

    assert await as_holder(old.record_id, "complete", b"old") is False
    assert await as_holder(old.record_id, "release") is False
    with pytest.raises(Aborted):
        await attempt(start + LEASE)  # still the new holder's, still running

    assert await as_holder(new.record_id, "complete", b"new") is True
    assert await attempt(start + LEASE) == Replay(b"new")
    # Keys are per tenant: the same key is free for another tenant.
    other = new_id("ten")
    async with db.tenant_transaction(other) as tx:
        assert isinstance(await claim(store(tx, other), "k", "f", start, LEASE, TTL), Claimed)
    # Past its TTL a completed key runs again.
    assert isinstance(await attempt(start + TTL + LEASE), Claimed)
