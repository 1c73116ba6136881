"""Tenant isolation, for every RPC of the compiled contract (gen/vocalbridge.pb), through Envoy
over gRPC and over each JSON route: another tenant's things do not exist (NOT_FOUND, or a list
without them) and nothing of theirs changes; operator-only RPCs refuse tenant keys; internal
RPCs refuse every API key; read-only keys cannot write; and PostgreSQL's row-level security
hides every tenant-owned row from a query that leaves out the tenant filter.

The RPCs are enumerated from the descriptor set, and each must be classified in MATRIX with a
factory that builds its request against tenant A's resources: an RPC added to the contract
without an entry fails `test_every_rpc_is_classified` and its own cases here."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.conftest import forget_redis_prefix
from tests.e2e.client import KEY_CACHE_TTL_SECONDS, error_reason
from tests.e2e.conftest import PROVIDER_ENV, limits_env
from tests.e2e.rpc_matrix import (
    CASES,
    KIND_SCOPE,
    MATRIX,
    METHODS,
    TENANT_KINDS,
    WRITES,
    Entry,
    Expect,
    Kind,
    World,
    build_world,
    call,
    entry_for,
)
from tests.e2e.summary import report
from vocalbridge_common import scopes
from vocalbridge_common.db import APP_ROLE
from vocalbridge_devstack.stack import Stack, StackConfig

pytestmark = pytest.mark.postgres


# --------------------------------------------------------------------------- A's state


def _tenant_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Every table of the services' schemas with a tenant_id column."""
    return conn.execute(
        "SELECT table_schema, table_name FROM information_schema.columns WHERE column_name = 'tenant_id'"
        " AND table_schema NOT IN ('pg_catalog', 'information_schema', 'public') ORDER BY 1, 2"
    ).fetchall()


# Columns that a tenant's own use changes (when a key was last used), not another tenant's calls.
VOLATILE_COLUMNS = {"last_use_time", "last_used_time", "last_used_at"}


_STATE_QUERIES: dict[str, sql.Composable] = {}


def _state_query(conn: psycopg.Connection) -> sql.Composable:
    """One statement: per tenant table, the count and a digest of the tenant's rows."""
    parts = []
    for schema, table in _tenant_tables(conn):
        columns = [
            sql.Identifier(row[0])
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
                " ORDER BY ordinal_position",
                (schema, table),
            ).fetchall()
            if row[0] not in VOLATILE_COLUMNS
        ]
        row = sql.SQL("row({})::text").format(sql.SQL(", ").join(columns))
        parts.append(
            sql.SQL(
                "SELECT {label}, count(*), md5(coalesce(string_agg({row}, '|' ORDER BY {row}), ''))"
                " FROM {schema}.{table} WHERE tenant_id = %(tenant)s"
            ).format(
                label=sql.Literal(f"{schema}.{table}"),
                row=row,
                schema=sql.Identifier(schema),
                table=sql.Identifier(table),
            )
        )
    for (schema,) in conn.execute(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'tenants'"
    ).fetchall():
        parts.append(
            sql.SQL(
                "SELECT {label}, count(*), md5(coalesce(string_agg(t::text, '|'), '')) FROM {schema}.tenants t"
                " WHERE id = %(tenant)s"
            ).format(label=sql.Literal(f"{schema}.tenants"), schema=sql.Identifier(schema))
        )
    return sql.SQL(" UNION ALL ").join(parts)


def state_of(stack: Stack, tenant_id: str) -> dict[str, str]:
    """A digest of every row of the tenant's, table by table (read as the owner, past RLS), on
    PostgreSQL or in the SQLite files of the stack."""
    if stack.config.database_url:
        database_url = stack.config.database_url
        with psycopg.connect(database_url, autocommit=True) as conn:
            if database_url not in _STATE_QUERIES:
                _STATE_QUERIES[database_url] = _state_query(conn)
            rows = conn.execute(_STATE_QUERIES[database_url], {"tenant": tenant_id}).fetchall()
        return {label: f"{count}:{digest}" for label, count, digest in rows}
    out = {}
    for path in sorted(stack.config.data_dir.glob("*.db")):
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")').fetchall()]
                if "tenant_id" in columns:
                    where = "tenant_id = ?"
                elif table == "tenants" and "id" in columns:
                    where = "id = ?"
                else:
                    continue
                kept = ", ".join(f'"{c}"' for c in columns if c not in VOLATILE_COLUMNS)
                found = sorted(
                    repr(r) for r in conn.execute(f'SELECT {kept} FROM "{table}" WHERE {where}', (tenant_id,))
                )
                out[f"{path.stem}.{table}"] = f"{len(found)}:{hashlib.sha256(repr(found).encode()).hexdigest()[:16]}"
    return out


