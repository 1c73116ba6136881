"""API key secrets, end to end on PostgreSQL with every process's output captured (DEBUG logs):
a stack run that creates, uses (right and wrong, over JSON and gRPC), rotates and revokes keys.
Afterwards no secret, and no digest of one, is in any log; no response after the one that
created a secret shows it again; the database holds digests only."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import grpc
import httpx
import psycopg
import pytest
from psycopg import sql

from tests.conftest import running_stack, temporary_database
from tests.e2e.conftest import PROVIDER_ENV, limits_env
from tests.e2e.summary import report
from vocalbridge.agents.v1 import agents_service_pb2, agents_service_pb2_grpc
from vocalbridge_devstack.stack import Stack, StackConfig

pytestmark = pytest.mark.postgres


def digests(secret: str) -> list[str]:
    """The forms a digest of `secret` could take in a log: SHA-256 hex (how keys are stored)."""
    return [hashlib.sha256(secret.encode()).hexdigest()]


class Run:
    """What the run saw: every secret issued, and every response body after issuance."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient) -> None:
        self.stack, self.http = stack, http
        self.secrets: dict[str, str] = {}  # label → secret
        self.later_responses: list[tuple[str, str]] = []  # (what, body) after the secrets were issued

    async def call(self, method: str, path: str, key: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        response = await self.http.request(method, path, headers=headers, **kwargs)
        self.later_responses.append((f"{method} {path}", response.text))
        return response


@pytest.fixture(scope="module")
async def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("secrets")
    env = {**PROVIDER_ENV, **limits_env(), "VB_LOG_LEVEL": "DEBUG", "VB_AUTH_KEY_CACHE_TTL_SECONDS": "0.2"}
    with temporary_database() as database_url:
        config = StackConfig.with_free_ports(
            data_dir=root / "var", database_url=database_url, log_dir=root / "logs", extra_env=env
        )
        # The stack stops (every process flushed and gone) before the logs are read.
        async with running_stack(config) as stack, httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
            run = Run(stack, http)
            await exercise(run)
        run.logs = {path.name: path.read_bytes() for path in sorted((root / "logs").glob("*.log"))}
        run.database_url = database_url
        run.rows = _all_rows(database_url)
        yield run


async def exercise(run: Run) -> None:
    operator = run.stack.operator_key
    created = await run.http.post(
        "/v1/tenants", json={"displayName": "Secretive"}, headers={"Authorization": f"Bearer {operator}"}
    )
    assert created.status_code == 200, created.text
    first = created.json()["apiKey"]["secret"]
    run.secrets["first"] = first
    for label, scopes in (("writer", ["SCOPE_WRITE"]), ("reader", ["SCOPE_READ"])):
        response = await run.http.post(
            "/v1/apiKeys",
            json={"displayName": label, "scopes": scopes},
            headers={"Authorization": f"Bearer {first}"},
        )
        assert response.status_code == 200, response.text
        run.secrets[label] = response.json()["secret"]
        run.secrets[f"{label}-name"] = response.json()["name"]
    writer, reader = run.secrets["writer"], run.secrets["reader"]

    # Used: JSON with either header, gRPC metadata, a turn (its log lines and idempotency record).
    agent = await run.call("POST", "/v1/agents", writer, json={"displayName": "A", "primaryProvider": "vendorA"})
    assert agent.status_code == 200, agent.text
    session = await run.call("POST", "/v1/sessions", writer, json={"agent": agent.json()["name"]})
    turn = await run.call(
        "POST",
        f"/v1/{session.json()['name']}/messages",
        writer,
        json={"content": "hello"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert turn.status_code == 200, turn.text
    by_header = await run.http.get("/v1/agents", headers={"x-api-key": reader})
    run.later_responses.append(("GET /v1/agents x-api-key", by_header.text))
    assert by_header.status_code == 200, by_header.text
    async with grpc.aio.insecure_channel(run.stack.grpc_target) as channel:
        stub = agents_service_pb2_grpc.AgentServiceStub(channel)
        listed = await stub.ListAgents(
            agents_service_pb2.ListAgentsRequest(), metadata=(("authorization", f"Bearer {reader}"),)
        )
        run.later_responses.append(("gRPC ListAgents", str(listed)))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListAgents(
                agents_service_pb2.ListAgentsRequest(), metadata=(("authorization", f"Bearer {reader}x"),)
            )
        run.later_responses.append(("gRPC refused", f"{refused.value.details()} {refused.value.trailing_metadata()}"))

    # Wrong: a read-only key writing, a forged secret with a real prefix, a mangled one.
    denied = await run.call("POST", "/v1/agents", reader, json={"displayName": "B", "primaryProvider": "vendorA"})
    assert denied.status_code == 403, denied.text
    forged = reader.rsplit("_", 1)[0] + "_" + "Z" * 43
    run.secrets["forged"] = forged
    assert (await run.call("GET", "/v1/agents", forged)).status_code == 401
    assert (await run.call("GET", "/v1/agents", reader[:-1])).status_code == 401

    # Read back: the keys, one by one and listed.
    for label in ("writer", "reader"):
        got = await run.call("GET", f"/v1/{run.secrets[f'{label}-name']}", first)
        assert got.status_code == 200, got.text
    assert (await run.call("GET", "/v1/apiKeys", first, params={"pageSize": 100})).status_code == 200
    assert (await run.call("GET", "/v1/me", writer)).status_code == 200

    # Rotated: the response carries the successor's secret, once; the old key works in the overlap.
    rotated = await run.http.post(
        f"/v1/{run.secrets['writer-name']}:rotate", json={}, headers={"Authorization": f"Bearer {first}"}
    )
    assert rotated.status_code == 200, rotated.text
    new_secrets = [v for v in _strings(rotated.json()) if v.count("_") >= 2 and v.startswith("vb_")]
    assert len(new_secrets) == 1, f"a rotation returns the new secret once: {rotated.text}"
    assert writer not in rotated.text, "the rotation response repeats the old secret"
    run.secrets["rotated"] = new_secrets[0]
    assert (await run.call("GET", "/v1/agents", new_secrets[0])).status_code == 200
    assert (await run.call("GET", "/v1/apiKeys", first, params={"pageSize": 100})).status_code == 200

    # Revoked: refused afterwards (once the short key cache has expired).
    revoked = await run.call("POST", f"/v1/{run.secrets['reader-name']}:revoke", first, json={})
    assert revoked.status_code == 200, revoked.text
    await asyncio.sleep(0.5)
    assert (await run.call("GET", "/v1/agents", reader)).status_code == 401
    run.secrets.pop("writer-name")
    run.secrets.pop("reader-name")


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _all_rows(database_url: str) -> dict[str, list[str]]:
    """Every row of every table of every service's schema, as text."""
    out: dict[str, list[str]] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
            out[f"{schema}.{table}"] = [row[0] for row in conn.execute(query).fetchall()]
    return out


def _issued(run) -> dict[str, str]:
    """The secrets the gateway issued (not the forged one)."""
    return {label: secret for label, secret in run.secrets.items() if label != "forged"}


def search(logs: dict[str, bytes], secrets: dict[str, str]) -> list[str]:
    """Where any secret, its private part (after the public prefix) or its digest appears."""
    found = []
    for label, secret in secrets.items():
        private = secret.rsplit("_", 1)[-1]
        for needle in (secret, private, *digests(secret)):
            for name, body in logs.items():
                if needle.encode() in body:
                    found.append(f"{label} ({'digest' if needle in digests(secret) else 'secret'}) in {name}")
    return found


def test_no_secret_or_digest_in_any_log(run):
    assert {"auth.log", "envoy.log", "conversation.log"} <= set(run.logs), sorted(run.logs)
    assert sum(len(body) for body in run.logs.values()) > 10_000, "too little was logged to prove anything"
    # Positive control: the run's requests are in the logs (by their key ids, which may be logged).
    assert any(b"key_" in body for body in run.logs.values())
    secrets = {**run.secrets, "operator": run.stack.operator_key, "identity": run.stack.identity_secret}
    found = search(run.logs, secrets)
    report(
        f"secrets: {len(secrets)} secrets and their digests searched in {len(run.logs)} process logs "
        f"({sum(len(b) for b in run.logs.values())} bytes): {len(found)} found"
    )
    assert not found, found


def test_no_response_after_creation_shows_a_secret(run):
    assert len(run.later_responses) >= 15
    shown = [
        f"{label} in {what}"
        for what, body in run.later_responses
        for label, secret in _issued(run).items()
        if secret in body or secret.rsplit("_", 1)[-1] in body or digests(secret)[0] in body
    ]
    assert not shown, shown


def test_the_database_holds_digests_not_secrets(run):
    issued = _issued(run)
    everything = "\n".join(row for rows in run.rows.values() for row in rows)
    assert len(everything) > 1000
    stored_secrets = [label for label, secret in issued.items() if secret.rsplit("_", 1)[-1] in everything]
    assert not stored_secrets, f"secrets stored in the database: {stored_secrets}"
    key_rows = "\n".join(rows for name, rows_list in run.rows.items() if name.startswith("auth.") for rows in rows_list)
    missing = [label for label, secret in issued.items() if digests(secret)[0] not in key_rows]
    assert not missing, f"no stored digest for {missing}"
    # The forged secret was never issued, so nothing of it may be stored either.
    assert digests(run.secrets["forged"])[0] not in everything


def test_the_search_finds_a_planted_secret_or_digest():
    """Positive control for the log search: what it looks for, it finds."""
    secret = "vb_0a0b0c0d_" + "Q" * 43
    clean = {"auth.log": b'{"msg": "checked", "key": "key_01"}'}
    assert search(clean, {"k": secret}) == []
    assert search({"a.log": f"presented {secret}".encode()}, {"k": secret})
    assert search({"a.log": b"private part " + b"Q" * 43}, {"k": secret})
    assert search({"a.log": f'"digest": "{digests(secret)[0]}"'.encode()}, {"k": secret}) == ["k (digest) in a.log"]
