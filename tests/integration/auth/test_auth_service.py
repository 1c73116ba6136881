"""The auth service through its real server (port 0) against real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import TEST_IDENTITY_SECRET
from tests.integration.auth.edge_check import TEST_EDGE_SECRET, EdgeCheck
from tests.support import error_reason, violated_fields
from vocalbridge.auth.v1 import api_key_pb2, auth_service_pb2, auth_service_pb2_grpc
from vocalbridge_auth.config import AuthSettings
from vocalbridge_auth.server import MIGRATIONS_DIR, create_server
from vocalbridge_common.config import CommonSettings
from vocalbridge_common.db import async_url
from vocalbridge_common.migrations import migrate

OPERATOR_KEY = "operator-key-for-tests-0123456789"
CACHE_TTL = 0.3
LIST_AGENTS = "/vocalbridge.agents.v1.AgentService/ListAgents"
CREATE_AGENT = "/vocalbridge.agents.v1.AgentService/CreateAgent"


@pytest.fixture(scope="module")
async def server(pg_url):
    migrate(pg_url, "auth", MIGRATIONS_DIR)
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
    )
    running = await create_server(settings)
    yield running
    await running.stop(None)


@pytest.fixture(scope="module")
async def channel(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def auth(channel):
    return auth_service_pb2_grpc.AuthServiceStub(channel)


@pytest.fixture(scope="module")
def authz(channel):
    return EdgeCheck(channel)


@pytest.fixture(scope="module")
def operator(as_tenant):
    return as_tenant("", ("operator",), key_id="operator")


async def new_tenant(auth, operator, name="Acme"):
    response = await auth.CreateTenant(auth_service_pb2.CreateTenantRequest(display_name=name), metadata=operator)
    tenant_id = response.tenant.name.removeprefix("tenants/")
    return tenant_id, response.api_key


async def check(authz, method: str, key: str | None):
    """Check as Envoy asks it for a gRPC call to `method`."""
    headers = {"x-request-id": "req-test", "content-type": "application/grpc"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.path = method
    request.attributes.request.http.headers.update(headers)
    return await authz.Check(request)


def denial(response) -> tuple[int, str]:
    """(HTTP status, ErrorInfo reason) of a denial: from the JSON body, or for a gRPC
    client from the grpc-status-details-bin header (whose message must match the body)."""
    assert response.HasField("denied_response"), response
    denied = response.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    if "grpc-status-details-bin" in headers:
        raw = headers["grpc-status-details-bin"]
        status = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
        assert status.message == denied.body and str(status.code) == headers["grpc-status"]
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        return denied.status.code, info.reason
    body = json.loads(denied.body)
    return denied.status.code, body["details"][0]["reason"]


async def test_create_tenant_returns_admin_key_once(auth, operator):
    tenant_id, key = await new_tenant(auth, operator)
    assert tenant_id.startswith("ten_")
    assert key.secret.startswith(key.prefix + "_")
    assert list(key.scopes) == [api_key_pb2.SCOPE_ADMIN]
    tenants = await auth.ListTenants(auth_service_pb2.ListTenantsRequest(), metadata=operator)
    assert f"tenants/{tenant_id}" in [t.name for t in tenants.tenants]
    fetched = await auth.GetApiKey(
        auth_service_pb2.GetApiKeyRequest(name=key.name), metadata=(("x-vb-identity", _mint(tenant_id, ("admin",))),)
    )
    assert fetched.secret == "" and fetched.prefix == key.prefix


def _mint(tenant_id, scopes):
    from vocalbridge_common.identity import IdentitySigner

    return IdentitySigner(TEST_IDENTITY_SECRET).mint(tenant_id, "key_test", scopes)


async def test_tenant_admin_cannot_create_tenants(auth, as_tenant):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.CreateTenant(auth_service_pb2.CreateTenantRequest(display_name="X"), metadata=as_tenant("ten_x"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(caught.value) == "SCOPE_INSUFFICIENT"


async def test_invalid_tenant_name_is_refused_and_nothing_written(auth, operator):
    before = await auth.ListTenants(auth_service_pb2.ListTenantsRequest(page_size=1000), metadata=operator)
    for bad in ("", " padded ", "x" * 101):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.CreateTenant(auth_service_pb2.CreateTenantRequest(display_name=bad), metadata=operator)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(caught.value) == {"display_name"}
    after = await auth.ListTenants(auth_service_pb2.ListTenantsRequest(page_size=1000), metadata=operator)
    assert len(after.tenants) == len(before.tenants)


async def test_check_mints_identity_for_a_valid_key(auth, authz, operator, signer):
    tenant_id, key = await new_tenant(auth, operator)
    response = await check(authz, LIST_AGENTS, key.secret)
    assert response.HasField("ok_response")
    header = {h.header.key: h.header.value for h in response.ok_response.headers}
    identity = signer.verify(header["x-vb-identity"])
    assert identity.tenant_id == tenant_id
    assert identity.scopes == {"admin"}
    assert set(response.ok_response.headers_to_remove) == {"authorization", "x-api-key"}


async def test_check_accepts_x_api_key_header(auth, authz, operator):
    _, key = await new_tenant(auth, operator)
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.path = LIST_AGENTS
    request.attributes.request.http.headers.update({"x-api-key": key.secret, "content-type": "application/grpc"})
    assert (await authz.Check(request)).HasField("ok_response")


async def check_json(authz, http_method: str, path: str, key: str, body: bytes = b""):
    """Check as Envoy asks it for a JSON request, body included."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.raw_body = http_method, path, body
    http.headers.update({"authorization": f"Bearer {key}", "content-type": "application/json"})
    return await authz.Check(request)


