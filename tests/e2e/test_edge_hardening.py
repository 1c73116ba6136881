"""The edge under hostile input, through the real Envoy: header limits, deep JSON, fields the path
binds, Check reachable only by Envoy, the access log's tenant, an absent service; every refusal
a google.rpc.Status in JSON, before any side effect."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.e2e.client import error_reason, violated_fields
from vocalbridge.agents.v1 import agents_service_pb2, agents_service_pb2_grpc
from vocalbridge_auth.config import DEFAULT_IDENTITY_TTL_SECONDS
from vocalbridge_common.headers import (
    EDGE_SECRET_HEADER,
    IDENTITY_HEADER,
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_HEADER_COUNT,
)
from vocalbridge_common.identity import IdentitySigner, InvalidIdentity
from vocalbridge_common.json_limits import MAX_JSON_DEPTH
from vocalbridge_devstack.stack import REPO_ROOT, envoy_binary, free_port
from vocalbridge_edge import EnvoyParams, Upstream, envoy_command, local_params, render_envoy_config

AGENT = {"displayName": "Edge", "primaryProvider": "vendorA"}
# Names no client-facing error may carry: the services' internal headers.
INTERNAL_HEADERS = (IDENTITY_HEADER, EDGE_SECRET_HEADER, "x-envoy-", "grpc-timeout")
LIMIT_KB = MAX_REQUEST_HEADER_BYTES // 1024


def assert_json_status(response: httpx.Response, http_status: int, reason: str) -> dict:
    """A google.rpc.Status in JSON with this HTTP status and ErrorInfo reason, naming no internal header."""
    assert response.status_code == http_status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body["code"], int) and body["code"] != 0 and body["message"], body
    assert error_reason(response) == reason, body
    for name in INTERNAL_HEADERS:
        assert name not in response.text, (name, response.text)
    return body


async def agents(tenant) -> httpx.Response:
    return await tenant.get("/v1/agents", params={"pageSize": 100})


# -- 1. header limits: within them always served, above them always 431 with a JSON Status ------


@pytest.mark.parametrize("kb", [1, 8, 12, LIMIT_KB - 1])
async def test_headers_within_the_limit_are_always_served(new_tenant, http, kb):
    """8-16 KB of headers used to meet a service's gRPC metadata limit at random (429 naming
    internal headers). Within the edge's limit they are now served every time."""
    tenant = await new_tenant()
    padding = "a" * (kb * 1024 - 600)
    for _ in range(8):
        response = await http.get("/v1/agents", headers=tenant.headers(**{"x-padding": padding}))
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "extra",
    [
        {"x-padding": "a" * (LIMIT_KB * 1024 + 100)},  # one big header
        {f"x-h{i}": "a" * 1000 for i in range(LIMIT_KB + 2)},  # many medium ones
        {f"x-h{i}": "v" for i in range(MAX_REQUEST_HEADER_COUNT + 5)},  # too many
        {"x-padding": "a" * (EnvoyParams.max_request_headers_kb * 1024 + 100)},  # past Envoy's codec too
        {f"x-h{i}": "v" for i in range(EnvoyParams.max_request_headers + 5)},  # ditto
    ],
    ids=["one-big", "many-medium", "too-many", "codec-big", "codec-many"],
)
async def test_headers_over_the_limit_are_431_with_a_json_status(new_tenant, http, extra):
    tenant = await new_tenant()
    for _ in range(3):  # deterministic: the same answer every time
        async with httpx.AsyncClient(base_url=str(http.base_url), timeout=15) as fresh:
            response = await fresh.get("/v1/agents", headers=tenant.headers(**extra))
        body = assert_json_status(response, 431, "REQUEST_HEADERS_TOO_LARGE")
        assert violated_fields(response) == {"headers"}
        assert body["code"] == 8


