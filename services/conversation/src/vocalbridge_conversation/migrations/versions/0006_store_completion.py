"""Storing a chat completion outside any session (the OpenAI-compatible API) as a server-side
function (PostgreSQL only): one round trip, like a turn's store (0004).

`store_completion` queues the completion's usage event and, when the caller sent an
idempotency key, completes its claim with the response in the same statement, gated on the
claim still holding its key unfinished (as `store_turn` is): a request whose claim a retry
took over writes nothing and gets false. Without a claim (NULL) it only queues the event.
It sets the tenant first and runs as its caller (SECURITY INVOKER), under row-level security.

Expand only: a new function, nothing an older version uses changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-14
"""

from alembic import op

from vocalbridge_common.db import APP_ROLE, SYSTEM_ROLE

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STORE_COMPLETION = """
CREATE OR REPLACE FUNCTION store_completion(
    p_tenant text, p_claim text, p_response bytea, p_event text, p_payload bytea, p_event_time timestamptz)
RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    owned bigint;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    IF p_claim IS NULL THEN
        INSERT INTO usage_outbox (event_id, tenant_id, payload, create_time, delivered_time, attempts)
        VALUES (p_event, p_tenant, p_payload, p_event_time, NULL, 0);
        RETURN true;
    END IF;
    WITH gate AS (
        UPDATE idempotency_keys SET state = 'completed', response = p_response
        WHERE tenant_id = p_tenant AND id = p_claim AND state = 'in_progress'
        RETURNING id
    ), queued AS (
        INSERT INTO usage_outbox (event_id, tenant_id, payload, create_time, delivered_time, attempts)
        SELECT p_event, p_tenant, p_payload, p_event_time, NULL, 0 FROM gate
    )
    SELECT count(*) FROM gate INTO owned;
    RETURN owned > 0;
END
$$
"""
SIGNATURE = "store_completion(text, text, bytea, text, bytea, timestamptz)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(STORE_COMPLETION)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {APP_ROLE}, {SYSTEM_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