async def test_json_requests_are_resolved_through_the_http_rules(auth, authz, operator, as_tenant):
    tenant_id, key = await new_tenant(auth, operator)
    reader = await auth.CreateApiKey(
        auth_service_pb2.CreateApiKeyRequest(
            api_key=api_key_pb2.ApiKey(display_name="reader", scopes=[api_key_pb2.SCOPE_READ])
        ),
        metadata=as_tenant(tenant_id),
    )
    assert (await check_json(authz, "GET", "/v1/agents?pageSize=2", reader.secret)).HasField("ok_response")
    assert denial(await check_json(authz, "POST", "/v1/agents", reader.secret, b'{"displayName": "x"}')) == (
        403,
        "SCOPE_INSUFFICIENT",
    )
    assert (
        await check_json(authz, "PATCH", "/v1/agents/agt_1?updateMask=displayName", key.secret, b'{"displayName": "y"}')
    ).HasField("ok_response")
    assert denial(await check_json(authz, "GET", "/v1/nowhere", key.secret)) == (404, "METHOD_NOT_FOUND")
    # Without a key the caller learns nothing about the API's shape.
    assert denial(await check_json(authz, "GET", "/v1/nowhere", "")) == (401, "API_KEY_MISSING")


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"displayName": "A", "colour": "red"}', "agent.colour"),
        (b'{"displayName": "A", "parameters": {"temprature": 1}}', "agent.parameters.temprature"),
        (b'{"displayName": ["A"]}', "agent.display_name"),
        (b'{"parameters": {"maxOutputTokens": "lots"}}', "agent.parameters.max_output_tokens"),
        (b'{"displayName": "A", ', "body"),
        (b"[1, 2]", "body"),
    ],
)
async def test_invalid_json_bodies_are_refused_with_field_violations(auth, authz, operator, body, field):
    _, key = await new_tenant(auth, operator)
    response = await check_json(authz, "POST", "/v1/agents", key.secret, body)
    assert denial(response) == (400, "INVALID_REQUEST_BODY")
    details = json.loads(response.denied_response.body)["details"]
    violations = next(d for d in details if d["@type"].endswith("BadRequest"))["fieldViolations"]
    assert [v["field"] for v in violations] == [field]


async def test_check_denies_missing_and_wrong_keys(auth, authz, operator):
    _, key = await new_tenant(auth, operator)
    assert denial(await check(authz, LIST_AGENTS, None)) == (401, "API_KEY_MISSING")
    assert denial(await check(authz, LIST_AGENTS, key.secret[:-1] + ("A" if key.secret[-1] != "A" else "B"))) == (
        401,
        "API_KEY_INVALID",
    )
    assert denial(await check(authz, LIST_AGENTS, "not-a-key")) == (401, "API_KEY_INVALID")


