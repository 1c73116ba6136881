"""The outbox in the common library's shape (vocalbridge_common.outbox.OutboxColumns): an event
billing refused waits until `retry_time` before it is offered again, so the relay takes
events in order of age instead of sinking refused ones behind the others by their attempts;
event ids up to 64 characters, as every service's outbox.

Expand only, as a rolling update needs: the new column is nullable (NULL: offered at once),
so a version before this one still inserts and relays events while the new one rolls out.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

from vocalbridge_common.db import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # PostgreSQL widens a varchar in place; SQLite copies the table (batch mode).
    with op.batch_alter_table("usage_outbox") as batch:
        batch.alter_column("event_id", existing_type=sa.String(40), type_=sa.String(64), existing_nullable=False)
        batch.add_column(sa.Column("retry_time", UtcDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_outbox") as batch:
        batch.drop_column("retry_time")
        batch.alter_column("event_id", existing_type=sa.String(64), type_=sa.String(40), existing_nullable=False)
