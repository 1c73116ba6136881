"""Who may see and change agents: tenants, scopes, identities, and PostgreSQL's
row-level security underneath the code's own tenant filters."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.integration.agents.agents_testkit import agent_message, expect_failure
from vocalbridge.agents.v1 import agent_pb2
from vocalbridge.agents.v1 import agents_service_pb2 as pb
from vocalbridge_common.db import APP_ROLE, async_url
from vocalbridge_common.headers import IDENTITY_HEADER
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.ids import new_id

NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def create(stub, md, **fields) -> agent_pb2.Agent:
    return await stub.CreateAgent(pb.CreateAgentRequest(agent=agent_message(**fields)), metadata=md)


async def test_another_tenants_agent_does_not_exist(stub, as_tenant):
    owner, intruder = as_tenant(new_id("ten")), as_tenant(new_id("ten"))
    agent = await create(stub, owner)
    await create(stub, intruder, display_name="Intruder's own")
    version_name = f"{agent.name}/versions/1"

    calls = [
        stub.GetAgent(pb.GetAgentRequest(name=agent.name), metadata=intruder),
        stub.UpdateAgent(
            pb.UpdateAgentRequest(
                agent=agent_pb2.Agent(name=agent.name, display_name="Hijacked"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=intruder,
        ),
        # Even with the right etag in hand.
        stub.DeleteAgent(pb.DeleteAgentRequest(name=agent.name, etag=agent.etag), metadata=intruder),
        stub.DeleteAgent(pb.DeleteAgentRequest(name=agent.name), metadata=intruder),
        stub.ListAgentVersions(pb.ListAgentVersionsRequest(parent=agent.name), metadata=intruder),
        stub.GetAgentVersion(pb.GetAgentVersionRequest(name=version_name), metadata=intruder),
    ]
    for call in calls:
        await expect_failure(call, NOT_FOUND, "AGENT_NOT_FOUND")

    listed = await stub.ListAgents(pb.ListAgentsRequest(page_size=1000), metadata=intruder)
    assert [a.display_name for a in listed.agents] == ["Intruder's own"]
    # Untouched for its owner.
    assert await stub.GetAgent(pb.GetAgentRequest(name=agent.name), metadata=owner) == agent


async def test_read_only_keys_can_read_but_not_write(stub, as_tenant, tenant):
    agent = await create(stub, as_tenant(tenant, ("write",)))
    reader = as_tenant(tenant, ("read",))

    assert await stub.GetAgent(pb.GetAgentRequest(name=agent.name), metadata=reader) == agent
    assert len((await stub.ListAgents(pb.ListAgentsRequest(), metadata=reader)).agents) == 1
    versions = await stub.ListAgentVersions(pb.ListAgentVersionsRequest(parent=agent.name), metadata=reader)
    assert len(versions.agent_versions) == 1

    denied = grpc.StatusCode.PERMISSION_DENIED
    await expect_failure(
        stub.CreateAgent(pb.CreateAgentRequest(agent=agent_message()), metadata=reader), denied, "SCOPE_INSUFFICIENT"
    )
    await expect_failure(
        stub.UpdateAgent(
            pb.UpdateAgentRequest(agent=agent_pb2.Agent(name=agent.name, display_name="x")), metadata=reader
        ),
        denied,
        "SCOPE_INSUFFICIENT",
    )
    await expect_failure(
        stub.DeleteAgent(pb.DeleteAgentRequest(name=agent.name), metadata=reader), denied, "SCOPE_INSUFFICIENT"
    )
    assert len((await stub.ListAgents(pb.ListAgentsRequest(), metadata=reader)).agents) == 1


async def test_an_identity_without_a_tenant_is_refused(stub, as_tenant):
    await expect_failure(
        stub.ListAgents(pb.ListAgentsRequest(), metadata=as_tenant("", ("admin",))),
        grpc.StatusCode.PERMISSION_DENIED,
        "TENANT_REQUIRED",
    )


async def test_missing_forged_or_expired_identities_are_unauthenticated(stub, signer, tenant):
    forger = IdentitySigner(b"not-the-shared-secret-0123456789abcdef")
    genuine = signer.mint(tenant, "key_x", ("admin",))
    claims_swapped = genuine.split(".")
    claims_swapped[1] = forger.mint(new_id("ten"), "key_x", ("admin",)).split(".")[1]
    identities = [
        (),
        ((IDENTITY_HEADER, "garbage"),),
        ((IDENTITY_HEADER, forger.mint(tenant, "key_x", ("admin",))),),
        ((IDENTITY_HEADER, ".".join(claims_swapped)),),
        ((IDENTITY_HEADER, signer.mint(tenant, "key_x", ("admin",), now=time.time() - 3600)),),
    ]
    for metadata in identities:
        for call in (
            stub.CreateAgent(pb.CreateAgentRequest(agent=agent_message()), metadata=metadata),
            stub.ListAgents(pb.ListAgentsRequest(), metadata=metadata),
        ):
            await expect_failure(call, grpc.StatusCode.UNAUTHENTICATED, "INVALID_IDENTITY")

    assert (await stub.ListAgents(pb.ListAgentsRequest(), metadata=((IDENTITY_HEADER, genuine),))).agents == []


async def test_health_is_serving_without_identity(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "vocalbridge.agents.v1.AgentService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
async def app_role_connection(agents_database):
    """A raw connection as the services' role, in the agents schema, with no tenant set."""
    engine = create_async_engine(async_url(agents_database))
    async with engine.connect() as connection:
        await connection.execute(text(f"SET ROLE {APP_ROLE}"))
        await connection.execute(text('SET search_path TO "agents"'))
        yield connection
    await engine.dispose()


async def test_row_level_security_hides_rows_from_a_query_without_tenant(
    stub, as_tenant, agents_database, app_role_connection
):
    tenant_a, tenant_b = new_id("ten"), new_id("ten")
    for _ in range(2):
        await create(stub, as_tenant(tenant_a))
    await create(stub, as_tenant(tenant_b))
    owner_engine = create_async_engine(async_url(agents_database))
    async with owner_engine.connect() as owner:  # the superuser that ran the migrations
        assert await owner.scalar(text('SELECT count(*) FROM "agents".agents')) >= 3
    await owner_engine.dispose()
    connection = app_role_connection

    assert await connection.scalar(text("SELECT count(*) FROM agents")) == 0
    assert await connection.scalar(text("SELECT count(*) FROM agent_versions")) == 0

    await connection.execute(text("SELECT set_config('app.tenant_id', :t, false)"), {"t": tenant_a})
    assert await connection.scalar(text("SELECT count(*) FROM agents")) == 2
    assert await connection.scalar(text("SELECT count(DISTINCT tenant_id) FROM agent_versions")) == 1


async def test_row_level_security_refuses_writing_another_tenants_rows(app_role_connection):
    connection = app_role_connection
    await connection.execute(text("SELECT set_config('app.tenant_id', :t, false)"), {"t": new_id("ten")})

    with pytest.raises(DBAPIError, match="row-level security"):
        await connection.execute(
            text(
                "INSERT INTO agents (id, tenant_id, version, create_time, update_time, display_name, system_prompt,"
                " primary_provider, fallback_provider, model, voice_name, voice_words_per_minute)"
                " VALUES (:id, :tenant, 1, now(), now(), 'x', '', 'vendorA', '', '', '', 0)"
            ),
            {"id": new_id("agt"), "tenant": new_id("ten")},
        )