async def test_check_applies_scopes(auth, authz, operator, as_tenant):
    tenant_id, _ = await new_tenant(auth, operator)
    read_only = await auth.CreateApiKey(
        auth_service_pb2.CreateApiKeyRequest(
            api_key=api_key_pb2.ApiKey(display_name="reader", scopes=[api_key_pb2.SCOPE_READ])
        ),
        metadata=as_tenant(tenant_id),
    )
    assert (await check(authz, LIST_AGENTS, read_only.secret)).HasField("ok_response")
    assert denial(await check(authz, CREATE_AGENT, read_only.secret)) == (403, "SCOPE_INSUFFICIENT")
    # The operator manages tenants but is no tenant: it cannot list agents.
    assert denial(await check(authz, LIST_AGENTS, OPERATOR_KEY)) == (403, "SCOPE_INSUFFICIENT")
    assert (await check(authz, "/vocalbridge.auth.v1.AuthService/CreateTenant", OPERATOR_KEY)).HasField("ok_response")


async def test_revoked_key_is_refused_after_cache_ttl(auth, authz, operator, as_tenant):
    tenant_id, admin = await new_tenant(auth, operator)
    key = await auth.CreateApiKey(
        auth_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(display_name="k")),
        metadata=as_tenant(tenant_id),
    )
    assert list(key.scopes) == [api_key_pb2.SCOPE_WRITE]
    assert (await check(authz, LIST_AGENTS, key.secret)).HasField("ok_response")
    revoked = await auth.RevokeApiKey(
        auth_service_pb2.RevokeApiKeyRequest(name=key.name), metadata=as_tenant(tenant_id)
    )
    assert revoked.HasField("revoke_time")
    await asyncio.sleep(CACHE_TTL + 0.1)
    assert denial(await check(authz, LIST_AGENTS, key.secret)) == (401, "API_KEY_REVOKED")
    assert (await check(authz, LIST_AGENTS, admin.secret)).HasField("ok_response")


async def test_revoking_a_revoked_key_changes_nothing(auth, operator, as_tenant):
    tenant_id, _ = await new_tenant(auth, operator)
    meta = as_tenant(tenant_id)
    key = await auth.CreateApiKey(
        auth_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(display_name="k")), metadata=meta
    )
    first = await auth.RevokeApiKey(auth_service_pb2.RevokeApiKeyRequest(name=key.name), metadata=meta)
    again = await auth.RevokeApiKey(auth_service_pb2.RevokeApiKeyRequest(name=key.name), metadata=meta)
    assert first.HasField("revoke_time") and again == first
    assert await auth.GetApiKey(auth_service_pb2.GetApiKeyRequest(name=key.name), metadata=meta) == first


async def test_expired_key_is_refused(auth, authz, operator, as_tenant):
    tenant_id, _ = await new_tenant(auth, operator)
    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    key = await auth.CreateApiKey(
        auth_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(display_name="brief", expire_time=expire)),
        metadata=as_tenant(tenant_id),
    )
    assert (await check(authz, LIST_AGENTS, key.secret)).HasField("ok_response")
    await asyncio.sleep(1.2)
    assert denial(await check(authz, LIST_AGENTS, key.secret)) == (401, "API_KEY_EXPIRED")


async def test_create_api_key_validation_writes_nothing(auth, operator, as_tenant):
    tenant_id, _ = await new_tenant(auth, operator)
    meta = as_tenant(tenant_id)
    past = timestamp_pb2.Timestamp()
    past.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    cases = [
        (api_key_pb2.ApiKey(display_name="k", scopes=[api_key_pb2.SCOPE_OPERATOR]), {"api_key.scopes"}),
        (api_key_pb2.ApiKey(display_name="k", scopes=[api_key_pb2.SCOPE_UNSPECIFIED]), {"api_key.scopes"}),
        (api_key_pb2.ApiKey(display_name="k", expire_time=past), {"api_key.expire_time"}),
        (api_key_pb2.ApiKey(display_name="k" * 101), {"api_key.display_name"}),
        # A key needs a name to be told apart from the others: blank, whitespace or padded is refused.
        (api_key_pb2.ApiKey(), {"api_key.display_name"}),
        (api_key_pb2.ApiKey(display_name="   "), {"api_key.display_name"}),
        (api_key_pb2.ApiKey(display_name="\t"), {"api_key.display_name"}),
        (api_key_pb2.ApiKey(display_name=" ci "), {"api_key.display_name"}),
    ]
    for key, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.CreateApiKey(auth_service_pb2.CreateApiKeyRequest(api_key=key), metadata=meta)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(caught.value) == fields
    keys = await auth.ListApiKeys(auth_service_pb2.ListApiKeysRequest(), metadata=meta)
    assert len(keys.api_keys) == 1


