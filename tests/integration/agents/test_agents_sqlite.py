"""The same production server on the embedded default, SQLite."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.integration.agents.agents_testkit import agent_message, expect_failure, settings_for
from vocalbridge.agents.v1 import agent_pb2, agents_service_pb2_grpc
from vocalbridge.agents.v1 import agents_service_pb2 as pb
from vocalbridge_agents.domain import AgentConfig
from vocalbridge_agents.server import MIGRATIONS_DIR, SCHEMA, create_server
from vocalbridge_agents.service import AgentService
from vocalbridge_common.db import Database
from vocalbridge_common.errors import AgentNotFound
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate
from vocalbridge_common.pagination import PageTokenCodec, Paginator


@pytest.fixture
async def sqlite_stub(tmp_path):
    url = f"sqlite:///{tmp_path / 'var' / 'agents.db'}"
    migrate(url, SCHEMA, MIGRATIONS_DIR)
    running = await create_server(settings_for(url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield agents_service_pb2_grpc.AgentServiceStub(channel)
    finally:
        await running.stop(0)


async def test_create_get_update_round_trip_on_sqlite(sqlite_stub, as_tenant):
    md, other = as_tenant(new_id("ten")), as_tenant(new_id("ten"))
    created = await sqlite_stub.CreateAgent(
        pb.CreateAgentRequest(agent=agent_message(parameters=agent_pb2.ModelParameters(temperature=0.5))), metadata=md
    )

    assert await sqlite_stub.GetAgent(pb.GetAgentRequest(name=created.name), metadata=md) == created
    updated = await sqlite_stub.UpdateAgent(
        pb.UpdateAgentRequest(
            agent=agent_pb2.Agent(name=created.name, etag=created.etag, display_name="On SQLite"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=md,
    )
    assert updated.version == 2 and updated.create_time == created.create_time
    first = await sqlite_stub.GetAgentVersion(pb.GetAgentVersionRequest(name=f"{created.name}/versions/1"), metadata=md)
    assert first.display_name == "Support" and first.parameters.temperature == pytest.approx(0.5)
    # The tenant filter alone isolates tenants here (no row-level security in SQLite).
    await expect_failure(
        sqlite_stub.GetAgent(pb.GetAgentRequest(name=created.name), metadata=other),
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
    )


async def test_the_service_acts_for_the_tenant_it_is_given_without_a_request_context(tmp_path):
    """The use cases take the tenant as an argument: they run outside any gRPC call
    (no identity in context) and see exactly the tenant they are handed."""
    url = f"sqlite:///{tmp_path / 'agents.db'}"
    migrate(url, SCHEMA, MIGRATIONS_DIR)
    db = Database(url, SCHEMA)
    service = AgentService(
        db, Paginator(PageTokenCodec(b"s" * 32)), known_providers=("vendorA", "vendorB"), max_system_prompt_chars=100
    )
    owner, other = new_id("ten"), new_id("ten")
    try:
        agent = await service.create_agent(owner, AgentConfig(display_name="Direct", primary_provider="vendorA"))
        assert await service.get_agent(owner, agent.name) == agent
        assert [a.id for a in (await service.list_agents(owner, 0, "")).items] == [agent.id]
        assert (await service.list_agents(other, 0, "")).items == []
        with pytest.raises(AgentNotFound):
            await service.get_agent(other, agent.name)
    finally:
        await db.dispose()
