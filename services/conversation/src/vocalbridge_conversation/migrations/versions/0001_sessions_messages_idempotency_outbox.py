"""Sessions, messages, idempotency keys and the usage outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from vocalbridge_common.db import UtcDateTime
from vocalbridge_common.migrations import enable_tenant_rls

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("agent_version", sa.Integer, nullable=False),
        sa.Column("channel", sa.Integer, nullable=False),
        sa.Column("external_user_id", sa.String(200), nullable=False),
        sa.Column("metadata_json", sa.Text, nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("update_time", UtcDateTime, nullable=False),
    )
    op.create_index("ix_sessions_tenant_agent", "sessions", ["tenant_id", "agent_id", "id"])
    op.create_table(
        "messages",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("session_id", sa.String(40), sa.ForeignKey("sessions.id"), nullable=False),
        sa.Column("role", sa.Integer, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("channel", sa.Integer, nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
    )
    op.create_index("ix_messages_session", "messages", ["tenant_id", "session_id", "id"])
    op.create_table(
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
    op.create_table(
        "usage_outbox",
        sa.Column("event_id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("delivered_time", UtcDateTime, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_usage_outbox_pending", "usage_outbox", ["delivered_time", "create_time"])
    for table in ("sessions", "messages", "idempotency_keys", "usage_outbox"):
        enable_tenant_rls(op, table)


def downgrade() -> None:
    for table in ("usage_outbox", "idempotency_keys", "messages", "sessions"):
        op.drop_table(table)
