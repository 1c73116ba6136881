"""The usage reports read their ledger rows from the index alone (PostgreSQL).

GetUsageSummary and GetProviderPerformance scan a tenant's events (and their attempts)
over a time range. With the columns they group by and sum INCLUDEd in the (tenant, time)
indexes, PostgreSQL answers from the index (an index-only scan, once VACUUM has marked
the pages all-visible) instead of fetching every wide ledger row from the table. SQLite
has no INCLUDE and keeps its indexes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

EVENT_COLUMNS = (
    "event_day, agent_id, provider, channel, started_provider, prompt_tokens, completion_tokens, "
    "audio_millis, tts_characters, cost_micros"
)
ATTEMPT_COLUMNS = "agent_id, provider, outcome, latency_ns"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_usage_events_tenant_time", "usage_events")
    op.execute(
        "CREATE INDEX ix_usage_events_tenant_time ON usage_events (tenant_id, event_time, event_id) "
        f"INCLUDE ({EVENT_COLUMNS})"
    )
    op.drop_index("ix_usage_attempts_tenant_time", "usage_attempts")
    op.execute(
        "CREATE INDEX ix_usage_attempts_tenant_time ON usage_attempts (tenant_id, event_time) "
        f"INCLUDE ({ATTEMPT_COLUMNS})"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_usage_attempts_tenant_time", "usage_attempts")
    op.create_index("ix_usage_attempts_tenant_time", "usage_attempts", ["tenant_id", "event_time"])
    op.drop_index("ix_usage_events_tenant_time", "usage_events")
    op.create_index("ix_usage_events_tenant_time", "usage_events", ["tenant_id", "event_time", "event_id"])
