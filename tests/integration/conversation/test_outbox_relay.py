"""The billing outbox relay against real PostgreSQL: lag while billing is down,
delivery once it is back (every event exactly once), and the health signal."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2
from sqlalchemy import select

from tests.conftest import TEST_IDENTITY_SECRET
from tests.integration.conversation.conftest import with_key
from tests.integration.conversation.fake_billing import FakeBilling, billing_on, free_port
from vocalbridge.billing.v1 import usage_event_pb2
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge_common.db import utcnow
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_conversation.config import RelaySettings
from vocalbridge_conversation.models import OutboxRow
from vocalbridge_conversation.relay import HEALTH_NAME, OutboxRelay
from vocalbridge_conversation.repository import OutboxRelayRepository, OutboxRepository


async def add_events(db, tenant_id: str, count: int, age: timedelta) -> None:
    async with db.tenant_transaction(tenant_id) as tx:
        for i in range(count):
            event = usage_event_pb2.UsageEvent(name=f"usageEvents/use_{tenant_id}_{i}", tenant=f"tenants/{tenant_id}")
            await OutboxRepository(tx, tenant_id).add(
                f"use_{tenant_id}_{i}"[:40], event.SerializeToString(), utcnow() - age
            )


async def test_lag_is_reported_while_billing_is_down(database, tenant, caplog):
    await add_events(database, tenant, 3, age=timedelta(minutes=10))
    health_servicer = health.aio.HealthServicer()
    async with grpc.aio.insecure_channel("127.0.0.1:9") as nowhere:
        relay = OutboxRelay(
            database,
            nowhere,
            IdentitySigner(TEST_IDENTITY_SECRET),
            RelaySettings(lag_alert_seconds=300),
            health=health_servicer,
        )
        assert await relay.deliver_once() == -1  # billing unreachable: nothing marked delivered
        lag = await relay.lag()
        assert lag.pending >= 3 and lag.oldest_age_seconds >= 600
        with caplog.at_level(logging.INFO):
            await relay._report()
    assert any(record.getMessage() == "outbox lag" and record.pending >= 3 for record in caplog.records)
    check = await health_servicer.Check(health_pb2.HealthCheckRequest(service=HEALTH_NAME), None)
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    async with database.system_transaction() as tx:
        assert len(await OutboxRelayRepository(tx).pending(1000)) >= 3


async def outbox_of(db, tenant_id: str) -> dict[str, bool]:
    """The tenant's outbox: event id → delivered."""
    async with db.tenant_transaction(tenant_id) as tx:
        rows = await tx.execute(
            select(OutboxRow.event_id, OutboxRow.delivered_time).where(OutboxRow.tenant_id == tenant_id)
        )
        return {event_id: delivered is not None for event_id, delivered in rows}


async def eventually(condition, timeout: float = 20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_events_queued_while_billing_is_down_are_delivered_once_when_it_is_back(
    start_conversation, new_session, md, tenant, database
):
    port = free_port()
    relay_env = {"VB_RELAY_POLL_INTERVAL_MS": "50", "VB_RELAY_BACKOFF_BASE_MS": "20", "VB_RELAY_BACKOFF_CAP_MS": "200"}
    conversation = await start_conversation(run_relay=True, VB_BILLING_ADDRESS=f"127.0.0.1:{port}", **relay_env)
    _, session = await new_session(conversation)
    replies = [
        await conversation.SendMessage(
            cs.SendMessageRequest(session=session.name, content=f"turn {i}"), metadata=with_key(md, f"relay-{i}")
        )
        for i in range(5)
    ]
    await asyncio.sleep(0.3)  # the relay has tried, and failed, a few times by now
    queued = await outbox_of(database, tenant)
    assert len(queued) == 5 and not any(queued.values())  # billing down: every turn answered, none billed yet

    async with billing_on(port, FakeBilling()) as billing:

        async def all_delivered() -> bool:
            return all((await outbox_of(database, tenant)).values())

        await eventually(all_delivered)
        await asyncio.sleep(0.3)  # a few more relay rounds: nothing is sent again
        mine = [event for event in billing.events if event.tenant == f"tenants/{tenant}"]
        received = Counter(event.name.removeprefix("usageEvents/") for event in mine)
        assert received == Counter(queued.keys())  # each queued event, exactly once
        assert sorted(event.message for event in mine) == sorted(r.assistant_message.name for r in replies)
        relay = billing.identities("RecordUsage")
        assert relay and all(i.tenant_id == "" and i.scopes == frozenset({"internal"}) for i in relay)


async def test_relays_side_by_side_send_disjoint_batches(database):
    """Several processes (or replicas) each run a relay: a batch one of them is sending stays
    locked, and the others skip it instead of sending it again."""
    tenant = "ten_relays_side_by_side"
    await add_events(database, tenant, 30, age=timedelta(days=365))  # older than any other test's
    port = free_port()
    fake = FakeBilling()
    fake.answering.clear()  # billing holds the first batch until told to answer
    settings = RelaySettings(batch_size=20)
    signer = IdentitySigner(TEST_IDENTITY_SECRET)
    async with billing_on(port, fake), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        first = OutboxRelay(database, channel, signer, settings)
        second = OutboxRelay(database, channel, signer, settings)
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
    assert all((await outbox_of(database, tenant)).values())
