"""Authentication and authorization at the edge, and identity that cannot be forged."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from tests.e2e.client import KEY_CACHE_TTL_SECONDS, error_reason
from vocalbridge.agents.v1 import agent_pb2, agents_service_pb2, agents_service_pb2_grpc
from vocalbridge_common.identity import IdentitySigner

AGENT = {"displayName": "Edge", "primaryProvider": "vendorA"}


def assert_json_status(response, http_status: int, reason: str) -> None:
    assert response.status_code == http_status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["code"], int) and body["message"]
    assert error_reason(response) == reason


async def test_no_key_and_wrong_key_are_401(http, new_tenant):
    tenant = await new_tenant()
    assert_json_status(await http.get("/v1/agents"), 401, "API_KEY_MISSING")
    assert_json_status(
        await http.get("/v1/agents", headers={"Authorization": "Bearer vb_00000000_nope"}), 401, "API_KEY_INVALID"
    )
    # x-api-key is accepted as well as Authorization: Bearer.
    assert (await http.get("/v1/agents", headers={"x-api-key": tenant.key})).status_code == 200


async def test_revoked_key_is_401_after_the_cache_ttl(new_tenant, http):
    tenant = await new_tenant()
    key = (await tenant.post("/v1/apiKeys", {"displayName": "revoked", "scopes": ["SCOPE_WRITE"]})).json()
    assert (await http.get("/v1/agents", headers=tenant.headers(key["secret"]))).status_code == 200
    revoked = await tenant.post(f"/v1/{key['name']}:revoke", {})
    assert revoked.status_code == 200 and revoked.json()["revokeTime"]
    await asyncio.sleep(KEY_CACHE_TTL_SECONDS + 0.2)
    assert_json_status(await http.get("/v1/agents", headers=tenant.headers(key["secret"])), 401, "API_KEY_REVOKED")


async def test_expired_key_is_401(new_tenant, http):
    tenant = await new_tenant()
    expire = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    key = (await tenant.post("/v1/apiKeys", {"displayName": "brief", "expireTime": expire})).json()
    await asyncio.sleep(1.3)
    assert_json_status(await http.get("/v1/agents", headers=tenant.headers(key["secret"])), 401, "API_KEY_EXPIRED")


async def test_read_only_key_cannot_write(new_tenant, http):
    tenant = await new_tenant()
    reader = await tenant.create_key(["SCOPE_READ"])
    assert (await http.get("/v1/agents", headers=tenant.headers(reader))).status_code == 200
    denied = await http.post("/v1/agents", json=AGENT, headers=tenant.headers(reader))
    assert_json_status(denied, 403, "SCOPE_INSUFFICIENT")
    assert (await tenant.get("/v1/agents")).json().get("agents", []) == []


async def test_client_supplied_identity_header_is_ignored(new_tenant, http, stack):
    victim, attacker = await new_tenant("Victim"), await new_tenant("Attacker")
    agent = (await victim.post("/v1/agents", AGENT)).json()
    # A validly signed header for the victim (as if the secret had leaked to the attacker's client).
    forged = IdentitySigner(stack.identity_secret.encode()).mint(victim.name.split("/")[1], "key_x", ["admin"])
    response = await http.get(f"/v1/{agent['name']}", headers=attacker.headers(**{"x-vb-identity": forged}))
    assert response.status_code == 404
    without_key = await http.get(f"/v1/{agent['name']}", headers={"x-vb-identity": forged})
    assert without_key.status_code == 401


async def test_service_port_refuses_unsigned_and_forged_identity(stack, new_tenant):
    victim = await new_tenant()
    forged = IdentitySigner(b"an attacker's own secret, 32+ bytes").mint(victim.name.split("/")[1], "k", ["admin"])
    async with grpc.aio.insecure_channel(stack.service_target("agents")) as channel:
        stub = agents_service_pb2_grpc.AgentServiceStub(channel)
        for metadata in ((), (("x-vb-identity", forged),)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListAgents(agents_service_pb2.ListAgentsRequest(), metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateAgent(
                    agents_service_pb2.CreateAgentRequest(
                        agent=agent_pb2.Agent(display_name="x", primary_provider="vendorA")
                    ),
                    metadata=metadata,
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await victim.get("/v1/agents")).json().get("agents", []) == []


async def test_me_and_operator_only_tenants(new_tenant, http, stack):
    tenant = await new_tenant()
    me = await tenant.get("/v1/me")
    assert me.status_code == 200 and me.json()["tenant"] == tenant.name
    assert me.json()["scopes"] == ["SCOPE_ADMIN"]
    assert_json_status(await tenant.post("/v1/tenants", {"displayName": "Nope"}), 403, "SCOPE_INSUFFICIENT")
    # Every tenant the session's stack holds (other tests create many), not only the first page.
    listed = await http.get(
        "/v1/tenants", params={"pageSize": 1000}, headers={"Authorization": f"Bearer {stack.operator_key}"}
    )
    assert tenant.name in [t["name"] for t in listed.json()["tenants"]]
