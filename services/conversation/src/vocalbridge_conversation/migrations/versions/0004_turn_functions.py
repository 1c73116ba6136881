"""A turn's two writes as server-side functions (PostgreSQL only): one round trip each.

`open_turn` (the session, the idempotency claim and the history after a number) and
`store_turn` / `fail_turn` (completing or freeing the claim, the numbered messages, the
usage event) each run as one statement in a transaction of its own. Each starts with
`set_config('app.tenant_id', tenant, true)`, as every tenant transaction does, and runs
as the caller (SECURITY INVOKER): row-level security applies to everything they touch,
and every query in them filters on the tenant too. Without them a turn's transaction
takes three round trips (BEGIN with the tenant, the statement, COMMIT).

The statements are the ones repository.PgTurns ran itself before; SQLite has no functions
and keeps its SQLAlchemy path (repository.SqlTurns).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from alembic import op

from vocalbridge_common.db import APP_ROLE, SYSTEM_ROLE

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Statuses whose messages a provider sees (domain.sessions.HISTORY_STATUSES): COMPLETE, TRUNCATED.
HISTORY_STATUSES = "1, 3"

OPEN_TURN = f"""
CREATE OR REPLACE FUNCTION open_turn(
    p_tenant text, p_session text, p_claim text, p_key text, p_fingerprint text,
    p_create timestamptz, p_lease timestamptz, p_expire timestamptz, p_after integer, p_limit integer)
RETURNS TABLE (agent_id text, agent_version integer, last_seq integer, claimed boolean,
               seqs integer[], roles integer[], contents text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    RETURN QUERY
    WITH session AS (
        SELECT s.agent_id, s.agent_version, s.last_seq FROM sessions AS s
        WHERE s.tenant_id = p_tenant AND s.id = p_session
    ), claim AS (
        INSERT INTO idempotency_keys (id, tenant_id, key, fingerprint, state, response, create_time,
                                      lease_expire_time, expire_time)
        SELECT p_claim, p_tenant, p_key, p_fingerprint, 'in_progress', NULL, p_create, p_lease, p_expire
        FROM session
        ON CONFLICT (tenant_id, key) DO NOTHING
        RETURNING id
    ), history AS (
        SELECT m.seq, m.role, m.content FROM messages AS m
        WHERE m.tenant_id = p_tenant AND m.session_id = p_session AND m.status IN ({HISTORY_STATUSES})
          AND m.seq > p_after AND EXISTS (SELECT FROM claim)
        ORDER BY m.seq DESC LIMIT p_limit
    )
    SELECT s.agent_id::text, s.agent_version, s.last_seq, EXISTS (SELECT FROM claim),
           (SELECT array_agg(h.seq ORDER BY h.seq) FROM history AS h),
           (SELECT array_agg(h.role ORDER BY h.seq) FROM history AS h),
           (SELECT array_agg(h.content ORDER BY h.seq)::text[] FROM history AS h)
    FROM session AS s;
END
$$
"""

# The messages of a turn, numbered after the session's newest, written only through the
# gate (the claim's completion or release) and in one statement with it.
WRITE_MESSAGES = """
    , touched AS (
        UPDATE sessions AS s SET update_time = p_when, last_seq = s.last_seq + cardinality(p_ids)
        WHERE s.tenant_id = p_tenant AND s.id = p_session AND EXISTS (SELECT FROM gate)
        RETURNING s.last_seq
    ), stored AS (
        INSERT INTO messages (id, tenant_id, session_id, role, content, status, channel, create_time, seq)
        SELECT m.id, p_tenant, p_session, m.role, m.content, m.status, m.channel, m.create_time,
               t.last_seq - cardinality(p_ids) + m.n
        FROM touched AS t,
             unnest(p_ids, p_roles, p_contents, p_statuses, p_channels, p_times)
               WITH ORDINALITY AS m(id, role, content, status, channel, create_time, n)
    )"""
MESSAGE_PARAMETERS = """p_ids text[], p_roles integer[], p_contents text[], p_statuses integer[],
    p_channels text[], p_times timestamptz[]"""
CHECK_WRITTEN = """
    IF owned > 0 AND new_last IS NULL THEN
        RAISE EXCEPTION 'session % vanished during its turn', p_session;
    END IF;
    RETURN CASE WHEN owned > 0 THEN new_last END;"""

STORE_TURN = f"""
CREATE OR REPLACE FUNCTION store_turn(
    p_tenant text, p_claim text, p_when timestamptz, p_session text, {MESSAGE_PARAMETERS},
    p_response bytea, p_event text, p_payload bytea, p_event_time timestamptz)
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    owned bigint;
    new_last integer;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    WITH gate AS (
        UPDATE idempotency_keys SET state = 'completed', response = p_response
        WHERE tenant_id = p_tenant AND id = p_claim AND state = 'in_progress'
        RETURNING id
    ){WRITE_MESSAGES}, queued AS (
        INSERT INTO usage_outbox (event_id, tenant_id, payload, create_time, delivered_time, attempts)
        SELECT p_event, p_tenant, p_payload, p_event_time, NULL, 0 FROM touched
    )
    SELECT (SELECT count(*) FROM gate), (SELECT t.last_seq FROM touched AS t) INTO owned, new_last;{CHECK_WRITTEN}
END
$$
"""

FAIL_TURN = f"""
CREATE OR REPLACE FUNCTION fail_turn(
    p_tenant text, p_claim text, p_when timestamptz, p_session text, {MESSAGE_PARAMETERS})
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    owned bigint;
    new_last integer;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    WITH gate AS (
        DELETE FROM idempotency_keys
        WHERE tenant_id = p_tenant AND id = p_claim AND state = 'in_progress'
        RETURNING id
    ){WRITE_MESSAGES}
    SELECT (SELECT count(*) FROM gate), (SELECT t.last_seq FROM touched AS t) INTO owned, new_last;{CHECK_WRITTEN}
END
$$
"""

SIGNATURES = {
    "open_turn": "text, text, text, text, text, timestamptz, timestamptz, timestamptz, integer, integer",
    "store_turn": "text, text, timestamptz, text, text[], integer[], text[], integer[], text[], timestamptz[], "
    "bytea, text, bytea, timestamptz",
    "fail_turn": "text, text, timestamptz, text, text[], integer[], text[], integer[], text[], timestamptz[]",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for definition in (OPEN_TURN, STORE_TURN, FAIL_TURN):
        op.execute(definition)
    for name, signature in SIGNATURES.items():
        op.execute(f"REVOKE ALL ON FUNCTION {name}({signature}) FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {name}({signature}) TO {APP_ROLE}, {SYSTEM_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, signature in SIGNATURES.items():
        op.execute(f"DROP FUNCTION IF EXISTS {name}({signature})")
