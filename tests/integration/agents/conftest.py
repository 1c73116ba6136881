"""The agents server under test: the production create_server() on port 0,
against a freshly migrated PostgreSQL database (one per test module)."""

from __future__ import annotations

import grpc
import pytest

from tests.integration.agents.agents_testkit import settings_for
from vocalbridge.agents.v1 import agents_service_pb2_grpc
from vocalbridge_agents.server import MIGRATIONS_DIR, SCHEMA, create_server
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate


@pytest.fixture(scope="module")
def agents_database(pg_url) -> str:
    migrate(pg_url, SCHEMA, MIGRATIONS_DIR)
    return pg_url


@pytest.fixture(scope="module")
async def agents_server(agents_database):
    running = await create_server(settings_for(agents_database))
    yield running
    await running.stop(0)


@pytest.fixture(scope="module")
async def channel(agents_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agents_server.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel) -> agents_service_pb2_grpc.AgentServiceStub:
    return agents_service_pb2_grpc.AgentServiceStub(channel)


@pytest.fixture
def tenant() -> str:
    """A tenant of this test alone, so tests share the server but not their data."""
    return new_id("ten")


@pytest.fixture
def md(as_tenant, tenant):
    """Metadata of an admin of `tenant`."""
    return as_tenant(tenant)
