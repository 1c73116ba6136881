"""The one billing outbox relay (vocalbridge_common.outbox) on every service's own outbox table,
against real PostgreSQL (and SQLite): lag and health while billing is down, relays side by
side sending disjoint batches, an event billing refuses neither holding up the others nor
coming back on every poll, until billing accepts it, and a relay that outlives a database
restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health, health_pb2
from sqlalchemy import select

from tests.conftest import TEST_IDENTITY_SECRET
from tests.integration.conversation.fake_billing import FakeBilling, billing_on, free_port
from vocalbridge.billing.v1 import billing_service_pb2 as pb
from vocalbridge.billing.v1 import usage_event_pb2
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate
from vocalbridge_common.outbox import OutboxRelay, OutboxRelayRepository, OutboxRepository, RelaySettings
from vocalbridge_conversation.models import OutboxRow as ConversationOutbox
from vocalbridge_conversation.server import MIGRATIONS_DIR as CONVERSATION_MIGRATIONS
from vocalbridge_voice.models import UsageOutboxRow as VoiceOutbox
from vocalbridge_voice.server import MIGRATIONS_DIR as VOICE_MIGRATIONS

# Each service's outbox: its schema, its migrations, its model.
OUTBOXES = {
    "conversation": (CONVERSATION_MIGRATIONS, ConversationOutbox),
    "voice": (VOICE_MIGRATIONS, VoiceOutbox),
}
SIGNER = IdentitySigner(TEST_IDENTITY_SECRET)


@pytest.fixture(scope="module")
def migrated(pg_url):
    for schema, (directory, _) in OUTBOXES.items():
        migrate(pg_url, schema, directory)
    return pg_url


@pytest.fixture(params=sorted(OUTBOXES))
async def outbox(request, migrated):
    """(service, its Database, its outbox model), on PostgreSQL."""
    service = request.param
    db = Database(migrated, service)
    yield service, db, OUTBOXES[service][1]
    await db.dispose()


async def add_events(db: Database, table, tenant_id: str, count: int, created: datetime) -> list[str]:
    ids = [new_id("use") for _ in range(count)]
    async with db.tenant_transaction(tenant_id) as tx:
        for offset, event_id in enumerate(ids):
            event = usage_event_pb2.UsageEvent(name=f"usageEvents/{event_id}", tenant=f"tenants/{tenant_id}")
            await OutboxRepository(tx, tenant_id, table).add(
                event_id, event.SerializeToString(), created + timedelta(microseconds=offset)
            )
    return ids


async def delivered(db: Database, table, tenant_id: str) -> dict[str, bool]:
    """The tenant's outbox: event id → delivered."""
    async with db.tenant_transaction(tenant_id) as tx:
        rows = await tx.execute(select(table.event_id, table.delivered_time).where(table.tenant_id == tenant_id))
        return {event_id: when is not None for event_id, when in rows}


async def test_lag_is_reported_while_billing_is_down(outbox, caplog):
    service, db, table = outbox
    tenant = new_id("ten")
    await add_events(db, table, tenant, 3, utcnow() - timedelta(minutes=10))
    health_servicer = health.aio.HealthServicer()
    async with grpc.aio.insecure_channel("127.0.0.1:9") as nowhere:
        relay = OutboxRelay(
            db, table, nowhere, SIGNER, RelaySettings(lag_alert_seconds=300), service=service, health=health_servicer
        )
        await relay.announce()
        check = await health_servicer.Check(health_pb2.HealthCheckRequest(service=relay.health_name), None)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        assert await relay.deliver_once() == -1  # billing unreachable: nothing marked delivered
        lag = await relay.lag()
        assert lag.pending >= 3 and lag.oldest_age_seconds >= 600
        with caplog.at_level(logging.INFO):
            await relay._report()
    assert relay.health_name == f"vocalbridge.{service}.v1.OutboxRelay"
    assert any(record.getMessage() == "outbox lag" and record.pending >= 3 for record in caplog.records)
    check = await health_servicer.Check(health_pb2.HealthCheckRequest(service=relay.health_name), None)
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert set((await delivered(db, table, tenant)).values()) == {False}


