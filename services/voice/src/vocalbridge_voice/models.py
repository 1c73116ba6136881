"""Voice tables: the standalone speech requests run under an idempotency key (with the
response a repeat returns) and the outbox of their usage events for billing. Spoken turns
are stored by the conversation service, not here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, LargeBinary, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vocalbridge_common.db import NAMING_CONVENTION, UtcDateTime


class VoiceBase(DeclarativeBase):
    """The voice tables' own MetaData: one service, one schema, one migration history."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SpeechRequestRow(VoiceBase):
    """A Transcribe or Synthesize request sent with an Idempotency-Key. The primary key
    (tenant, key) is what runs and bills a request once across replicas."""

    __tablename__ = "speech_requests"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    expire_time: Mapped[datetime] = mapped_column(UtcDateTime)


class UsageOutboxRow(VoiceBase):
    """A usage event waiting for billing, written in the transaction that completes its request."""

    __tablename__ = "usage_outbox"
    __table_args__ = (Index("ix_usage_outbox_pending", "delivered_time", "attempts", "create_time"),)

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
