"""An index on the idempotency keys' expiry, the retention sweeper's way to the keys it deletes
(vocalbridge_common.retention): without it each of its batches would read the whole table.

Expand only: an index, which a version before this one ignores.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-15
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_idempotency_keys_expire_time", "idempotency_keys", ["expire_time"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_expire_time", table_name="idempotency_keys")