@dataclass
class Backend:
    """The stack a case runs on, and tenant A's world in it."""

    name: str
    stack: Stack
    http: httpx.AsyncClient
    w: World


async def settled(stack: Stack, tenant_id: str, quiet: float = 0.6, limit: float = 15.0) -> None:
    """Waits until the tenant's rows have not changed for `quiet` seconds (the outbox relay
    bills a turn after it is answered), so later before/after comparisons see only themselves."""
    loop = asyncio.get_running_loop()
    deadline, last, since = loop.time() + limit, state_of(stack, tenant_id), loop.time()
    while loop.time() - since < quiet:
        assert loop.time() < deadline, "tenant A's rows kept changing"
        await asyncio.sleep(0.1)
        now = state_of(stack, tenant_id)
        if now != last:
            last, since = now, loop.time()


def _checked(backend: Backend) -> Backend:
    """The state compared before and after each call must hold A's rows, or "unchanged" is empty."""
    state = state_of(backend.stack, backend.w.tenant_id)
    holding = [table for table, digest in state.items() if not digest.startswith("0:")]
    assert len(holding) >= 5, f"{backend.name}: tenant A's rows found in too few tables: {state}"
    return backend


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
async def iso(request, stack, http, tmp_path_factory):
    """PostgreSQL (the session's stack), where row-level security backs the code's tenant filters,
    and SQLite, where nothing does: a filter missing in the code shows there."""
    if request.param == "postgres":
        yield _checked(Backend("postgres", stack, http, await build_world(http, stack.operator_key)))
        return
    root = tmp_path_factory.mktemp("isolation-sqlite")
    env = {"VB_AUTH_KEY_CACHE_TTL_SECONDS": str(KEY_CACHE_TTL_SECONDS), **PROVIDER_ENV, **limits_env()}
    config = StackConfig.with_free_ports(data_dir=root / "var", log_dir=root / "logs", extra_env=env)
    own = Stack(config)
    try:
        await own.start()
        async with httpx.AsyncClient(base_url=own.base_url, timeout=30) as client:
            yield _checked(Backend("sqlite", own, client, await build_world(client, own.operator_key)))
    finally:
        await own.stop()
        forget_redis_prefix(env["VB_REDIS_KEY_PREFIX"])


STATS = {"calls": 0, "cross_tenant_reads": 0, "a_changed": 0, "write_by_reader": 0}


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    report(
        "isolation matrix (PostgreSQL and SQLite): {calls} calls by other tenants, read-only keys and the operator; "
        "cross-tenant reads {cross_tenant_reads}, tenant A changed {a_changed}, "
        "writes by read-only keys {write_by_reader}".format(**STATS)
    )


def leaked(world: World, text: str, request: dict[str, Any]) -> list[str]:
    """A's ids and marker in what the caller got back, other than those it sent itself."""
    sent = json.dumps(request)
    return [found for found in world.a_ids() if found in text and found not in sent]


# --------------------------------------------------------------------------- tests


def test_every_rpc_is_classified():
    names = {m.full_name for m in METHODS}
    unclassified = sorted(names - MATRIX.keys())
    stale = sorted(MATRIX.keys() - names)
    assert not unclassified, f"RPCs without an isolation matrix entry: {unclassified}"
    assert not stale, f"matrix entries for RPCs that no longer exist: {stale}"


@pytest.mark.parametrize("method", [pytest.param(m, id=m.name) for m in METHODS])
def test_the_matrix_agrees_with_the_scope_policy(method):
    entry = entry_for(method)
    path = method.grpc_path
    assert scopes.required_scope(path) == KIND_SCOPE[entry.kind], (
        f"{method.full_name}: the matrix says {entry.kind.value}, scopes.py requires {scopes.required_scope(path)!r}"
    )