async def test_relays_side_by_side_send_disjoint_batches(outbox):
    """Several processes (or replicas) each run a relay: a batch one of them is sending stays
    locked, and the others skip it instead of sending it again."""
    service, db, table = outbox
    tenant = new_id("ten")
    await add_events(db, table, tenant, 30, utcnow() - timedelta(days=365))  # older than any other test's
    fake = FakeBilling()
    fake.answering.clear()  # billing holds the first batch until told to answer
    settings = RelaySettings(batch_size=20)
    port = free_port()
    async with billing_on(port, fake), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        first = OutboxRelay(db, table, channel, SIGNER, settings, service=service)
        second = OutboxRelay(db, table, channel, SIGNER, settings, service=service)
        holding = asyncio.create_task(first.deliver_once())
        while not fake.callers:  # the first relay's batch is with billing, its rows locked
            await asyncio.sleep(0.01)
        other = asyncio.create_task(second.deliver_once())
        while len(fake.callers) < 2:
            await asyncio.sleep(0.01)
        fake.answering.set()
        assert await holding == 20 and await other >= 10
    sent = Counter(event.name for event in fake.events if event.tenant == f"tenants/{tenant}")
    assert len(sent) == 30 and set(sent.values()) == {1}
    assert all((await delivered(db, table, tenant)).values())
    relay_identities = fake.identities("RecordUsage")
    assert {(i.tenant_id, i.key_id, i.scopes) for i in relay_identities} == {
        ("", f"svc_{service}", frozenset({"internal"}))
    }


