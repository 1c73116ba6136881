"""Standalone speech requests under the common idempotency rules, and the outbox in the
common shape.

`speech_requests` recorded a request only once it had run (first writer wins): two requests
with one key both ran their engine, and nothing told a repeat that the first was still
running. `idempotency_keys` is the common library's table (vocalbridge_common.idempotency):
a request claims its key before it runs, a repeat while it runs is told the key is in use,
a claim whose worker died is taken over after its lease. The stored responses move over as
completed keys (new record ids; their fingerprints, leases and expiry as they were).

The outbox gets `retry_time` (an event billing refused waits until then) and its pending
index follows the relay's order, oldest first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

from vocalbridge_common.db import SYSTEM_ROLE, UtcDateTime
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import enable_tenant_rls

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    keys = op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=True),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("lease_expire_time", UtcDateTime, nullable=False),
        sa.Column("expire_time", UtcDateTime, nullable=False),
        sa.UniqueConstraint("tenant_id", "key", name="uq_idempotency_keys_tenant_key"),
    )
    enable_tenant_rls(op, "idempotency_keys")
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres:  # every tenant's rows, whoever runs the migration (row-level security is forced)
        op.execute(f"SET LOCAL ROLE {SYSTEM_ROLE}")
    old = sa.table(
        "speech_requests",
        sa.column("tenant_id", sa.String),
        sa.column("idempotency_key", sa.String),
        sa.column("fingerprint", sa.String),
        sa.column("response", sa.LargeBinary),
        sa.column("create_time", UtcDateTime),
        sa.column("expire_time", UtcDateTime),
    )
    rows = [
        {
            "id": new_id("idk"),
            "tenant_id": row.tenant_id,
            "key": row.idempotency_key,
            "fingerprint": row.fingerprint,
            "state": "completed",
            "response": row.response,
            "create_time": row.create_time,
            "lease_expire_time": row.create_time,
            "expire_time": row.expire_time,
        }
        for row in bind.execute(sa.select(old))
    ]
    if rows:
        op.bulk_insert(keys, rows)
    if postgres:
        op.execute("RESET ROLE")
    op.drop_table("speech_requests")

    with op.batch_alter_table("usage_outbox") as batch:
        batch.add_column(sa.Column("retry_time", UtcDateTime, nullable=True))
        batch.drop_index("ix_usage_outbox_pending")
        batch.create_index("ix_usage_outbox_pending", ["delivered_time", "create_time"])


def downgrade() -> None:
    with op.batch_alter_table("usage_outbox") as batch:
        batch.drop_index("ix_usage_outbox_pending")
        batch.create_index("ix_usage_outbox_pending", ["delivered_time", "attempts", "create_time"])
        batch.drop_column("retry_time")
    op.create_table(
        "speech_requests",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("expire_time", UtcDateTime, nullable=False),
    )
    enable_tenant_rls(op, "speech_requests")
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(f"SET LOCAL ROLE {SYSTEM_ROLE}")
    op.execute(
        "INSERT INTO speech_requests (tenant_id, idempotency_key, fingerprint, response, create_time, expire_time) "
        "SELECT tenant_id, key, fingerprint, response, create_time, expire_time FROM idempotency_keys "
        "WHERE state = 'completed'"
    )
    if postgres:
        op.execute("RESET ROLE")
    op.drop_table("idempotency_keys")
