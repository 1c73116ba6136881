"""gRPC clients through the same Envoy port: the API key in metadata."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tests.support import error_reason
from vocalbridge.agents.v1 import agent_pb2, agents_service_pb2, agents_service_pb2_grpc


@pytest.fixture
async def agents_stub(stack):
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        yield agents_service_pb2_grpc.AgentServiceStub(channel)


def bearer(key: str):
    return (("authorization", f"Bearer {key}"),)


async def test_agent_crud_over_grpc(agents_stub, new_tenant):
    tenant, other = await new_tenant(), await new_tenant()
    meta = bearer(tenant.key)
    agent = await agents_stub.CreateAgent(
        agents_service_pb2.CreateAgentRequest(
            agent=agent_pb2.Agent(display_name="Over gRPC", primary_provider="vendorB", fallback_provider="vendorA")
        ),
        metadata=meta,
        timeout=10,
    )
    assert agent.version == 1
    assert (await agents_stub.GetAgent(agents_service_pb2.GetAgentRequest(name=agent.name), metadata=meta)) == agent
    listed = await agents_stub.ListAgents(agents_service_pb2.ListAgentsRequest(), metadata=meta)
    assert [a.name for a in listed.agents] == [agent.name]
    updated = await agents_stub.UpdateAgent(
        agents_service_pb2.UpdateAgentRequest(
            agent=agent_pb2.Agent(name=agent.name, display_name="Renamed", etag=agent.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=meta,
    )
    assert (updated.display_name, updated.version) == ("Renamed", 2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agents_stub.GetAgent(agents_service_pb2.GetAgentRequest(name=agent.name), metadata=bearer(other.key))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and error_reason(caught.value) == "AGENT_NOT_FOUND"
    await agents_stub.DeleteAgent(agents_service_pb2.DeleteAgentRequest(name=agent.name), metadata=meta)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agents_stub.GetAgent(agents_service_pb2.GetAgentRequest(name=agent.name), metadata=meta)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_grpc_without_or_with_read_only_key(agents_stub, new_tenant):
    tenant = await new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agents_stub.ListAgents(agents_service_pb2.ListAgentsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(caught.value) == "API_KEY_MISSING"
    reader = await tenant.create_key(["SCOPE_READ"])
    await agents_stub.ListAgents(agents_service_pb2.ListAgentsRequest(), metadata=bearer(reader))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agents_stub.CreateAgent(
            agents_service_pb2.CreateAgentRequest(agent=agent_pb2.Agent(display_name="x", primary_provider="vendorA")),
            metadata=bearer(reader),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(caught.value) == "SCOPE_INSUFFICIENT"


async def test_a_unary_call_without_its_message_is_refused_through_envoy(stack, new_tenant):
    """A gRPC client that half-closes a unary call without the request gets INVALID_ARGUMENT at
    once, not a call held open until the route's timeout."""
    tenant = await new_tenant()
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        method = "/vocalbridge.agents.v1.AgentService/ListAgents"
        no_message = channel.stream_unary(method)  # unary's wire, with zero messages

        async def nothing():
            return
            yield

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await no_message(nothing(), metadata=bearer(tenant.key), timeout=20)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.code()
        assert error_reason(caught.value) == "REQUEST_MESSAGE_MISSING"

        async def one():
            yield agents_service_pb2.ListAgentsRequest().SerializeToString()

        assert await no_message(one(), metadata=bearer(tenant.key), timeout=20) == b""  # the control
