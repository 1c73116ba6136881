"""Messages numbered within their session, in the order their turns committed.

`sessions.last_seq` is the number of the session's newest message. A turn's store
increments it in the transaction that inserts the messages, so the stores of one session
take their numbers one after the other (the session row stays locked until commit) and a
reader sees a gap-free prefix. A turn then reads only the messages numbered after the ones
it already holds, instead of rereading the recent history.

Expand only, as a rolling update needs: `messages.seq` stays nullable, so a version before
this one can still insert messages while the new one rolls out (those have no number; the
history reads order them after the numbered ones). Existing messages are numbered here in
conversation order (creation time, then id).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NUMBER_MESSAGES = """
UPDATE messages SET seq = numbered.seq
FROM (
  SELECT id, row_number() OVER (PARTITION BY session_id ORDER BY create_time, id) AS seq FROM messages
) AS numbered
WHERE messages.id = numbered.id
"""
LAST_SEQ = (
    "UPDATE sessions SET last_seq = "
    "(SELECT coalesce(max(seq), 0) FROM messages WHERE messages.session_id = sessions.id)"
)
TABLES = ("sessions", "messages")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("last_seq", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=True))
    if postgres:
        # Row-level security is forced on the owner too; the numbering must see every tenant.
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    op.execute(NUMBER_MESSAGES)
    op.execute(LAST_SEQ)
    if postgres:
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.create_index("uq_messages_session_seq", "messages", ["tenant_id", "session_id", "seq"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_messages_session_seq", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("seq")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("last_seq")