async def test_keys_are_tenant_isolated(auth, operator, as_tenant):
    tenant_a, key_a = await new_tenant(auth, operator, "A")
    tenant_b, key_b = await new_tenant(auth, operator, "B")
    as_b = as_tenant(tenant_b)
    for call, request in (
        (auth.GetApiKey, auth_service_pb2.GetApiKeyRequest(name=key_a.name)),
        (auth.RevokeApiKey, auth_service_pb2.RevokeApiKeyRequest(name=key_a.name)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, metadata=as_b)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_reason(caught.value) == "API_KEY_NOT_FOUND"
    listed = await auth.ListApiKeys(auth_service_pb2.ListApiKeysRequest(), metadata=as_b)
    assert [k.name for k in listed.api_keys] == [key_b.name]
    still = await auth.GetApiKey(auth_service_pb2.GetApiKeyRequest(name=key_a.name), metadata=as_tenant(tenant_a))
    assert not still.HasField("revoke_time")


async def test_pagination_and_bad_page_token(auth, operator, as_tenant):
    tenant_id, _ = await new_tenant(auth, operator)
    meta = as_tenant(tenant_id)
    for _ in range(4):
        await auth.CreateApiKey(
            auth_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(display_name="k")), metadata=meta
        )
    seen, token = [], ""
    while True:
        page = await auth.ListApiKeys(auth_service_pb2.ListApiKeysRequest(page_size=2, page_token=token), metadata=meta)
        seen += [k.name for k in page.api_keys]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 5
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ListApiKeys(auth_service_pb2.ListApiKeysRequest(page_token="garbage"), metadata=meta)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "INVALID_PAGE_TOKEN"


async def test_get_caller_identity(auth, operator, as_tenant):
    tenant_id, _ = await new_tenant(auth, operator)
    me = await auth.GetCallerIdentity(
        auth_service_pb2.GetCallerIdentityRequest(), metadata=as_tenant(tenant_id, ("read",))
    )
    assert me.tenant == f"tenants/{tenant_id}"
    assert list(me.scopes) == [api_key_pb2.SCOPE_READ]
    op = await auth.GetCallerIdentity(auth_service_pb2.GetCallerIdentityRequest(), metadata=operator)
    assert op.tenant == "" and list(op.scopes) == [api_key_pb2.SCOPE_OPERATOR]


