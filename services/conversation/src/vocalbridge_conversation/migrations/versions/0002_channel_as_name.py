"""Channels stored as their names (CHANNEL_TEXT, CHANNEL_VOICE), as billing stores and groups them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("sessions", "messages")
# conversation.v1.Channel: the numbers 0001 stored, and the names stored from now on.
TO_NAME = "CASE channel WHEN 1 THEN 'CHANNEL_TEXT' WHEN 2 THEN 'CHANNEL_VOICE' END"
# SQLite's batch copy turns the numbers into text.
TEXT_TO_NAME = "CASE channel WHEN '1' THEN 'CHANNEL_TEXT' WHEN '2' THEN 'CHANNEL_VOICE' END"
TO_NUMBER = "CASE channel WHEN 'CHANNEL_TEXT' THEN 1 WHEN 'CHANNEL_VOICE' THEN 2 END"
# No ELSE: a value outside these becomes NULL and the NOT NULL column refuses it, so the
# migration stops rather than store a channel nobody can read.


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        # PostgreSQL converts in place (row-level security is untouched: no policy reads
        # the channel); SQLite copies the table (batch mode), then the numbers are renamed.
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "channel",
                existing_type=sa.Integer,
                type_=sa.String(16),
                existing_nullable=False,
                postgresql_using=TO_NAME,
            )
        if not postgres:
            op.execute(f"UPDATE {table} SET channel = {TEXT_TO_NAME}")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        if not postgres:
            op.execute(f"UPDATE {table} SET channel = {TO_NUMBER}")
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "channel",
                existing_type=sa.String(16),
                type_=sa.Integer,
                existing_nullable=False,
                postgresql_using=TO_NUMBER,
            )