async def test_grpc_metadata_over_the_limit_is_a_grpc_status_with_its_reason(stack, new_tenant):
    """Over HTTP/2 Envoy's codec can only reset a stream (the client saw INTERNAL); Check's own
    limit, below the codec's, answers a gRPC client with a status and its reason."""
    tenant = await new_tenant()
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = agents_service_pb2_grpc.AgentServiceStub(channel)
        auth = ("authorization", f"Bearer {tenant.key}")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListAgents(agents_service_pb2.ListAgentsRequest(), metadata=(auth, ("x-fill", "m" * 20 * 1024)))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(caught.value)
        info = error_details_pb2.ErrorInfo()
        assert status is not None and status.details[0].Unpack(info)
        assert info.reason == "REQUEST_HEADERS_TOO_LARGE"
        for name in INTERNAL_HEADERS:
            assert name not in caught.value.details()
        # Positive control: 12 KiB of metadata is served.
        await stub.ListAgents(agents_service_pb2.ListAgentsRequest(), metadata=(auth, ("x-fill", "m" * 12 * 1024)))


# -- 2. JSON nested deep: 400, not 503 ----------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5000])
async def test_deeply_nested_json_is_400_and_writes_nothing(new_tenant, http, depth):
    tenant = await new_tenant()
    raw = b'{"displayName": "Deep", "primaryProvider": "vendorA", "parameters": ' + b"[" * depth + b"]" * depth + b"}"
    response = await http.post(
        "/v1/agents", content=raw, headers=tenant.headers(**{"content-type": "application/json"})
    )
    body = assert_json_status(response, 400, "JSON_TOO_DEEP")
    assert body["code"] == 3 and violated_fields(response) == {"body"}
    assert (await agents(tenant)).json().get("agents", []) == []
    # Positive control: the same agent without the nesting is created.
    assert (await tenant.post("/v1/agents", AGENT)).status_code == 200


# -- 3. what the path binds, no body or query field may change ----------------------------------


async def test_a_body_cannot_revoke_another_key_than_the_path_names(new_tenant):
    tenant = await new_tenant()
    k1 = (await tenant.post("/v1/apiKeys", {"displayName": "k1"})).json()
    k2 = (await tenant.post("/v1/apiKeys", {"displayName": "k2"})).json()
    response = await tenant.post(f"/v1/{k1['name']}:revoke", {"name": k2["name"]})
    assert_json_status(response, 400, "FIELD_CONFLICTS_WITH_PATH")
    assert violated_fields(response) == {"name"}
    for key in (k1, k2):  # nothing revoked, neither the body's key nor the path's
        assert "revokeTime" not in (await tenant.get(f"/v1/{key['name']}")).json()
    # Positive control: the path's own name in the body is no conflict, and the path's key is revoked.
    revoked = await tenant.post(f"/v1/{k1['name']}:revoke", {"name": k1["name"]})
    assert revoked.status_code == 200 and revoked.json()["name"] == k1["name"] and revoked.json()["revokeTime"]
    assert "revokeTime" not in (await tenant.get(f"/v1/{k2['name']}")).json()


async def test_a_query_cannot_delete_another_agent_than_the_path_names(new_tenant):
    tenant = await new_tenant()
    a1 = (await tenant.post("/v1/agents", {**AGENT, "displayName": "a1"})).json()
    a2 = (await tenant.post("/v1/agents", {**AGENT, "displayName": "a2"})).json()
    response = await tenant.delete(f"/v1/{a1['name']}", params={"name": a2["name"]})
    assert_json_status(response, 400, "FIELD_CONFLICTS_WITH_PATH")
    assert {a["name"] for a in (await agents(tenant)).json()["agents"]} == {a1["name"], a2["name"]}
    assert (await tenant.delete(f"/v1/{a1['name']}")).status_code == 200  # positive control
    assert [a["name"] for a in (await agents(tenant)).json()["agents"]] == [a2["name"]]