@pytest.mark.parametrize("method, transport", CASES)
async def test_another_tenant_sees_and_changes_nothing(iso, method, transport):
    stack, http, w = iso.stack, iso.http, iso.w
    entry = entry_for(method)
    request = entry.request(w)
    before = state_of(stack, w.tenant_id)
    outcome = await call(stack, http, method, transport, w, request, w.b_admin, entry)
    STATS["calls"] += 1
    after = state_of(stack, w.tenant_id)
    if before != after:
        STATS["a_changed"] += 1
    leaks = leaked(w, outcome.text, request) if outcome.ok else []
    if leaks:
        STATS["cross_tenant_reads"] += 1
    assert before == after, f"tenant B changed tenant A's rows: {[k for k in before if before[k] != after.get(k)]}"
    assert not leaks, f"tenant B read tenant A's {leaks}: {outcome.status}"
    if entry.expect is Expect.NOT_FOUND:
        assert outcome.not_found, f"expected NOT_FOUND for another tenant's resource, got {outcome.status}"
    elif entry.expect in (Expect.NOTHING_OF_A, Expect.NO_EFFECT):
        assert outcome.ok or outcome.not_found, outcome.status
    elif entry.expect is Expect.OWN:
        assert outcome.ok, f"the caller's own request should succeed (is the factory right?): {outcome.status}"
    else:
        assert outcome.denied or outcome.not_found, f"a tenant key reached {entry.kind.value}: {outcome.status}"


@pytest.mark.parametrize(
    "method, transport",
    [c for c in CASES if MATRIX.get(c.values[0].full_name, Entry(Kind.READ, Expect.OWN, dict)).shows_a],
)
async def test_the_owner_sees_what_the_intruder_did_not(iso, method, transport):
    """Positive control: the same request with A's own key shows A's things, so B's empty
    answers above mean isolation, not a request that asks for nothing."""
    stack, http, w = iso.stack, iso.http, iso.w
    entry = entry_for(method)
    outcome = await call(stack, http, method, transport, w, entry.request(w), w.a_admin, entry)
    assert outcome.ok, outcome.status
    assert leaked(w, outcome.text, {}), f"A's own read shows nothing of A's: {outcome.status}"


WRITE_CASES = [c for c in CASES if c.values[0].full_name in MATRIX and MATRIX[c.values[0].full_name].kind in WRITES]


@pytest.mark.parametrize("method, transport", WRITE_CASES)
async def test_read_only_keys_cannot_write(iso, method, transport):
    stack, http, w = iso.stack, iso.http, iso.w
    entry = entry_for(method)
    before = state_of(stack, w.tenant_id)
    outcome = await call(stack, http, method, transport, w, entry.request(w), w.a_read, entry)
    STATS["calls"] += 1
    after = state_of(stack, w.tenant_id)
    if before != after or outcome.ok:
        STATS["write_by_reader"] += 1
    assert outcome.denied, f"a read-only key was not refused: {outcome.status}"
    assert "SCOPE_INSUFFICIENT" in outcome.status or transport != "grpc", outcome.status
    assert before == after, "a refused read-only call changed the tenant's rows"


ADMIN_CASES = [
    c
    for c in CASES
    if c.values[0].full_name in MATRIX and MATRIX[c.values[0].full_name].kind in (Kind.ADMIN_READ, Kind.ADMIN_WRITE)
]


@pytest.mark.parametrize("method, transport", ADMIN_CASES)
async def test_write_keys_cannot_administer(iso, method, transport):
    stack, http, w = iso.stack, iso.http, iso.w
    entry = entry_for(method)
    before = state_of(stack, w.tenant_id)
    outcome = await call(stack, http, method, transport, w, entry.request(w), w.a_write, entry)
    STATS["calls"] += 1
    assert outcome.denied, f"a write key reached an admin RPC: {outcome.status}"
    assert before == state_of(stack, w.tenant_id)


REFUSED_CASES = [
    c
    for c in CASES
    if c.values[0].full_name in MATRIX and MATRIX[c.values[0].full_name].kind in (Kind.OPERATOR, Kind.INTERNAL)
]


