"""The billing server under test: the production create_server() on port 0,
against a freshly migrated PostgreSQL database (one per test module)."""

from __future__ import annotations

import grpc
import pytest

from tests.integration.billing.billing_testkit import settings_for
from vocalbridge.billing.v1 import billing_service_pb2_grpc
from vocalbridge_billing.server import MIGRATIONS_DIR, SCHEMA, create_server
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate


@pytest.fixture(scope="module")
def billing_database(pg_url) -> str:
    migrate(pg_url, SCHEMA, MIGRATIONS_DIR)
    return pg_url


@pytest.fixture(scope="module")
async def billing_server(billing_database):
    running = await create_server(settings_for(billing_database))
    yield running
    await running.stop(0)


@pytest.fixture(scope="module")
async def channel(billing_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{billing_server.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel) -> billing_service_pb2_grpc.BillingServiceStub:
    return billing_service_pb2_grpc.BillingServiceStub(channel)


@pytest.fixture
def relay(as_tenant):
    """The outbox relay's identity: a service identity, no tenant, scope `internal`."""
    return as_tenant("", ("internal",), key_id="svc_conversation_relay")


@pytest.fixture
def tenant() -> str:
    """A tenant of this test alone, so tests share the server but not their data."""
    return new_id("ten")


@pytest.fixture
def md(as_tenant, tenant):
    """Metadata of a read-only key of `tenant`."""
    return as_tenant(tenant, ("read",))
