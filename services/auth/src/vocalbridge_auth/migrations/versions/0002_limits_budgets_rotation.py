"""Rate limits and budgets per tenant, key and agent; a key's last use and successor.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from vocalbridge_common.db import UtcDateTime
from vocalbridge_common.migrations import enable_tenant_rls

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("last_use_time", UtcDateTime, nullable=True))
    op.add_column("api_keys", sa.Column("successor_id", sa.String(40), nullable=True))
    op.create_table(
        "rate_limits",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("target", sa.String(40), primary_key=True),
        sa.Column("requests_per_minute", sa.BigInteger, nullable=True),
        sa.Column("tokens_per_minute", sa.BigInteger, nullable=True),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("update_time", UtcDateTime, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
    )
    enable_tenant_rls(op, "rate_limits")
    op.create_table(
        "budgets",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("target", sa.String(40), primary_key=True),
        sa.Column("limit_micros", sa.BigInteger, nullable=False),
        sa.Column("period", sa.String(20), nullable=False),
        sa.Column("window_seconds", sa.Integer, nullable=True),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("update_time", UtcDateTime, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
    )
    enable_tenant_rls(op, "budgets")


def downgrade() -> None:
    op.drop_table("budgets")
    op.drop_table("rate_limits")
    op.drop_column("api_keys", "successor_id")
    op.drop_column("api_keys", "last_use_time")