@pytest.mark.parametrize("method, transport", REFUSED_CASES)
async def test_operator_and_internal_rpcs_refuse_the_tenants_own_admin_key(iso, method, transport):
    stack, http, w = iso.stack, iso.http, iso.w
    entry = entry_for(method)
    before = state_of(stack, w.tenant_id)
    outcome = await call(stack, http, method, transport, w, entry.request(w), w.a_admin, entry)
    STATS["calls"] += 1
    assert not outcome.ok and (outcome.denied or outcome.not_found), outcome.status
    assert before == state_of(stack, w.tenant_id)


async def test_the_operator_key_reaches_operator_rpcs(iso):
    """Positive control for the refusals above: the operator's key lists tenants."""
    stack, http, w = iso.stack, iso.http, iso.w
    method = next(m for m in METHODS if m.full_name.endswith("AuthService.ListTenants"))
    outcome = await call(stack, http, method, "grpc", w, {"pageSize": 1000}, w.operator, MATRIX[method.full_name])
    assert outcome.ok and w.tenant_id in outcome.text, outcome.status


TENANT_CASES = [
    c for c in CASES if c.values[0].full_name in MATRIX and MATRIX[c.values[0].full_name].kind in TENANT_KINDS
]


@pytest.mark.parametrize("method, transport", TENANT_CASES)
async def test_the_operator_key_reads_and_changes_no_tenant_data(iso, method, transport):
    stack, http, w = iso.stack, iso.http, iso.w
    entry = entry_for(method)
    before = state_of(stack, w.tenant_id)
    outcome = await call(stack, http, method, transport, w, entry.request(w), w.operator, entry)
    STATS["calls"] += 1
    leaks = leaked(w, outcome.text, entry.request(w)) if outcome.ok else []
    if leaks:
        STATS["cross_tenant_reads"] += 1
    assert not leaks, f"the operator key read tenant data: {outcome.status}"
    assert not outcome.ok, f"the operator key used a tenant RPC: {outcome.status}"
    assert before == state_of(stack, w.tenant_id)


# --------------------------------------------------------------------------- row-level security


async def test_row_level_security_hides_every_tenant_row_from_a_query_without_the_tenant(stack, http):
    """As the services' role, every table with a tenant_id: RLS enabled and forced; with no
    tenant set a bare `SELECT` sees nothing; set to tenant B it sees none of A's rows; set to
    A, A's rows (for the tables where A has any: the positive control)."""
    w = await build_world(http, stack.operator_key)
    url = stack.config.database_url
    with psycopg.connect(url, autocommit=True) as owner:
        tables = _tenant_tables(owner)
        flags = {
            (schema, table): owner.execute(
                "SELECT c.relrowsecurity, c.relforcerowsecurity FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                (schema, table),
            ).fetchone()
            for schema, table in tables
        }
        a_rows = {
            (schema, table): owner.execute(
                sql.SQL("SELECT count(*) FROM {}.{} WHERE tenant_id = %s").format(
                    sql.Identifier(schema), sql.Identifier(table)
                ),
                (w.tenant_id,),
            ).fetchone()[0]
            for schema, table in tables
        }
    assert len(tables) >= 5, f"too few tenant tables found to mean anything: {tables}"
    unprotected = [f"{s}.{t}" for (s, t), flag in flags.items() if flag != (True, True)]
    assert not unprotected, f"tenant tables without forced row-level security: {unprotected}"
    with_a = [key for key, count in a_rows.items() if count]
    assert len(with_a) >= 4, f"tenant A has rows in too few tables for a positive control: {with_a}"
    seen: dict[str, tuple[int, int, int]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_ROLE)))
        for schema, table in tables:
            qualified = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            with conn.transaction():
                bare = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified)).fetchone()[0]
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (f"ten_{uuid.uuid4().hex[:20]}",))
                other = conn.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(qualified), (w.tenant_id,)
                ).fetchone()[0]
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (w.tenant_id,))
                own = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified)).fetchone()[0]
            seen[f"{schema}.{table}"] = (bare, other, own)
    leaking = {name: counts for name, counts in seen.items() if counts[0] or counts[1]}
    assert not leaking, f"rows visible without the tenant (bare, as another tenant): {leaking}"
    blind = {f"{s}.{t}": seen[f"{s}.{t}"] for s, t in with_a if seen[f"{s}.{t}"][2] != a_rows[(s, t)]}
    assert not blind, f"with tenant A set, the app role should see exactly A's rows: {blind}"
    report(
        f"row-level security: {len(tables)} tenant tables, 0 rows visible without the tenant filter; "
        f"tenant A's rows in {len(with_a)} of them, visible only as A"
    )


