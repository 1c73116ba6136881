"""Rate limits end to end, with TWO auth processes behind one Envoy sharing their counters
in Redis: a limit means the same whichever process answers.

The stack here runs auth as two worker processes on one port (VB_AUTH_WORKERS=2; the
kernel spreads connections over them). Envoy keeps about one HTTP/2 connection to auth
per Envoy thread, so its Checks may all land on one process: each test therefore sends
half its requests through Envoy (a new connection each) and half straight to the auth
port as Envoy would (a new gRPC channel, so a new connection, each), and checks from the
two processes' logs that both answered. Its Redis is a throw-away `redis-server` of this
module's own, which the last test stops mid-run.
"""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from tests.conftest import temporary_database, throwaway_redis
from tests.e2e.client import Tenant, error_reason
from tests.e2e.conftest import limits_env
from tests.e2e.test_budgets import capped_agent, new_session, set_budget
from tests.e2e.test_conversation import say
from vocalbridge_common.headers import EDGE_SECRET_HEADER
from vocalbridge_devstack.stack import Stack, StackConfig

LIST_AGENTS = "/vocalbridge.agents.v1.AgentService/ListAgents"
CACHE_SETTLE_SECONDS = 0.5  # the limits cache (0.2 s) of every process, passed


@pytest.fixture(scope="module")
def redis_server():
    with throwaway_redis() as server:
        yield server


@pytest.fixture(scope="module")
async def stack(tmp_path_factory, redis_server):
    url, _, _ = redis_server
    root = tmp_path_factory.mktemp("limits")
    with temporary_database() as database_url:
        config = StackConfig.with_free_ports(
            data_dir=root / "var",
            database_url=database_url,
            log_dir=root / "logs",
            services=("auth", "agents", "billing", "conversation"),
            workers={"auth": 2},
            extra_env={
                "VB_PROVIDER_VENDORA_FAILURE_RATE": "0",
                "VB_PROVIDER_VENDORB_FAILURE_RATE": "0",
                "VB_PROVIDER_VENDORA_LATENCY_MS": "0",
                "VB_RELAY_POLL_INTERVAL_MS": "50",
                **limits_env(url),
            },
        )
        running = Stack(config)
        try:
            await running.start()
            yield running
        finally:
            await running.stop()


@pytest.fixture(scope="module")
async def http(stack):
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        yield client


@pytest.fixture
def tenant(stack, http):
    async def create(name: str = "Limited") -> Tenant:
        response = await http.post(
            "/v1/tenants", json={"displayName": name}, headers={"Authorization": f"Bearer {stack.operator_key}"}
        )
        assert response.status_code == 200, response.text
        return Tenant(http, response.json()["tenant"], response.json()["apiKey"])

    return create


def checks_answered(stack) -> dict[str, int]:
    """How many Checks each auth process has logged."""
    logs = stack.config.log_dir
    return {name: (logs / f"{name}.log").read_text().count("Authorization/Check") for name in ("auth", "auth#2")}


async def via_envoy(stack, key: str) -> tuple[bool, dict[str, str]]:
    """A request through Envoy on a connection of its own: (allowed, response headers)."""
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        response = await client.get("/v1/agents", headers={"Authorization": f"Bearer {key}"})
    if response.status_code != 200:
        assert response.status_code == 429, response.text
        assert error_reason(response) == "RATE_LIMITED"
    return response.status_code == 200, dict(response.headers)


