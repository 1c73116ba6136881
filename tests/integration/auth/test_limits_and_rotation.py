"""Rate limits, budgets and key rotation through the real auth server (port 0), real
PostgreSQL and the machine's Redis under a key prefix of this module's own."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from tests.conftest import REDIS_URL, TEST_IDENTITY_SECRET, forget_redis_prefix
from tests.integration.auth.edge_check import TEST_EDGE_SECRET, EdgeCheck
from tests.integration.auth.test_auth_service import OPERATOR_KEY, check, denial, new_tenant
from tests.support import error_reason, violated_fields
from vocalbridge.auth.v1 import auth_service_pb2 as pb
from vocalbridge.auth.v1 import auth_service_pb2_grpc, budget_pb2, rate_limit_pb2
from vocalbridge.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from vocalbridge_auth.config import AuthSettings
from vocalbridge_auth.server import MIGRATIONS_DIR, create_server
from vocalbridge_common.clients import service_metadata
from vocalbridge_common.config import CommonSettings
from vocalbridge_common.headers import IDENTITY_HEADER
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.limits.config import LimitSettings
from vocalbridge_common.migrations import migrate

LIST_AGENTS = "/vocalbridge.agents.v1.AgentService/ListAgents"
CACHE_TTL = 0.3


class FakeLedger(billing_service_pb2_grpc.BillingServiceServicer):
    """Billing's GetUsageSummary, answering what `spent` says for a tenant (by the caller's
    identity) and agent: where a budget window the counters do not have is seeded from."""

    def __init__(self) -> None:
        self.spent: dict[tuple[str, str], int] = {}
        self.asked: list[tuple[str, str]] = []

    async def GetUsageSummary(self, request, context):
        token = dict(context.invocation_metadata())[IDENTITY_HEADER]
        tenant = IdentitySigner(TEST_IDENTITY_SECRET).verify(token).tenant_id
        self.asked.append((tenant, request.agent))
        response = billing_service_pb2.GetUsageSummaryResponse()
        response.totals.cost_micros = self.spent.get((tenant, request.agent), 0)
        return response


@pytest.fixture(scope="module")
async def ledger():
    fake = FakeLedger()
    server = grpc.aio.server()
    billing_service_pb2_grpc.add_BillingServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fake.port = port
    yield fake
    await server.stop(None)


@pytest.fixture(scope="module")
async def server(pg_url, ledger):
    migrate(pg_url, "auth", MIGRATIONS_DIR)
    prefix = f"vbtest:{uuid.uuid4().hex[:12]}:"
    settings = AuthSettings(
        common=CommonSettings(
            service_name="auth",
            listen_host="127.0.0.1",
            port=0,
            database_url=pg_url,
            identity_secret=TEST_IDENTITY_SECRET,
            log_level="INFO",
            known_providers=("vendorA", "vendorB"),
            shutdown_grace_seconds=1,
        ),
        operator_key_digest=hashlib.sha256(OPERATOR_KEY.encode()).hexdigest(),
        key_cache_ttl_seconds=CACHE_TTL,
        identity_ttl_seconds=60,
        edge_secret=TEST_EDGE_SECRET,
        billing_address=f"127.0.0.1:{ledger.port}",
        limits=LimitSettings(
            store="redis",
            redis_url=REDIS_URL,
            key_prefix=prefix,
            cache_ttl_seconds=0,  # every Check reads the limits: no waiting in these tests
        ),
    )
    running = await create_server(settings)
    yield running
    await running.stop(None)
    forget_redis_prefix(prefix)


@pytest.fixture(scope="module")
async def auth(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel), channel


@pytest.fixture(scope="module")
def operator(as_tenant):
    return as_tenant("", ("operator",), key_id="operator")


def admin(as_tenant, tenant_id):
    return as_tenant(tenant_id, ("admin",))


async def _stub_and_authz(auth):
    stub, channel = auth
    return stub, EdgeCheck(channel)


def _headers(response) -> dict[str, str]:
    if response.HasField("denied_response"):
        return {h.header.key: h.header.value for h in response.denied_response.headers}
    return {h.header.key: h.header.value for h in response.ok_response.response_headers_to_add}


async def _set_rate(stub, metadata, name, rpm=None, tpm=None, **extra):
    limit = rate_limit_pb2.RateLimit(name=name)
    if rpm is not None:
        limit.requests_per_minute = rpm
    if tpm is not None:
        limit.tokens_per_minute = tpm
    return await stub.UpdateRateLimit(
        pb.UpdateRateLimitRequest(rate_limit=limit, allow_missing=True, **extra), metadata=metadata
    )


async def test_a_request_limit_lets_its_number_through_at_the_edge_then_429_with_retry_after(auth, operator, as_tenant):
    stub, authz = await _stub_and_authz(auth)
    tenant_id, key = await new_tenant(stub, operator)
    _, other_key = await new_tenant(stub, operator, "Other")
    await _set_rate(stub, admin(as_tenant, tenant_id), "rateLimits/tenant", rpm=5)
    responses = [await check(authz, LIST_AGENTS, key.secret) for _ in range(7)]
    allowed = [r for r in responses if r.HasField("ok_response")]
    assert len(allowed) == 5
    assert [_headers(r)["x-ratelimit-remaining"] for r in allowed] == ["4", "3", "2", "1", "0"]
    assert _headers(allowed[0])["x-ratelimit-limit"] == "5"
    status, reason = denial(responses[5])
    assert (status, reason) == (429, "RATE_LIMITED")
    assert int(_headers(responses[5])["retry-after"]) in range(1, 13)  # one request refills in 12 s
    # Another tenant is not touched, and gets no headers: it has no limit.
    for _ in range(7):
        other = await check(authz, LIST_AGENTS, other_key.secret)
        assert other.HasField("ok_response") and _headers(other) == {}
    # The limit is visible, with nothing left.
    limit = await stub.GetRateLimit(
        pb.GetRateLimitRequest(name="rateLimits/tenant"), metadata=admin(as_tenant, tenant_id)
    )
    assert limit.requests_per_minute == 5 and limit.usage.requests_remaining == 0
    assert limit.target == "tenant" and limit.etag


async def test_a_key_limit_applies_to_that_key_only(auth, operator, as_tenant):
    stub, authz = await _stub_and_authz(auth)
    tenant_id, first = await new_tenant(stub, operator)
    second = await stub.CreateApiKey(
        pb.CreateApiKeyRequest(api_key={"display_name": "second"}), metadata=admin(as_tenant, tenant_id)
    )
    await _set_rate(stub, admin(as_tenant, tenant_id), f"rateLimits/{second.name.split('/')[1]}", rpm=2)
    results = [(await check(authz, LIST_AGENTS, second.secret)).HasField("ok_response") for _ in range(4)]
    assert results == [True, True, False, False]
    assert all([(await check(authz, LIST_AGENTS, first.secret)).HasField("ok_response") for _ in range(4)])


async def test_bad_limit_values_are_refused_with_every_field_named_and_nothing_saved(auth, operator, as_tenant):
    stub, _ = await _stub_and_authz(auth)
    tenant_id, _ = await new_tenant(stub, operator)
    md = admin(as_tenant, tenant_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _set_rate(stub, md, "rateLimits/tenant", rpm=0, tpm=-5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == {"rate_limit.requests_per_minute", "rate_limit.tokens_per_minute"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _set_rate(stub, md, "rateLimits/tenant")
    assert violated_fields(caught.value) == {"rate_limit"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _set_rate(
            stub, md, "rateLimits/tenant", rpm=1, update_mask=field_mask_pb2.FieldMask(paths=["etag", "nope"])
        )
    assert violated_fields(caught.value) == {"update_mask"}
    bad_budgets = [
        (budget_pb2.Budget(name="budgets/tenant", limit_micros=0), {"budget.limit_micros"}),
        (budget_pb2.Budget(name="budgets/tenant", limit_micros=-1), {"budget.limit_micros"}),
        (
            budget_pb2.Budget(name="budgets/tenant", limit_micros=5, period=budget_pb2.BUDGET_PERIOD_FIXED_WINDOW),
            {"budget.window_duration"},
        ),
        (
            budget_pb2.Budget(
                name="budgets/tenant",
                limit_micros=5,
                period=budget_pb2.BUDGET_PERIOD_FIXED_WINDOW,
                window_duration=duration_pb2.Duration(seconds=1, nanos=5),
            ),
            {"budget.window_duration"},
        ),
        (
            budget_pb2.Budget(name="budgets/tenant", limit_micros=5, window_duration=duration_pb2.Duration(seconds=60)),
            {"budget.window_duration"},
        ),
        (budget_pb2.Budget(name="budgets/tenant", limit_micros=5, period=99), {"budget.period"}),
    ]
    for budget, fields in bad_budgets:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.UpdateBudget(pb.UpdateBudgetRequest(budget=budget, allow_missing=True), metadata=md)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, budget
        assert violated_fields(caught.value) == fields, budget
    assert not (await stub.ListRateLimits(pb.ListRateLimitsRequest(), metadata=md)).rate_limits
    assert not (await stub.ListBudgets(pb.ListBudgetsRequest(), metadata=md)).budgets


async def test_a_read_only_key_sees_limits_but_cannot_change_them(auth, operator, as_tenant):
    stub, _ = await _stub_and_authz(auth)
    tenant_id, _ = await new_tenant(stub, operator)
    await _set_rate(stub, admin(as_tenant, tenant_id), "rateLimits/tenant", rpm=100)
    reader = as_tenant(tenant_id, ("read",))
    writer = as_tenant(tenant_id, ("write",))
    assert (
        await stub.GetRateLimit(pb.GetRateLimitRequest(name="rateLimits/tenant"), metadata=reader)
    ).requests_per_minute == 100
    for md in (reader, writer):
        for call in (
            _set_rate(stub, md, "rateLimits/tenant", rpm=1),
            stub.DeleteRateLimit(pb.DeleteRateLimitRequest(name="rateLimits/tenant"), metadata=md),
            stub.UpdateBudget(
                pb.UpdateBudgetRequest(
                    budget=budget_pb2.Budget(name="budgets/tenant", limit_micros=1), allow_missing=True
                ),
                metadata=md,
            ),
            stub.DeleteBudget(pb.DeleteBudgetRequest(name="budgets/tenant"), metadata=md),
            stub.RotateApiKey(pb.RotateApiKeyRequest(name="apiKeys/key_00000000000000000000000000"), metadata=md),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert error_reason(caught.value) == "SCOPE_INSUFFICIENT"
    assert (
        await stub.GetRateLimit(pb.GetRateLimitRequest(name="rateLimits/tenant"), metadata=reader)
    ).requests_per_minute == 100


async def test_another_tenant_can_neither_see_nor_change_a_tenants_limits_budgets_or_keys(auth, operator, as_tenant):
    stub, _ = await _stub_and_authz(auth)
    a_id, a_key = await new_tenant(stub, operator, "A")
    b_id, _ = await new_tenant(stub, operator, "B")
    a, b = admin(as_tenant, a_id), admin(as_tenant, b_id)
    a_key_id = a_key.name.split("/")[1]
    await _set_rate(stub, a, "rateLimits/tenant", rpm=10)
    await _set_rate(stub, a, f"rateLimits/{a_key_id}", rpm=10)
    for name in ("budgets/tenant", f"budgets/{a_key_id}"):
        await stub.UpdateBudget(
            pb.UpdateBudgetRequest(budget=budget_pb2.Budget(name=name, limit_micros=1000), allow_missing=True),
            metadata=a,
        )
    assert not (await stub.ListRateLimits(pb.ListRateLimitsRequest(), metadata=b)).rate_limits
    assert not (await stub.ListBudgets(pb.ListBudgetsRequest(), metadata=b)).budgets
    for name in ("rateLimits/tenant", f"rateLimits/{a_key_id}"):
        for call in (
            stub.GetRateLimit(pb.GetRateLimitRequest(name=name), metadata=b),
            stub.DeleteRateLimit(pb.DeleteRateLimitRequest(name=name), metadata=b),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    for name in ("budgets/tenant", f"budgets/{a_key_id}"):
        for call in (
            stub.GetBudget(pb.GetBudgetRequest(name=name), metadata=b),
            stub.DeleteBudget(pb.DeleteBudgetRequest(name=name), metadata=b),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # B cannot put a limit on A's key (it does not exist for B), nor rotate it.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _set_rate(stub, b, f"rateLimits/{a_key_id}", rpm=1)
    assert error_reason(caught.value) == "API_KEY_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateBudget(
            pb.UpdateBudgetRequest(
                budget=budget_pb2.Budget(name=f"budgets/{a_key_id}", limit_micros=1), allow_missing=True
            ),
            metadata=b,
        )
    assert error_reason(caught.value) == "API_KEY_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RotateApiKey(pb.RotateApiKeyRequest(name=a_key.name), metadata=b)
    assert error_reason(caught.value) == "API_KEY_NOT_FOUND"
    # A's are all still there, unchanged.
    assert len((await stub.ListRateLimits(pb.ListRateLimitsRequest(), metadata=a)).rate_limits) == 2
    assert len((await stub.ListBudgets(pb.ListBudgetsRequest(), metadata=a)).budgets) == 2
    # The internal read takes the services' own identity only; a tenant's admin is refused.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetTenantLimits(pb.GetTenantLimitsRequest(tenant=f"tenants/{a_id}"), metadata=b)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    internal = service_metadata(IdentitySigner(TEST_IDENTITY_SECRET), "conversation")
    limits = await stub.GetTenantLimits(pb.GetTenantLimitsRequest(tenant=f"tenants/{a_id}"), metadata=internal)
    assert {r.name for r in limits.rate_limits} == {"rateLimits/tenant", f"rateLimits/{a_key_id}"}
    assert not (
        await stub.GetTenantLimits(pb.GetTenantLimitsRequest(tenant=f"tenants/{b_id}"), metadata=internal)
    ).budgets


async def test_updates_race_through_etags_and_masks(auth, operator, as_tenant):
    stub, _ = await _stub_and_authz(auth)
    tenant_id, _ = await new_tenant(stub, operator)
    md = admin(as_tenant, tenant_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateRateLimit(
            pb.UpdateRateLimitRequest(
                rate_limit=rate_limit_pb2.RateLimit(name="rateLimits/tenant", requests_per_minute=3)
            ),
            metadata=md,
        )
    assert error_reason(caught.value) == "RATE_LIMIT_NOT_FOUND"  # no allow_missing: nothing to update
    first = await _set_rate(stub, md, "rateLimits/tenant", rpm=10, tpm=1000)
    # A mask changes only what it names; a masked field left unset is cleared.
    second = await stub.UpdateRateLimit(
        pb.UpdateRateLimitRequest(
            rate_limit=rate_limit_pb2.RateLimit(name="rateLimits/tenant", etag=first.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["tokensPerMinute"]),
        ),
        metadata=md,
    )
    assert second.requests_per_minute == 10 and not second.HasField("tokens_per_minute")
    assert second.etag != first.etag
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateRateLimit(
            pb.UpdateRateLimitRequest(
                rate_limit=rate_limit_pb2.RateLimit(name="rateLimits/tenant", requests_per_minute=1, etag=first.etag)
            ),
            metadata=md,
        )
    assert (caught.value.code(), error_reason(caught.value)) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteRateLimit(pb.DeleteRateLimitRequest(name="rateLimits/tenant", etag=first.etag), metadata=md)
    assert error_reason(caught.value) == "ETAG_MISMATCH"
    await stub.DeleteRateLimit(pb.DeleteRateLimitRequest(name="rateLimits/tenant", etag=second.etag), metadata=md)
    # Concurrent creations: each either wins or is told to retry; one limit results.
    results = await asyncio.gather(
        *(_set_rate(stub, md, "rateLimits/tenant", rpm=n + 1) for n in range(5)), return_exceptions=True
    )
    assert all(not isinstance(r, Exception) or error_reason(r) == "CONCURRENT_CHANGE" for r in results)
    assert len((await stub.ListRateLimits(pb.ListRateLimitsRequest(), metadata=md)).rate_limits) == 1


async def test_a_budget_shows_its_window_and_usage_seeded_from_the_ledger(auth, operator, as_tenant, ledger):
    stub, _ = await _stub_and_authz(auth)
    tenant_id, _ = await new_tenant(stub, operator)
    md = admin(as_tenant, tenant_id)
    ledger.spent[(tenant_id, "")] = 1_500_000
    budget = await stub.UpdateBudget(
        pb.UpdateBudgetRequest(
            budget=budget_pb2.Budget(
                name="budgets/tenant",
                limit_micros=25_000_000,
                period=budget_pb2.BUDGET_PERIOD_FIXED_WINDOW,
                window_duration=duration_pb2.Duration(seconds=86400),
            ),
            allow_missing=True,
        ),
        metadata=md,
    )
    usage = budget.usage
    assert usage.window_end_time.ToSeconds() - usage.window_start_time.ToSeconds() == 86400
    assert usage.window_start_time.ToSeconds() % 86400 == 0  # a UTC day
    # The counters have no window yet: what was spent comes from the ledger.
    assert (usage.spent_micros, usage.reserved_micros, usage.remaining_micros) == (1_500_000, 0, 23_500_000)
    assert (tenant_id, "") in ledger.asked
    monthly = await stub.UpdateBudget(
        pb.UpdateBudgetRequest(
            budget=budget_pb2.Budget(name="budgets/tenant", period=budget_pb2.BUDGET_PERIOD_CALENDAR_MONTH),
            update_mask=field_mask_pb2.FieldMask(paths=["period"]),
        ),
        metadata=md,
    )
    assert monthly.period == budget_pb2.BUDGET_PERIOD_CALENDAR_MONTH and not monthly.HasField("window_duration")
    assert monthly.usage.window_start_time.ToDatetime().day == 1


async def test_a_rotated_key_works_beside_its_successor_for_the_overlap_only(auth, operator, as_tenant):
    stub, authz = await _stub_and_authz(auth)
    tenant_id, first_key = await new_tenant(stub, operator)
    md = admin(as_tenant, tenant_id)
    old = await stub.CreateApiKey(pb.CreateApiKeyRequest(api_key={"display_name": "ci", "scopes": [1]}), metadata=md)
    old_id = old.name.split("/")[1]
    await _set_rate(stub, md, f"rateLimits/{old_id}", rpm=1000)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RotateApiKey(
            pb.RotateApiKeyRequest(name=old.name, overlap=duration_pb2.Duration(seconds=-1)), metadata=md
        )
    assert violated_fields(caught.value) == {"overlap"}
    rotated = await stub.RotateApiKey(
        pb.RotateApiKeyRequest(name=old.name, overlap=duration_pb2.Duration(seconds=2)), metadata=md
    )
    new = rotated.api_key
    assert new.secret and new.secret != old.secret and new.display_name == "ci" and list(new.scopes) == [1]
    assert rotated.rotated_api_key.successor == new.name and rotated.rotated_api_key.HasField("expire_time")
    # The successor inherits the key's rate limit.
    limit = await stub.GetRateLimit(pb.GetRateLimitRequest(name=f"rateLimits/{new.name.split('/')[1]}"), metadata=md)
    assert limit.requests_per_minute == 1000
    # Rotating it again is refused, naming the successor.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RotateApiKey(pb.RotateApiKeyRequest(name=old.name), metadata=md)
    assert (caught.value.code(), error_reason(caught.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "API_KEY_ALREADY_ROTATED",
    )
    for secret in (old.secret, new.secret):
        assert (await check(authz, LIST_AGENTS, secret)).HasField("ok_response")
    await asyncio.sleep(2 + CACHE_TTL + 0.2)
    status, reason = denial(await check(authz, LIST_AGENTS, old.secret))
    assert (status, reason) == (401, "API_KEY_EXPIRED")
    assert (await check(authz, LIST_AGENTS, new.secret)).HasField("ok_response")
    # Concurrent rotations of one key: exactly one successor.
    spare = await stub.CreateApiKey(pb.CreateApiKeyRequest(api_key={"display_name": "spare"}), metadata=md)
    outcomes = await asyncio.gather(
        *(stub.RotateApiKey(pb.RotateApiKeyRequest(name=spare.name), metadata=md) for _ in range(4)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    keys = (await stub.ListApiKeys(pb.ListApiKeysRequest(), metadata=md)).api_keys
    assert len([k for k in keys if k.display_name == "spare"]) == 2
    assert first_key.name in {k.name for k in keys}


async def test_a_keys_last_use_is_recorded_off_the_request_path(auth, operator, as_tenant):
    stub, authz = await _stub_and_authz(auth)
    tenant_id, key = await new_tenant(stub, operator)
    md = admin(as_tenant, tenant_id)
    assert not (await stub.GetApiKey(pb.GetApiKeyRequest(name=key.name), metadata=md)).HasField("last_use_time")
    assert (await check(authz, LIST_AGENTS, key.secret)).HasField("ok_response")
    for _ in range(100):  # written by the background flush, every few seconds
        fetched = await stub.GetApiKey(pb.GetApiKeyRequest(name=key.name), metadata=md)
        if fetched.HasField("last_use_time"):
            break
        await asyncio.sleep(0.1)
    assert fetched.HasField("last_use_time")
