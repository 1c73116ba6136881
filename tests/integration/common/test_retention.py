"""The retention sweeper on every service that keeps idempotency keys and an outbox, on
PostgreSQL and SQLite: what is past retention goes, batch by batch; what is newer, undelivered
or still in its lease stays."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from vocalbridge_common.config import ConfigError, Env
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate
from vocalbridge_common.retention import RetentionSettings, RetentionSweeper, Swept
from vocalbridge_conversation.models import IdempotencyRow as ConversationKeys
from vocalbridge_conversation.models import OutboxRow as ConversationOutbox
from vocalbridge_conversation.server import MIGRATIONS_DIR as CONVERSATION_MIGRATIONS
from vocalbridge_voice.models import IdempotencyRow as VoiceKeys
from vocalbridge_voice.models import UsageOutboxRow as VoiceOutbox
from vocalbridge_voice.server import MIGRATIONS_DIR as VOICE_MIGRATIONS

SERVICES = {
    "conversation": (CONVERSATION_MIGRATIONS, ConversationKeys, ConversationOutbox),
    "voice": (VOICE_MIGRATIONS, VoiceKeys, VoiceOutbox),
}
RETENTION = timedelta(days=7)
TTL, LEASE = timedelta(hours=24), timedelta(minutes=2)


@pytest.fixture(params=[(s, b) for s in sorted(SERVICES) for b in ("postgresql", "sqlite")], ids=lambda p: "-".join(p))
async def service(request, pg_url, tmp_path):
    name, backend = request.param
    directory, keys, outbox = SERVICES[name]
    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / (name + '.db')}"
    migrate(url, name, directory)
    db = Database(url, name)
    async with db.system_transaction() as tx:  # the module's database is shared: start empty
        for table in (keys, outbox):
            await tx.execute(table.__table__.delete())
    yield db, keys, outbox
    await db.dispose()


def _key(tenant: str, key: str, created, *, state="completed", lease_until=None) -> dict:
    return {
        "id": new_id("idk"),
        "tenant_id": tenant,
        "key": key,
        "fingerprint": "f" * 64,
        "state": state,
        "response": b"a whole stored response" if state == "completed" else None,
        "create_time": created,
        "lease_expire_time": lease_until or created + LEASE,
        "expire_time": created + TTL,
    }


def _event(tenant: str, event_id: str, created, delivered) -> dict:
    return {
        "event_id": event_id,
        "tenant_id": tenant,
        "payload": b"usage",
        "create_time": created,
        "delivered_time": delivered,
        "attempts": 0,
        "retry_time": None,
    }


async def _ids(db, table, column) -> set[str]:
    async with db.system_transaction() as tx:
        return set((await tx.scalars(select(getattr(table, column)))).all())


async def test_what_is_past_retention_goes_and_the_rest_stays(service):
    db, keys, outbox = service
    now = utcnow()
    old, recent = now - RETENTION - timedelta(hours=1), now - timedelta(hours=2)
    tenants = [new_id("ten"), new_id("ten")]  # the sweep is cross-tenant
    rows = [
        _key(tenants[0], "old-done", old),
        _key(tenants[1], "old-abandoned", old, state="in_progress"),
        _key(tenants[0], "recent", recent),  # within its TTL: a retry must still replay it
        # An old key whose lease a worker still holds (taken over just now): untouched.
        _key(tenants[1], "old-leased", old, state="in_progress", lease_until=now + LEASE),
    ]
    events = [
        _event(tenants[0], "evt-old-delivered", old, old + timedelta(seconds=1)),
        _event(tenants[1], "evt-recent-delivered", recent, recent),
        _event(tenants[0], "evt-old-undelivered", old, None),  # billing has not had it: kept
    ]
    async with db.system_transaction() as tx:
        await tx.execute(keys.__table__.insert(), rows)
        await tx.execute(outbox.__table__.insert(), events)

    sweeper = RetentionSweeper(db, RetentionSettings(retention=RETENTION), idempotency=keys, outbox=outbox)
    swept = await sweeper.sweep_once()

    assert (swept.idempotency_records, swept.outbox_rows) == (2, 1)
    async with db.system_transaction() as tx:
        left = set((await tx.scalars(select(keys.key))).all())
    assert left == {"recent", "old-leased"}
    assert await _ids(db, outbox, "event_id") == {"evt-recent-delivered", "evt-old-undelivered"}
    # Nothing more is due: a second pass deletes nothing.
    again = await sweeper.sweep_once()
    assert (again.idempotency_records, again.outbox_rows) == (0, 0)


async def test_a_backlog_is_deleted_in_batches_until_none_is_due(service):
    db, keys, outbox = service
    now = utcnow()
    old = now - RETENTION - timedelta(days=1)
    tenant = new_id("ten")
    async with db.system_transaction() as tx:
        await tx.execute(keys.__table__.insert(), [_key(tenant, f"k{i}", old) for i in range(25)])
        await tx.execute(outbox.__table__.insert(), [_event(tenant, f"evt-{i}", old, old) for i in range(23)])
        await tx.execute(keys.__table__.insert(), [_key(tenant, "fresh", now)])
    sweeper = RetentionSweeper(
        db, RetentionSettings(retention=RETENTION, batch_size=10), idempotency=keys, outbox=outbox
    )
    swept = await sweeper.sweep_once()
    assert (swept.idempotency_records, swept.outbox_rows) == (25, 23)
    async with db.system_transaction() as tx:
        assert await tx.scalar(select(func.count()).select_from(keys)) == 1
        assert await tx.scalar(select(func.count()).select_from(outbox)) == 0


async def test_retention_is_measured_from_the_sweepers_clock(service):
    """The same rows, swept at two moments: kept before the retention has passed, deleted after."""
    db, keys, outbox = service
    start = utcnow()
    tenant = new_id("ten")
    async with db.system_transaction() as tx:
        await tx.execute(keys.__table__.insert(), [_key(tenant, "k", start)])
        await tx.execute(outbox.__table__.insert(), [_event(tenant, "evt-1", start, start)])
    settings = RetentionSettings(retention=timedelta(days=2))
    early = RetentionSweeper(db, settings, idempotency=keys, outbox=outbox, clock=lambda: start + timedelta(days=1))
    assert await early.sweep_once() == Swept(0, 0)
    late = RetentionSweeper(db, settings, idempotency=keys, outbox=outbox, clock=lambda: start + timedelta(days=3))
    swept = await late.sweep_once()
    assert (swept.idempotency_records, swept.outbox_rows) == (1, 1)


def test_settings_come_from_the_environment_and_refuse_nonsense():
    settings = RetentionSettings.from_env(
        Env({"VB_RETENTION_HOURS": "48", "VB_RETENTION_SWEEP_SECONDS": "60", "VB_RETENTION_BATCH_SIZE": "50"})
    )
    assert settings == RetentionSettings(retention=timedelta(hours=48), interval_seconds=60, batch_size=50)
    assert RetentionSettings.from_env(Env({})) == RetentionSettings()
    for bad in ({"VB_RETENTION_HOURS": "-1"}, {"VB_RETENTION_SWEEP_SECONDS": "0"}, {"VB_RETENTION_BATCH_SIZE": "0"}):
        with pytest.raises(ConfigError):
            RetentionSettings.from_env(Env(bad))