async def test_another_tenants_limits_on_my_agent_id_do_not_apply_to_me(iso):
    """Limits name agents by id, and B may set one on A's agent id in its own tenant (above:
    NO_EFFECT). It must stay B's: a budget of one micro-dollar and a rate of one request a
    minute set by B leave A's turns with that agent untouched."""
    http, w = iso.http, iso.w
    b = {"Authorization": f"Bearer {w.b_admin}"}
    refused_or_own = []
    for path, field, value in (
        (f"/v1/budgets/{w.agent_id}", "limitMicros", "1"),
        (f"/v1/rateLimits/{w.agent_id}", "requestsPerMinute", "1"),
    ):
        response = await http.patch(
            path, json={field: value}, params={"updateMask": field, "allowMissing": "true"}, headers=b
        )
        assert response.status_code in (200, 404), response.text
        refused_or_own.append(response.status_code)
    await asyncio.sleep(0.5)  # past the limits cache of the stack under test (0.2 s)
    a = {"Authorization": f"Bearer {w.a_admin}"}
    for turn in range(3):
        response = await http.post(
            f"/v1/{w.session}/messages",
            json={"content": f"turn {turn} under another tenant's limits"},
            headers={**a, "Idempotency-Key": f"iso-limits-{uuid.uuid4().hex}"},
        )
        assert response.status_code == 200, (refused_or_own, response.text)
    await settled(iso.stack, w.tenant_id)  # A's turns are billed by the relay: let it finish
    # Positive control: the same budget on an agent of B's own stops B's turn before it runs.
    own = await http.post("/v1/agents", json={"displayName": "B's capped", "primaryProvider": "vendorA"}, headers=b)
    session = await http.post("/v1/sessions", json={"agent": own.json()["name"]}, headers=b)
    capped = await http.patch(
        f"/v1/budgets/{own.json()['name'].split('/')[1]}",
        json={"limitMicros": "1"},
        params={"updateMask": "limitMicros", "allowMissing": "true"},
        headers=b,
    )
    assert capped.status_code == 200, capped.text
    await asyncio.sleep(0.5)
    refused = await http.post(
        f"/v1/{session.json()['name']}/messages",
        json={"content": "over budget"},
        headers={**b, "Idempotency-Key": f"iso-limits-{uuid.uuid4().hex}"},
    )
    assert refused.status_code == 429 and error_reason(refused) == "BUDGET_EXCEEDED", refused.text


async def test_idempotency_keys_belong_to_their_tenant(iso):
    """Tenant B sending tenant A's exact turn body under A's Idempotency-Key, in a session of
    its own, runs a turn of its own: A's stored response is not replayed to B."""
    stack, http, w = iso.stack, iso.http, iso.w
    b = {"Authorization": f"Bearer {w.b_admin}"}
    agent = await http.post("/v1/agents", json={"displayName": "B's", "primaryProvider": "vendorA"}, headers=b)
    session = (await http.post("/v1/sessions", json={"agent": agent.json()["name"]}, headers=b)).json()["name"]
    before = state_of(stack, w.tenant_id)
    turn = await http.post(
        f"/v1/{session}/messages",
        json={"content": f"My secret is {w.marker}"},
        headers={**b, "Idempotency-Key": w.idempotency_key},
    )
    assert turn.status_code == 200, turn.text
    assert turn.headers.get("idempotent-replayed") != "true", "A's stored response was replayed to B"
    assert turn.json()["userMessage"]["name"].startswith(f"{session}/"), turn.text
    assert w.session.split("/")[1] not in turn.text
    assert state_of(stack, w.tenant_id) == before
    # Control: A repeating its own turn under its key is a replay.
    replay = await http.post(
        f"/v1/{w.session}/messages",
        json={"content": f"My secret is {w.marker}"},
        headers={"Authorization": f"Bearer {w.a_admin}", "Idempotency-Key": w.idempotency_key},
    )
    assert replay.status_code == 200 and replay.headers.get("idempotent-replayed") == "true", replay.text
