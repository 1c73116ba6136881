"""Malformed requests get a clear JSON 4xx and change nothing."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import pytest

from tests.e2e.client import error_reason, violated_fields
from tests.support import error_reason as grpc_error_reason


@pytest.mark.parametrize(
    "raw, why",
    [
        (b'{"displayName": "A", ', "malformed JSON"),
        (b'{"displayName": "A", "primaryProvider": "vendorA", "colour": "red"}', "unknown field"),
        (b'{"displayName": ["A"], "primaryProvider": "vendorA"}', "wrong type"),
        (
            b'{"displayName": "A", "primaryProvider": "vendorA", "parameters": {"maxOutputTokens": "lots"}}',
            "wrong type",
        ),
    ],
)
async def test_undecodable_bodies_are_400_and_write_nothing(new_tenant, http, raw, why):
    tenant = await new_tenant()
    response = await http.post(
        "/v1/agents", content=raw, headers=tenant.headers(**{"content-type": "application/json"})
    )
    assert response.status_code == 400, (why, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == 3
    assert violated_fields(response), why
    assert (await tenant.get("/v1/agents")).json().get("agents", []) == []


async def test_oversized_body_is_refused_and_writes_nothing(new_tenant, http):
    tenant = await new_tenant()
    huge = {"displayName": "Big", "primaryProvider": "vendorA", "systemPrompt": "x" * (2 * 1024 * 1024)}
    response = await http.post("/v1/agents", json=huge, headers=tenant.headers())
    assert response.status_code == 413, response.text
    assert error_reason(response) == "REQUEST_TOO_LARGE"
    assert violated_fields(response) == {"body"}
    assert (await tenant.get("/v1/agents")).json().get("agents", []) == []


async def test_unknown_query_parameter_and_unknown_path(new_tenant, http):
    tenant = await new_tenant()
    unknown_param = await tenant.get("/v1/agents", params={"colour": "red"})
    assert unknown_param.status_code == 400, unknown_param.text
    unknown_path = await tenant.get("/v1/nothing-here")
    assert unknown_path.status_code == 404
    assert unknown_path.headers["content-type"].startswith("application/json")


# -- text that cannot be stored, tokens and filters that do not decode, malformed protobuf ------

NUL_TEXT = "poem\u0000please"


async def _provider_calls(stack) -> float:
    from tests.e2e.test_metrics import scrape, total

    return total(await scrape(stack.config.metrics_ports["conversation"]), "vocalbridge_delivery_attempts_total")


async def _chat(tenant) -> tuple[str, str]:
    agent = await tenant.post("/v1/agents", {"displayName": "Careful", "primaryProvider": "vendorA"})
    assert agent.status_code == 200, agent.text
    session = await tenant.post("/v1/sessions", {"agent": agent.json()["name"]})
    assert session.status_code == 200, session.text
    return agent.json()["name"], session.json()["name"]


@pytest.mark.parametrize("route", ["messages", "messages:stream"])
async def test_a_turn_with_a_nul_is_refused_before_any_provider_call(stack, new_tenant, route):
    tenant = await new_tenant()
    _, session = await _chat(tenant)
    key = uuid.uuid4().hex
    calls_before = await _provider_calls(stack)
    response = await tenant.http.post(
        f"/v1/{session}/{route}", json={"content": NUL_TEXT}, headers=tenant.headers(**{"Idempotency-Key": key})
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == 3 and error_reason(response) == "INVALID_ARGUMENT"
    assert violated_fields(response) == {"content"}
    assert await _provider_calls(stack) == calls_before  # no provider was asked
    assert (await tenant.get(f"/v1/{session}/messages")).json().get("messages", []) == []
    assert (await tenant.get("/v1/usageEvents")).json().get("usageEvents", []) == []
    # The key was never claimed: the corrected turn runs with it at once.
    fixed = await tenant.http.post(
        f"/v1/{session}/{route}", json={"content": "poem please"}, headers=tenant.headers(**{"Idempotency-Key": key})
    )
    assert fixed.status_code == 200, fixed.text
    assert await _provider_calls(stack) > calls_before  # the positive control: a good turn does call one


async def test_nul_in_any_stored_field_is_a_400_naming_it(stack, new_tenant):
    tenant = await new_tenant()
    agent, session = await _chat(tenant)
    operator = {"Authorization": f"Bearer {stack.operator_key}"}
    cases = [
        ("/v1/agents", {"displayName": "A\u0000", "primaryProvider": "vendorA"}, "agent.display_name"),
        (
            "/v1/agents",
            {"displayName": "A", "primaryProvider": "vendorA", "systemPrompt": NUL_TEXT},
            "agent.system_prompt",
        ),
        ("/v1/apiKeys", {"displayName": "k\u0000", "scopes": ["SCOPE_READ"]}, "api_key.display_name"),
        ("/v1/sessions", {"agent": agent, "externalUserId": "u\u0000"}, "session.external_user_id"),
        ("/v1/sessions", {"agent": agent, "metadata": {"k": "v\u0000"}}, "session.metadata['k']"),
        ("/v1/tenants", {"displayName": "T\u0000"}, "display_name"),
        ("/v1/voice:synthesize", {"text": NUL_TEXT}, "text"),
    ]
    for path, body, field in cases:
        headers = operator if path == "/v1/tenants" else tenant.headers()
        response = await tenant.http.post(path, json=body, headers=headers)
        assert response.status_code == 400, (field, response.text)
        assert error_reason(response) == "INVALID_ARGUMENT", field
        assert field in violated_fields(response), (field, response.text)
    assert [a["name"] for a in (await tenant.get("/v1/agents")).json()["agents"]] == [agent]
    assert [s["name"] for s in (await tenant.get("/v1/sessions")).json()["sessions"]] == [session]


async def test_a_huge_echoed_value_is_a_small_400(new_tenant):
    tenant = await new_tenant()
    huge = "v" * 500_000
    for path, body in (
        ("/v1/agents", {"displayName": "A", "primaryProvider": huge}),
        ("/v1/sessions", {"agent": "agents/" + huge}),
    ):
        response = await tenant.post(path, body)
        assert response.status_code == 400, response.text[:500]
        assert len(response.content) < 20_000
        assert error_reason(response) == "INVALID_ARGUMENT"


# Page tokens no list ever issued: raw bytes that are not UTF-8, non-ASCII text, NUL, garbage.
BAD_TOKENS = ["%FF%FE", "%C3%A9t%C3%A9", "%00", "garbage", "bm90IGpzb24.AAAA"]


async def test_every_list_route_refuses_an_undecodable_page_token(stack, new_tenant, http):
    tenant = await new_tenant()
    agent, session = await _chat(tenant)
    operator = {"Authorization": f"Bearer {stack.operator_key}"}
    lists = [
        ("/v1/agents", tenant.headers()),
        (f"/v1/{agent}/versions", tenant.headers()),
        ("/v1/apiKeys", tenant.headers()),
        ("/v1/budgets", tenant.headers()),
        ("/v1/rateLimits", tenant.headers()),
        ("/v1/prices", tenant.headers()),
        ("/v1/sessions", tenant.headers()),
        (f"/v1/{session}/messages", tenant.headers()),
        ("/v1/usageEvents", tenant.headers()),
        ("/v1/voices", tenant.headers()),
        ("/v1/tenants", operator),
    ]
    for path, headers in lists:
        assert (await http.get(path, headers=headers)).status_code == 200, path  # the positive control
        for token in BAD_TOKENS:
            response = await http.get(f"{path}?pageToken={token}", headers=headers)
            assert response.status_code == 400, (path, token, response.text)
            assert response.json()["code"] == 3, (path, token)
            assert error_reason(response) in {"INVALID_PAGE_TOKEN", "INVALID_REQUEST_BODY", "INVALID_ARGUMENT"}


async def test_filters_that_cannot_be_decoded_or_stored_are_400(new_tenant, http):
    tenant = await new_tenant()
    for query in (
        "/v1/sessions?agent=%FF",
        "/v1/sessions?agent=agents%2Fa%00b",
        "/v1/usageEvents?provider=%FF%FE",
        "/v1/usageEvents?agent=agents%2F%00",
        "/v1/usageEvents?session=%ED%A0%80",  # a UTF-8-encoded lone surrogate
        "/v1/prices?provider=vendor%00A",
        "/v1/usage:summary?provider=%FF",
    ):
        response = await http.get(query, headers=tenant.headers())
        assert response.status_code == 400, (query, response.text)
        assert response.json()["code"] == 3, query
        assert error_reason(response), query
    # A parameter that is not UTF-8 is named, though the parser only says the request did not decode.
    response = await http.get("/v1/usageEvents?provider=%FF%FE", headers=tenant.headers())
    assert (error_reason(response), violated_fields(response)) == ("INVALID_REQUEST_BODY", {"provider"})
    response = await http.get("/v1/agents/%FF", headers=tenant.headers())
    assert (error_reason(response), violated_fields(response)) == ("INVALID_REQUEST_BODY", {"name"})


def _log_tail(stack, service: str, since: dict[str, int]) -> str:
    text = ""
    for path in sorted(stack.config.log_dir.glob(f"{service}*.log")):
        with open(path, "rb") as log:
            log.seek(since.get(str(path), 0))
            text += log.read().decode("utf-8", "replace")
    return text


def _log_sizes(stack) -> dict[str, int]:
    return {str(path): path.stat().st_size for path in stack.config.log_dir.glob("*.log")}


# One method per service, and the bytes no request message decodes.
MALFORMED_CALLS = [
    ("agents", "/vocalbridge.agents.v1.AgentService/ListAgents"),
    ("auth", "/vocalbridge.auth.v1.AuthService/ListApiKeys"),
    ("billing", "/vocalbridge.billing.v1.BillingService/ListUsageEvents"),
    ("conversation", "/vocalbridge.conversation.v1.ConversationService/SendMessage"),
    ("voice", "/vocalbridge.voice.v1.VoiceService/Synthesize"),
]
MALFORMED_BYTES = b"\x12\x7fshort"


@pytest.mark.parametrize(("service", "method"), MALFORMED_CALLS)
async def test_malformed_protobuf_is_invalid_argument_without_a_traceback(stack, new_tenant, service, method):
    tenant = await new_tenant()
    since = _log_sizes(stack)
    # Through Envoy with a key, and straight to the service's port with no identity at all.
    for target, metadata in (
        (stack.grpc_target, (("authorization", f"Bearer {tenant.key}"),)),
        (stack.service_target(service), ()),
    ):
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method)(MALFORMED_BYTES, metadata=metadata, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (target, caught.value.details())
        assert grpc_error_reason(caught.value) == "INVALID_REQUEST_BODY"
    for _ in range(100):  # a line reaches the file after its client has the status
        logged = _log_tail(stack, service, since)
        lines = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
        refused = [e for e in lines if e.get("method") == method and e.get("status") == "INVALID_ARGUMENT"]
        if len(refused) >= 2:
            break
        await asyncio.sleep(0.05)
    assert "Traceback" not in logged and '"level": "ERROR"' not in logged, logged[-2000:]
    assert len(refused) == 2, lines[-10:]
