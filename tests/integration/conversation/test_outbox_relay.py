"""The billing outbox relay against real PostgreSQL: lag while billing is down,
delivery once it is up, and the health signal."""

from __future__ import annotations

import logging
from datetime import timedelta

import grpc
import pytest
from grpc_health.v1 import health, health_pb2

from tests.conftest import TEST_IDENTITY_SECRET
from vocalbridge.billing.v1 import usage_event_pb2
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_conversation.config import RelaySettings
from vocalbridge_conversation.relay import HEALTH_NAME, OutboxRelay
from vocalbridge_conversation.repository import OutboxRelayRepository, OutboxRepository


@pytest.fixture
async def database(agents_port, pg_url):  # agents_port: the module's migrations have run
    db = Database(pg_url, "conversation")
    yield db
    await db.dispose()


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