async def test_a_patch_body_cannot_update_another_agent(new_tenant):
    tenant = await new_tenant()
    a1 = (await tenant.post("/v1/agents", {**AGENT, "displayName": "a1"})).json()
    a2 = (await tenant.post("/v1/agents", {**AGENT, "displayName": "a2"})).json()
    response = await tenant.patch(
        f"/v1/{a1['name']}", {"name": a2["name"], "displayName": "hijacked"}, params={"updateMask": "displayName"}
    )
    assert_json_status(response, 400, "FIELD_CONFLICTS_WITH_PATH")
    assert violated_fields(response) == {"agent.name"}
    names = {a["name"]: a["displayName"] for a in (await agents(tenant)).json()["agents"]}
    assert names == {a1["name"]: "a1", a2["name"]: "a2"}
    same = await tenant.patch(
        f"/v1/{a1['name']}", {"name": a1["name"], "displayName": "renamed"}, params={"updateMask": "displayName"}
    )
    assert same.status_code == 200 and same.json()["displayName"] == "renamed"


async def test_a_message_body_cannot_post_into_another_session(new_tenant, http):
    tenant = await new_tenant()
    agent = (await tenant.post("/v1/agents", AGENT)).json()
    s1 = (await tenant.post("/v1/sessions", {"agent": agent["name"]})).json()
    s2 = (await tenant.post("/v1/sessions", {"agent": agent["name"]})).json()
    for suffix in ("messages", "messages:stream"):
        response = await http.post(
            f"/v1/{s1['name']}/{suffix}",
            json={"session": s2["name"], "content": "hello"},
            headers=tenant.headers(**{"Idempotency-Key": f"conflict-{suffix}-{time.time_ns()}"}),
        )
        assert_json_status(response, 400, "FIELD_CONFLICTS_WITH_PATH")
    for session in (s1, s2):
        assert (await tenant.get(f"/v1/{session['name']}/messages")).json().get("messages", []) == []


async def test_an_idempotency_key_sent_twice_is_refused_before_any_turn(new_tenant, http):
    """Two Idempotency-Key headers used to reach the service as two metadata values, one taken:
    a turn ran (and was billed) under a key the client may not have meant."""
    tenant = await new_tenant()
    agent = (await tenant.post("/v1/agents", AGENT)).json()
    session = (await tenant.post("/v1/sessions", {"agent": agent["name"]})).json()
    headers = [("Authorization", f"Bearer {tenant.key}"), ("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-2")]
    response = await http.post(f"/v1/{session['name']}/messages", json={"content": "hello"}, headers=headers)
    assert_json_status(response, 400, "DUPLICATE_HEADER")
    assert violated_fields(response) == {"idempotency-key"}
    assert (await tenant.get(f"/v1/{session['name']}/messages")).json().get("messages", []) == []
    once = await http.post(f"/v1/{session['name']}/messages", json={"content": "hello"}, headers=headers[:2])
    assert once.status_code == 200, once.text  # positive control


# -- 4. Check answers Envoy only; the identities it mints are short-lived ---------------------


