"""Agents and their immutable versions.

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


def _config_columns() -> list[sa.Column]:
    """The configuration columns, identical on the agent and on each version snapshot."""
    return [
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("system_prompt", sa.Text, nullable=False),
        sa.Column("primary_provider", sa.String(64), nullable=False),
        sa.Column("fallback_provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("temperature", sa.Double, nullable=True),
        sa.Column("top_p", sa.Double, nullable=True),
        sa.Column("max_output_tokens", sa.Integer, nullable=True),
        sa.Column("voice_name", sa.String(50), nullable=False),
        sa.Column("voice_words_per_minute", sa.Integer, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("update_time", UtcDateTime, nullable=False),
        sa.Column("delete_time", UtcDateTime, nullable=True),
        *_config_columns(),
    )
    op.create_index("ix_agents_tenant_id_id", "agents", ["tenant_id", "id"])
    enable_tenant_rls(op, "agents")

    op.create_table(
        "agent_versions",
        sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        *_config_columns(),
    )
    enable_tenant_rls(op, "agent_versions")


def downgrade() -> None:
    op.drop_table("agent_versions")
    op.drop_table("agents")
