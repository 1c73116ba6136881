"""Standalone speech requests (idempotency) and their usage outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
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
        "speech_requests",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("expire_time", UtcDateTime, nullable=False),
    )
    enable_tenant_rls(op, "speech_requests")
    op.create_table(
        "usage_outbox",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("delivered_time", UtcDateTime, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_usage_outbox_pending", "usage_outbox", ["delivered_time", "attempts", "create_time"])
    enable_tenant_rls(op, "usage_outbox")


def downgrade() -> None:
    op.drop_table("usage_outbox")
    op.drop_table("speech_requests")
