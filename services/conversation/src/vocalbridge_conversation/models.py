"""Conversation tables. Every one is tenant-owned and under row-level security."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vocalbridge_common.db import NAMING_CONVENTION, UtcDateTime
from vocalbridge_common.idempotency import IdempotencyKeyColumns
from vocalbridge_common.outbox import OutboxColumns


class ConversationBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SessionRow(ConversationBase):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_tenant_agent", "tenant_id", "agent_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    agent_id: Mapped[str] = mapped_column(String(40))
    agent_version: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))  # a vocabulary.Channel value: CHANNEL_TEXT | CHANNEL_VOICE
    external_user_id: Mapped[str] = mapped_column(String(200))
    metadata_json: Mapped[str] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    # The number of the session's newest message (0: none yet); see MessageRow.seq.
    last_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class MessageRow(ConversationBase):
    """A message; ids sort by creation. `seq` numbers a session's messages in the order their
    turns committed (the store increments sessions.last_seq in the same transaction)."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_session", "tenant_id", "session_id", "id"),
        Index("uq_messages_session_seq", "tenant_id", "session_id", "seq", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    session_id: Mapped[str] = mapped_column(String(40), ForeignKey("sessions.id"))
    role: Mapped[int] = mapped_column(Integer)  # a domain.Role number
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer)  # a domain.MessageStatus number
    channel: Mapped[str] = mapped_column(String(16))  # a vocabulary.Channel value
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    # None only for messages a version before migration 0003 wrote during a rolling update.
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class IdempotencyRow(IdempotencyKeyColumns, ConversationBase):
    """One idempotency key of a tenant (the columns and rules are the common library's). The
    unique constraint on (tenant, key) is what makes a turn run once, across replicas and restarts."""

    __tablename__ = "idempotency_keys"


class OutboxRow(OutboxColumns, ConversationBase):
    """A usage event waiting for the billing relay, written in the same transaction as the
    reply it bills (the columns and the relay are the common library's)."""

    __tablename__ = "usage_outbox"