async def test_unsigned_or_forged_identity_is_refused(auth, signer):
    forged = signer.mint("ten_x", "key_x", ("operator",))
    body, _, _mac = forged.rpartition(".")
    for metadata in ((), (("x-vb-identity", body + ".AAAA"),), (("x-vb-identity", "garbage"),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.ListTenants(auth_service_pb2.ListTenantsRequest(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(caught.value) == "INVALID_IDENTITY"


async def test_row_level_security_hides_keys_without_tenant(auth, operator, pg_url):
    tenant_id, _ = await new_tenant(auth, operator)
    engine = create_async_engine(async_url(pg_url))
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SET LOCAL ROLE vocalbridge_app"))
            assert (await connection.scalar(text("SELECT count(*) FROM auth.api_keys"))) == 0
            await connection.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant_id})
            assert (await connection.scalar(text("SELECT count(*) FROM auth.api_keys"))) == 1
    finally:
        await engine.dispose()


async def test_check_answers_the_edge_only(auth, channel, operator):
    """Without the edge secret (a caller who reached the auth port with a good key), or with
    another one, Check mints nothing: UNAUTHENTICATED before any lookup."""
    _, key = await new_tenant(auth, operator)
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.path = LIST_AGENTS
    request.attributes.request.http.headers.update(
        {"authorization": f"Bearer {key.secret}", "content-type": "application/grpc"}
    )
    for secret in (None, b"", b"another-edge-secret-0123456789abcdef", TEST_EDGE_SECRET[:-1]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await EdgeCheck(channel, secret).Check(request)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(caught.value) == "EDGE_SECRET_INVALID"
    assert (await EdgeCheck(channel).Check(request)).HasField("ok_response")  # the edge itself


async def test_check_names_the_tenant_for_the_access_log(auth, authz, operator):
    tenant_id, key = await new_tenant(auth, operator)
    response = await check(authz, LIST_AGENTS, key.secret)
    fields = response.dynamic_metadata.fields
    assert fields["tenant"].string_value == tenant_id
    assert fields["key"].string_value == key.name.removeprefix("apiKeys/")


@pytest.mark.parametrize("depth", [65, 3000, 100_000])
async def test_json_nested_too_deep_is_400_not_503(auth, authz, operator, depth):
    _, key = await new_tenant(auth, operator)
    body = b'{"displayName": "A", "parameters": ' + b"[" * depth + b"]" * depth + b"}"
    response = await check_json(authz, "POST", "/v1/agents", key.secret, body)
    assert denial(response) == (400, "JSON_TOO_DEEP")
    # At the limit (64 levels with the outer object) the body is parsed and judged field by field.
    at_limit = b'{"displayName": "A", "parameters": ' + b"[" * 63 + b"]" * 63 + b"}"
    assert denial(await check_json(authz, "POST", "/v1/agents", key.secret, at_limit)) == (400, "INVALID_REQUEST_BODY")


@pytest.mark.parametrize(
    "http_method, path, body, field",
    [
        ("POST", "/v1/apiKeys/key_1:revoke", b'{"name": "apiKeys/key_2"}', "name"),
        ("POST", "/v1/apiKeys/key_1:rotate", b'{"name": "apiKeys/key_2"}', "name"),
        ("DELETE", "/v1/agents/agt_1?name=agents/agt_2", b"", "name"),
        (
            "PATCH",
            "/v1/agents/agt_1?updateMask=displayName",
            b'{"name": "agents/agt_2", "displayName": "x"}',
            "agent.name",
        ),
        ("POST", "/v1/sessions/ses_1/messages", b'{"session": "sessions/ses_2", "content": "hi"}', "session"),
        ("POST", "/v1/sessions/ses_1/messages:stream", b'{"session": "sessions/ses_2", "content": "hi"}', "session"),
        ("PATCH", "/v1/rateLimits/x?rateLimit.name=rateLimits/y", b"{}", "rate_limit.name"),
    ],
)
async def test_a_field_the_path_binds_cannot_be_overridden(auth, authz, operator, http_method, path, body, field):
    _, key = await new_tenant(auth, operator)
    response = await check_json(authz, http_method, path, key.secret, body)
    assert denial(response) == (400, "FIELD_CONFLICTS_WITH_PATH")
    details = json.loads(response.denied_response.body)["details"]
    assert [v["field"] for v in next(d for d in details if d["@type"].endswith("BadRequest"))["fieldViolations"]] == [
        field
    ]


@pytest.mark.parametrize(
    "http_method, path, body",
    [
        ("POST", "/v1/apiKeys/key_1:revoke", b'{"name": "apiKeys/key_1"}'),
        ("POST", "/v1/apiKeys/key_1:revoke", b"{}"),
        ("PATCH", "/v1/agents/agt_1?updateMask=displayName", b'{"name": "agents/agt_1", "displayName": "x"}'),
        ("POST", "/v1/sessions/ses_1/messages", b'{"session": "sessions/ses_1", "content": "hi"}'),
        ("DELETE", "/v1/agents/agt_1", b""),
    ],
)
async def test_the_same_value_as_the_path_is_no_conflict(auth, authz, operator, http_method, path, body):
    _, key = await new_tenant(auth, operator)
    assert (await check_json(authz, http_method, path, key.secret, body)).HasField("ok_response")


@pytest.mark.parametrize(
    "content_type", ["application/grpc-web", "application/grpc-web+proto", "application/grpc-web-text"]
)
async def test_grpc_web_is_refused_as_json(auth, authz, operator, content_type):
    _, key = await new_tenant(auth, operator)
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "POST", LIST_AGENTS
    http.headers.update({"authorization": f"Bearer {key.secret}", "content-type": content_type})
    response = await authz.Check(request)
    assert denial(response) == (400, "UNSUPPORTED_CONTENT_TYPE")
    assert "grpc-status" not in {h.header.key for h in response.denied_response.headers}


async def test_grpc_over_http1_is_refused_the_grpc_way(auth, authz, operator):
    """gRPC's content type over HTTP/1.1 reaches no service (gRPC needs HTTP/2): refused before
    routing, as a gRPC status (Envoy answers any application/grpc request the gRPC way)."""
    _, key = await new_tenant(auth, operator)
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.protocol = "POST", LIST_AGENTS, "HTTP/1.1"
    http.headers.update({"authorization": f"Bearer {key.secret}", "content-type": "application/grpc"})
    assert denial(await authz.Check(request)) == (400, "UNSUPPORTED_CONTENT_TYPE")
    http.protocol = "HTTP/2"  # positive control: the same call over HTTP/2 is allowed
    assert (await authz.Check(request)).HasField("ok_response")


async def test_a_header_that_means_one_thing_once_is_refused_when_sent_twice(auth, authz, operator):
    """Envoy sends the headers raw (each occurrence apart): an Idempotency-Key sent twice is
    refused before anything runs; other headers may repeat."""
    _, key = await new_tenant(auth, operator)

    def raw(*pairs: tuple[str, str]) -> external_auth_pb2.CheckRequest:
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method, http.path, http.protocol = "GET", "/v1/agents", "HTTP/1.1"
        for name, value in (("authorization", f"Bearer {key.secret}"), *pairs):
            http.header_map.headers.add(key=name, raw_value=value.encode())
        return request

    refused = await authz.Check(raw(("idempotency-key", "a"), ("idempotency-key", "b")))
    assert denial(refused) == (400, "DUPLICATE_HEADER")
    assert (await authz.Check(raw(("idempotency-key", "a"), ("accept", "x"), ("accept", "y")))).HasField("ok_response")


async def test_a_key_revoked_through_this_process_is_refused_at_once(auth, authz, operator, as_tenant):
    """RevokeApiKey makes the process that ran it forget its cached lookup: the next Check
    refuses the key without waiting for the cache TTL (tests/unit/auth shows the cache itself)."""
    tenant_id, _ = await new_tenant(auth, operator)
    meta = as_tenant(tenant_id)
    key = await auth.CreateApiKey(
        auth_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(display_name="revoked")), metadata=meta
    )
    assert (await check(authz, LIST_AGENTS, key.secret)).HasField("ok_response")  # now cached
    await auth.RevokeApiKey(auth_service_pb2.RevokeApiKeyRequest(name=key.name), metadata=meta)
    assert denial(await check(authz, LIST_AGENTS, key.secret)) == (401, "API_KEY_REVOKED")


@pytest.mark.parametrize(
    "extra, refused",
    [
        ([("x-fill", "a" * 15 * 1024)], False),
        ([("x-fill", "a" * 16 * 1024)], True),
        ([(f"x-h{i}", "v") for i in range(97)], False),  # 99 headers with the two every request has
        ([(f"x-h{i}", "v") for i in range(100)], True),
    ],
)
async def test_headers_past_the_limits_are_431_for_json_and_grpc_alike(auth, authz, operator, extra, refused):
    _, key = await new_tenant(auth, operator)
    for content_type, protocol in (("application/json", "HTTP/1.1"), ("application/grpc", "HTTP/2")):
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method, http.path, http.protocol = "POST", LIST_AGENTS, protocol
        for name, value in [("authorization", f"Bearer {key.secret}"), ("content-type", content_type), *extra]:
            http.header_map.headers.add(key=name, raw_value=value.encode())
        if content_type == "application/json":
            http.path = "/v1/agents"
            http.method = "GET"
        response = await authz.Check(request)
        if refused:
            assert denial(response) == (431, "REQUEST_HEADERS_TOO_LARGE"), content_type
        else:
            assert response.HasField("ok_response"), content_type