async def via_auth_port(stack, key: str) -> tuple[bool, dict[str, str]]:
    """The Check Envoy would send (with the edge secret, as Envoy does), straight to the auth
    port on a connection of its own."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.path = LIST_AGENTS
    http.headers.update({"content-type": "application/grpc", "authorization": f"Bearer {key}"})
    async with grpc.aio.insecure_channel(stack.service_target("auth")) as channel:
        response = await external_auth_pb2_grpc.AuthorizationStub(channel).Check(
            request, timeout=10, metadata=((EDGE_SECRET_HEADER, stack.edge_secret),)
        )
    if response.HasField("ok_response"):
        return True, {h.header.key: h.header.value for h in response.ok_response.response_headers_to_add}
    assert response.denied_response.status.code == 429
    return False, {h.header.key: h.header.value for h in response.denied_response.headers}


async def burst(stack, key: str, count: int) -> list[tuple[bool, dict[str, str]]]:
    results = []
    for i in range(count):
        results.append(await (via_envoy if i % 2 == 0 else via_auth_port)(stack, key))
    return results


async def test_a_request_limit_holds_across_two_auth_processes(stack, tenant):
    limited, bystander = await tenant("Limited"), await tenant("Bystander")
    limit = 12
    response = await limited.patch(
        "/v1/rateLimits/tenant", {"requestsPerMinute": str(limit)}, params={"allowMissing": "true"}
    )
    assert response.status_code == 200, response.text
    await asyncio.sleep(CACHE_SETTLE_SECONDS)
    before = checks_answered(stack)
    results = await burst(stack, limited.key, 2 * limit + 6)
    answered = checks_answered(stack)
    assert all(answered[name] > before[name] for name in answered), (before, answered)
    allowed = [headers for ok, headers in results if ok]
    refused = [headers for ok, headers in results if not ok]
    # Counted once for both processes: the limit (±2 for the bucket refilling during the burst),
    # where counters of their own would have let about twice as many through.
    assert limit - 2 <= len(allowed) <= limit + 2, len(allowed)
    assert all(int(headers["retry-after"]) >= 1 for headers in refused)
    assert all(headers["x-ratelimit-limit"] == str(limit) for headers in allowed)
    assert [int(h["x-ratelimit-remaining"]) for h in allowed][-1] <= 1
    # Another tenant is not touched by it.
    others = await burst(stack, bystander.key, 2 * limit)
    assert all(ok for ok, _ in others)


async def test_a_token_limit_counts_finished_turns_and_refuses_later_requests(stack, tenant):
    probe = await tenant("Probe")
    agent = await capped_agent(probe)
    first = await say(probe, await new_session(probe, agent), "Hi there.")
    usage = first.json()["usage"]
    tokens_per_turn = usage["promptTokens"] + usage["completionTokens"]
    limited = await tenant("Tokens")
    agent = await capped_agent(limited)
    sessions = [await new_session(limited, agent) for _ in range(12)]
    turns_allowed = 5
    response = await limited.patch(
        "/v1/rateLimits/tenant",
        {"tokensPerMinute": str(turns_allowed * tokens_per_turn)},
        params={"allowMissing": "true"},
    )
    assert response.status_code == 200, response.text
    await asyncio.sleep(CACHE_SETTLE_SECONDS)
    served = 0
    for session in sessions:
        reply = await say(limited, session, "Hi there.")
        if reply.status_code != 200:
            assert reply.status_code == 429 and error_reason(reply) == "RATE_LIMITED", reply.text
            info = next(d for d in reply.json()["details"] if d["@type"].endswith("ErrorInfo"))
            assert info["metadata"]["limit"] == "tokensPerMinute"
            assert int(reply.headers["retry-after"]) >= 1
            break
        served += 1
    # The bucket refills continuously, so a turn may slip in while it refills (the ±2).
    assert turns_allowed <= served <= turns_allowed + 2, served
    # Once overdrawn, every request of the tenant is refused at the edge until it refills.
    assert (await limited.get("/v1/agents")).status_code == 429
    assert (await probe.get("/v1/agents")).status_code == 200


async def test_redis_stopped_mid_run_fails_open_for_rate_limits_closed_for_budgets_and_never_5xx(
    stack, tenant, redis_server
):
    _, stop_redis, start_redis = redis_server
    rated, budgeted = await tenant("Rated"), await tenant("Budgeted")
    assert (
        await rated.patch("/v1/rateLimits/tenant", {"requestsPerMinute": "1000"}, params={"allowMissing": "true"})
    ).status_code == 200
    agent = await capped_agent(budgeted)
    await set_budget(budgeted, "budgets/tenant", 10_000_000)
    await asyncio.sleep(CACHE_SETTLE_SECONDS)
    served = await say(budgeted, await new_session(budgeted, agent), "Hi there.")
    assert served.status_code == 200
    stop_redis()
    try:
        statuses = set()
        for _ in range(6):
            # Rate limits fail open (the default): requests pass, without x-ratelimit headers.
            response = await rated.get("/v1/agents")
            statuses.add(response.status_code)
            assert response.status_code == 200 and "x-ratelimit-limit" not in response.headers
            # Budgets fail closed (the default): a turn is refused with 429, never a 5xx.
            refused = await say(budgeted, await new_session(budgeted, agent), "Hi there.")
            statuses.add(refused.status_code)
            assert refused.status_code == 429 and error_reason(refused) == "LIMITS_UNAVAILABLE", refused.text
            assert int(refused.headers["retry-after"]) >= 1
            # Reading a budget without its counters still answers, without usage.
            budget = await budgeted.get("/v1/budgets/tenant")
            statuses.add(budget.status_code)
            assert budget.status_code == 200 and "usage" not in budget.json()
        assert all(status < 500 for status in statuses)
    finally:
        start_redis()
    # Redis came back empty: the window is seeded from the ledger, which has the turn served before.
    await asyncio.sleep(1.5)  # the store is retried a second after a failure
    for _ in range(50):
        spent = (await budgeted.get("/v1/budgets/tenant")).json().get("usage", {}).get("spentMicros")
        if spent is not None:
            break
        await asyncio.sleep(0.2)
    assert int(spent) == int(served.json()["usage"]["costMicros"])
    assert (await say(budgeted, await new_session(budgeted, agent), "Hi there.")).status_code == 200
