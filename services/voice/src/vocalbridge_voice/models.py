"""Voice tables: the idempotency keys of standalone speech requests (Transcribe and
Synthesize, with the response a repeat returns) and the outbox of their usage events for
billing, in the common library's shapes. Spoken turns are stored by the conversation
service, not here."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from vocalbridge_common.db import NAMING_CONVENTION
from vocalbridge_common.idempotency import IdempotencyKeyColumns
from vocalbridge_common.outbox import OutboxColumns


class VoiceBase(DeclarativeBase):
    """The voice tables' own MetaData: one service, one schema, one migration history."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class IdempotencyRow(IdempotencyKeyColumns, VoiceBase):
    """A Transcribe or Synthesize request sent with an Idempotency-Key. The unique constraint
    on (tenant, key) is what runs and bills a request once across replicas."""

    __tablename__ = "idempotency_keys"


class UsageOutboxRow(OutboxColumns, VoiceBase):
    """A usage event waiting for billing, written in the transaction that completes its request."""

    __tablename__ = "usage_outbox"
