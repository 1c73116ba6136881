"""The price list (seeded) and the append-only usage ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from vocalbridge_common.db import APP_ROLE, SYSTEM_ROLE, UtcDateTime
from vocalbridge_common.migrations import enable_tenant_rls, grant_table
from vocalbridge_common.pricing import SEED_PRICES

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _append_only(table: str) -> None:
    """Rows of `table` are never changed or removed by the services (PostgreSQL)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {APP_ROLE}, {SYSTEM_ROLE}")


def upgrade() -> None:
    prices = op.create_table(
        "prices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("micros_per_unit", sa.BigInteger, nullable=False),
        sa.Column("effective_time", UtcDateTime, nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.UniqueConstraint(
            "provider", "model", "unit", "effective_time", name="uq_prices_provider_model_unit_effective_time"
        ),
        sa.CheckConstraint("micros_per_unit >= 0", name="ck_prices_non_negative"),
    )
    grant_table(op, "prices")
    _append_only("prices")
    op.bulk_insert(
        prices,
        [
            {
                "id": row.price_id,
                "provider": row.provider,
                "model": row.model,
                "unit": row.unit.value,
                "micros_per_unit": row.micros_per_unit,
                "effective_time": row.effective_time,
                "create_time": row.effective_time,
            }
            for row in SEED_PRICES
        ],
    )

    op.create_table(
        "usage_events",
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("agent_version", sa.Integer, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("audio_millis", sa.BigInteger, nullable=False),
        sa.Column("tts_characters", sa.BigInteger, nullable=False),
        sa.Column("cost_micros", sa.BigInteger, nullable=False),
        sa.Column("reported_cost_micros", sa.BigInteger, nullable=False),
        sa.Column("prompt_price_id", sa.String(40), sa.ForeignKey("prices.id"), nullable=True),
        sa.Column("completion_price_id", sa.String(40), sa.ForeignKey("prices.id"), nullable=True),
        sa.Column("audio_price_id", sa.String(40), sa.ForeignKey("prices.id"), nullable=True),
        sa.Column("character_price_id", sa.String(40), sa.ForeignKey("prices.id"), nullable=True),
        sa.Column("event_time", UtcDateTime, nullable=False),
        sa.Column("event_day", sa.String(10), nullable=False),
        sa.Column("record_time", UtcDateTime, nullable=False),
        sa.Column("delivery_provider", sa.String(64), nullable=False),
        sa.Column("delivery_model", sa.String(100), nullable=False),
        sa.Column("fallback_used", sa.Boolean, nullable=False),
        sa.Column("delivery_latency_ns", sa.BigInteger, nullable=False),
        sa.Column("attempt_count", sa.Integer, nullable=False),
        sa.Column("failed_attempt_count", sa.Integer, nullable=False),
        sa.Column("circuit_open_skips", sa.Integer, nullable=False),
        sa.Column("started_provider", sa.String(64), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.CheckConstraint(
            "prompt_tokens >= 0 AND completion_tokens >= 0 AND audio_millis >= 0 AND tts_characters >= 0"
            " AND cost_micros >= 0",
            name="ck_usage_events_non_negative",
        ),
    )
    # Range scans of one tenant's ledger (summary, list, keyset pages), by session and by agent.
    op.create_index("ix_usage_events_tenant_time", "usage_events", ["tenant_id", "event_time", "event_id"])
    op.create_index(
        "ix_usage_events_tenant_session", "usage_events", ["tenant_id", "session_id", "event_time", "event_id"]
    )
    op.create_index("ix_usage_events_tenant_agent", "usage_events", ["tenant_id", "agent_id", "event_time"])
    enable_tenant_rls(op, "usage_events")
    _append_only("usage_events")

    op.create_table(
        "usage_attempts",
        sa.Column("event_id", sa.String(128), sa.ForeignKey("usage_events.event_id"), primary_key=True),
        sa.Column("ordinal", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("event_time", UtcDateTime, nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("latency_ns", sa.BigInteger, nullable=False),
        sa.Column("backoff_ns", sa.BigInteger, nullable=False),
        sa.Column("error_message", sa.String(500), nullable=False),
    )
    op.create_index("ix_usage_attempts_tenant_time", "usage_attempts", ["tenant_id", "event_time"])
    enable_tenant_rls(op, "usage_attempts")
    _append_only("usage_attempts")


def downgrade() -> None:
    op.drop_table("usage_attempts")
    op.drop_table("usage_events")
    op.drop_table("prices")
