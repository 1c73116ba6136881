"""Tenants and API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from vocalbridge_common.db import UtcDateTime
from vocalbridge_common.migrations import enable_tenant_rls, grant_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
    )
    grant_table(op, "tenants")
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(20), nullable=False, unique=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(100), nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("expire_time", UtcDateTime, nullable=True),
        sa.Column("revoke_time", UtcDateTime, nullable=True),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id", "id"])
    enable_tenant_rls(op, "api_keys")


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("tenants")