def _check_request(key: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "POST", "/vocalbridge.agents.v1.AgentService/ListAgents"
    http.headers.update({"authorization": f"Bearer {key}", "content-type": "application/grpc"})
    return request


async def test_check_on_the_bare_auth_port_mints_nothing(stack, new_tenant):
    tenant = await new_tenant()
    async with grpc.aio.insecure_channel(stack.service_target("auth")) as channel:
        check = external_auth_pb2_grpc.AuthorizationStub(channel).Check
        for metadata in ((), ((EDGE_SECRET_HEADER, "a guess of at least thirty-two characters"),)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await check(_check_request(tenant.key), metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert IDENTITY_HEADER not in str(caught.value.details())
        # Positive control: with the edge's secret (what Envoy sends), the same key is allowed,
        # and the identity it gets lives seconds, not minutes.
        allowed = await check(_check_request(tenant.key), metadata=((EDGE_SECRET_HEADER, stack.edge_secret),))
    assert allowed.HasField("ok_response")
    token = next(h.header.value for h in allowed.ok_response.headers if h.header.key == IDENTITY_HEADER)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert 0 < claims["exp"] - claims["iat"] == DEFAULT_IDENTITY_TTL_SECONDS <= 30
    assert claims["exp"] <= time.time() + DEFAULT_IDENTITY_TTL_SECONDS + 1
    # That identity works on a service port now; every service refuses it from its expiry on.
    async with grpc.aio.insecure_channel(stack.service_target("agents")) as channel:
        stub = agents_service_pb2_grpc.AgentServiceStub(channel)
        await stub.ListAgents(agents_service_pb2.ListAgentsRequest(), metadata=((IDENTITY_HEADER, token),))
    signer = IdentitySigner(stack.identity_secret.encode())
    assert signer.verify(token, now=claims["exp"] - 1).tenant_id == tenant.name.removeprefix("tenants/")
    with pytest.raises(InvalidIdentity):
        signer.verify(token, now=claims["exp"])


# -- 5. the access log names the tenant ---------------------------------------------------------


async def test_the_access_log_names_the_tenant_and_key(stack, new_tenant, http):
    tenant = await new_tenant()
    # Found by its user agent (logged as sent; Envoy may rewrite a client's request id).
    agent_name = f"edge-log-{time.time_ns()}"
    response = await http.get("/v1/agents", headers=tenant.headers(**{"user-agent": agent_name}))
    assert response.status_code == 200
    me = (await tenant.get("/v1/me")).json()
    log = stack.config.log_dir / "envoy.log"
    line = await _access_log_line(log, agent_name)
    assert line["tenant"] == tenant.name.removeprefix("tenants/")
    assert line["key"] == me["apiKey"].removeprefix("apiKeys/")
    # A known key refused (here: a read-only key writing) is logged as that key's too.
    reader = await tenant.create_key(["SCOPE_READ"])
    refused_name = f"edge-log-refused-{time.time_ns()}"
    refused = await http.post("/v1/agents", json=AGENT, headers=tenant.headers(reader, **{"user-agent": refused_name}))
    assert refused.status_code == 403
    line = await _access_log_line(log, refused_name)
    assert line["status"] == 403 and line["tenant"] == tenant.name.removeprefix("tenants/")
    assert line["key"].startswith("key_") and line["key"] != me["apiKey"].removeprefix("apiKeys/")


async def _access_log_line(log, user_agent: str) -> dict:
    deadline = time.monotonic() + 10  # Envoy flushes its access log every second
    while time.monotonic() < deadline:
        for text in log.read_text().splitlines():
            if f'"user_agent":"{user_agent}"' in text:
                return json.loads(text)
        await asyncio.sleep(0.3)
    raise AssertionError(f"no access log line of {user_agent}")


# -- 6. an API key needs a name -------------------------------------------------------------------


@pytest.mark.parametrize("body", [{}, {"displayName": ""}, {"displayName": "   "}, {"displayName": "\t"}])
async def test_a_key_with_a_blank_name_is_refused(new_tenant, body):
    tenant = await new_tenant()
    response = await tenant.post("/v1/apiKeys", {**body, "scopes": ["SCOPE_READ"]})
    assert_json_status(response, 400, "INVALID_ARGUMENT")
    assert violated_fields(response) == {"api_key.display_name"}
    assert len((await tenant.get("/v1/apiKeys")).json()["apiKeys"]) == 1  # only the tenant's first key
    assert (await tenant.post("/v1/apiKeys", {"displayName": "named"})).status_code == 200  # positive control


# -- 7. a service that is not there: 503 with a JSON Status naming it --------------------------


@pytest.fixture(scope="module")
async def edge_without_voice(stack, tmp_path_factory):
    """A second Envoy in front of the same services, with no voice service behind it (as in a
    deployment without one): its voice upstream is a port nothing listens on."""
    root = tmp_path_factory.mktemp("edge-without-voice")
    port = free_port()
    upstreams = {name: Upstream("127.0.0.1", p) for name, p in stack.config.service_ports.items()}
    upstreams["voice"] = Upstream("127.0.0.1", free_port())
    params = local_params(
        listen_port=port,
        admin_port=free_port(),
        descriptor_set=str(REPO_ROOT / "gen" / "vocalbridge.pb"),
        upstreams=upstreams,
    )
    config = root / "envoy.json"
    config.write_text(render_envoy_config(params))
    process = await asyncio.create_subprocess_exec(
        *envoy_command(config, envoy=envoy_binary()),
        env=stack.service_env(),
        stdout=(root / "envoy.log").open("w"),
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (root / "envoy.log").read_text()
                await asyncio.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


async def test_voice_routes_without_a_voice_service_are_503_with_a_json_status(new_tenant, edge_without_voice):
    tenant = await new_tenant()
    async with httpx.AsyncClient(base_url=edge_without_voice, timeout=15) as client:
        response = await client.post("/v1/voice:synthesize", json={"text": "hello"}, headers=tenant.headers())
        body = assert_json_status(response, 503, "SERVICE_UNAVAILABLE")
        assert body["code"] == 14
        info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))
        assert info["metadata"] == {"service": "voice"}
        assert "voice" in body["message"]
        # Positive control: the same edge serves the services that are there.
        assert (await client.get("/v1/agents", headers=tenant.headers())).status_code == 200


# -- every refusal of Envoy's own a JSON Status -------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["application/grpc-web", "application/grpc-web+proto", "application/grpc-web-text"]
)
async def test_grpc_web_and_look_alikes_get_a_json_status(new_tenant, http, content_type):
    tenant = await new_tenant()
    response = await http.post(
        "/vocalbridge.agents.v1.AgentService/ListAgents",
        content=b"\x00\x00\x00\x00\x00",
        headers=tenant.headers(**{"content-type": content_type}),
    )
    assert_json_status(response, 400, "UNSUPPORTED_CONTENT_TYPE")


async def test_grpc_over_http1_is_a_grpc_invalid_argument_not_an_upstream_failure(new_tenant, http):
    """gRPC's content type over HTTP/1.1 used to reach the service and fail there (grpc-status 14,
    "upstream connect error"); it is refused at the edge the gRPC way, with its reason."""
    tenant = await new_tenant()
    response = await http.post(
        "/vocalbridge.agents.v1.AgentService/ListAgents",
        content=b"",
        headers=tenant.headers(**{"content-type": "application/grpc"}),
    )
    assert response.headers["grpc-status"] == "3", response.headers
    raw = response.headers["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "UNSUPPORTED_CONTENT_TYPE"


async def test_envoys_own_refusals_are_json(stack, new_tenant, http):
    tenant = await new_tenant()
    assert_json_status(await tenant.get("/v1/nothing-here"), 404, "METHOD_NOT_FOUND")
    assert_json_status(await http.put("/v1/agents", headers=tenant.headers()), 404, "METHOD_NOT_FOUND")
    # What the HTTP codec refuses before any filter runs: HTTP/1.0, a malformed header.
    for raw, status, reason in (
        (b"GET /v1/agents HTTP/1.0\r\n\r\n", 426, "REQUEST_REFUSED"),
        (b"GET /v1/agents HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n", 400, "MALFORMED_REQUEST"),
    ):
        head, body = _raw_exchange(stack.config.http_port, raw)
        assert head.startswith(f"HTTP/1.1 {status}"), head
        assert "content-type: application/json" in head.lower(), head
        status_body = json.loads(body)
        assert status_body["code"] == 3 and status_body["message"]
        assert next(d for d in status_body["details"] if d["@type"].endswith("ErrorInfo"))["reason"] == reason


def _raw_exchange(port: int, raw: bytes) -> tuple[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return head, body