class RefusingBilling(FakeBilling):
    """Billing that refuses, for good, every batch holding one of `refused` (INVALID_ARGUMENT),
    and records each attempt of each event."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.refused = refused
        self.offered: Counter[str] = Counter()

    async def RecordUsage(self, request: pb.RecordUsageRequest, context) -> pb.RecordUsageResponse:
        names = [event.name.removeprefix("usageEvents/") for event in request.events]
        self.offered.update(names)
        if self.refused & set(names):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this event's agent version does not exist")
        return await super().RecordUsage(request, context)


class RestartingDatabase:
    """`db` as the relay sees it during a PostgreSQL restart: every transaction refused while
    `down` is set (the lag report's included), then served again."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.postgres = db.postgres
        self.down = True
        self.refusals = 0

    @asynccontextmanager
    async def system_transaction(self):
        if self.down:
            self.refusals += 1
            raise ConnectionRefusedError(111, "Connection refused")
        async with self._db.system_transaction() as tx:
            yield tx


async def test_the_relay_outlives_a_database_restart(outbox):
    """A database outage fails deliveries and lag reports alike; the relay keeps going, backing
    off, and delivers everything once the database is back."""
    service, db, table = outbox
    tenant = new_id("ten")
    events = await add_events(db, table, tenant, 3, utcnow())
    restarting = RestartingDatabase(db)
    billing = FakeBilling()
    settings = RelaySettings(poll_interval_seconds=0.01, backoff_base_seconds=0.005, backoff_cap_seconds=0.02)
    port = free_port()
    async with billing_on(port, billing), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        relay = OutboxRelay(restarting, table, channel, SIGNER, settings, service=service)
        running = asyncio.create_task(relay.run_forever())
        try:
            for _ in range(500):
                if restarting.refusals >= 6 or running.done():
                    break
                await asyncio.sleep(0.01)
            assert not running.done(), running.exception()
            restarting.down = False
            for _ in range(500):
                if set((await delivered(db, table, tenant)).values()) == {True} or running.done():
                    break
                await asyncio.sleep(0.01)
            assert not running.done(), running.exception()
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert (await delivered(db, table, tenant)) == dict.fromkeys(events, True)
    accepted = Counter(event.name.removeprefix("usageEvents/") for event in billing.events)
    assert {event_id: accepted[event_id] for event_id in events} == dict.fromkeys(events, 1)


async def _drain(relay: OutboxRelay, rounds: int) -> list[int]:
    return [await relay.deliver_once() for _ in range(rounds)]


async def test_a_refused_event_neither_blocks_the_others_nor_comes_back_on_every_poll(outbox, caplog):
    service, db, table = outbox
    tenant = new_id("ten")
    # The oldest events of all: the refused one first, as it would be in age order.
    created = datetime(2000, 1, 1, tzinfo=utcnow().tzinfo) + timedelta(minutes=len(service))
    events = await add_events(db, table, tenant, 5, created)
    bad, healthy = events[0], events[1:]
    now = [utcnow()]
    billing = RefusingBilling({bad})
    settings = RelaySettings(batch_size=100, refused_backoff_base_seconds=60, refused_backoff_cap_seconds=600)
    port = free_port()
    async with billing_on(port, billing), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        relay = OutboxRelay(db, table, channel, SIGNER, settings, service=service, clock=lambda: now[0])
        with caplog.at_level(logging.ERROR):
            await _drain(relay, 1)
        state = await delivered(db, table, tenant)
        assert [state[e] for e in healthy] == [True] * 4 and state[bad] is False  # the others went through
        assert any(bad in record.getMessage() and "refused" in record.getMessage() for record in caplog.records)
        lag = await relay.lag()
        assert lag.refused >= 1

        # Polls within its backoff (at least half the base: 30 s) do not offer it again.
        offered = billing.offered[bad]
        now[0] += timedelta(seconds=29)
        await _drain(relay, 5)
        assert billing.offered[bad] == offered

        # Past the backoff it is offered again, refused again, and waits longer (base × 2).
        now[0] += timedelta(seconds=32)
        await _drain(relay, 1)
        assert billing.offered[bad] > offered
        offered = billing.offered[bad]
        now[0] += timedelta(seconds=59)  # at least 60 s now: not yet
        await _drain(relay, 3)
        assert billing.offered[bad] == offered

        # Billing is fixed: the event goes through at its next turn, exactly once, in order of age
        # (ahead of a newer event, though billing refused it twice).
        billing.refused.clear()
        now[0] += timedelta(seconds=62)
        newer = await add_events(db, table, tenant, 1, created + timedelta(hours=1))
        events += newer
        async with db.system_transaction() as tx:
            first = (await OutboxRelayRepository(tx, table).pending(1, now[0]))[0]
        assert (first.event_id, first.attempts) == (bad, 2)
        await _drain(relay, 2)
    assert (await delivered(db, table, tenant))[bad] is True
    accepted = Counter(event.name.removeprefix("usageEvents/") for event in billing.events)
    assert {event_id: accepted[event_id] for event_id in events} == dict.fromkeys(events, 1)


async def test_the_relay_on_sqlite(tmp_path):
    """SQLite (the embedded default) has one writer: a batch is read, sent and settled in turn."""
    url = f"sqlite:///{tmp_path / 'voice.db'}"
    migrate(url, "voice", VOICE_MIGRATIONS)
    db = Database(url, "voice")
    tenant = new_id("ten")
    try:
        events = await add_events(db, VoiceOutbox, tenant, 3, utcnow())
        billing = RefusingBilling({events[1]})
        port = free_port()
        async with billing_on(port, billing), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            relay = OutboxRelay(db, VoiceOutbox, channel, SIGNER, RelaySettings(), service="voice")
            assert await relay.deliver_once() == 2
            assert await relay.deliver_once() == 0  # the refused one waits out its backoff
        state = await delivered(db, VoiceOutbox, tenant)
        assert (state[events[0]], state[events[1]], state[events[2]]) == (True, False, True)
        async with db.system_transaction() as tx:
            assert await OutboxRelayRepository(tx, VoiceOutbox).pending(10, utcnow()) == []
    finally:
        await db.dispose()
