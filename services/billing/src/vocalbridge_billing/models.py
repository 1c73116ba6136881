"""Billing tables: the global price list, and the tenants' append-only usage
ledger with one child row per delivery attempt (for provider performance)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vocalbridge_common.db import NAMING_CONVENTION, UtcDateTime


class BillingBase(DeclarativeBase):
    """The billing tables' own MetaData: one service, one schema, one migration history.
    Declared as a class (not built by a factory) so type checkers accept it as a base."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PriceListRow(BillingBase):
    """One price row, the same for every tenant (no row-level security). Rows are
    never updated: a price change is a new row with a later effective time."""

    __tablename__ = "prices"
    __table_args__ = (
        UniqueConstraint("provider", "model", "unit", "effective_time"),
        CheckConstraint("micros_per_unit >= 0", name="non_negative"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(100))  # empty: every model of the provider
    unit: Mapped[str] = mapped_column(String(32))  # a vocalbridge_common.pricing.PriceUnit value
    micros_per_unit: Mapped[int] = mapped_column(BigInteger)
    effective_time: Mapped[datetime] = mapped_column(UtcDateTime)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class UsageEventRow(BillingBase):
    """One recorded turn. Append-only: the app roles may not UPDATE or DELETE it.
    `event_id` is the producer's id and the deduplication key."""

    __tablename__ = "usage_events"
    __table_args__ = (
        CheckConstraint(
            "prompt_tokens >= 0 AND completion_tokens >= 0 AND audio_millis >= 0 AND tts_characters >= 0"
            " AND cost_micros >= 0",
            name="non_negative",
        ),
        Index("ix_usage_events_tenant_time", "tenant_id", "event_time", "event_id"),
        Index("ix_usage_events_tenant_session", "tenant_id", "session_id", "event_time", "event_id"),
        Index("ix_usage_events_tenant_agent", "tenant_id", "agent_id", "event_time"),
    )

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    agent_id: Mapped[str] = mapped_column(String(64))
    agent_version: Mapped[int] = mapped_column(Integer)
    session_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(64))  # empty when the producer named no message
    channel: Mapped[str] = mapped_column(String(16))  # CHANNEL_TEXT | CHANNEL_VOICE
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(100))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    audio_millis: Mapped[int] = mapped_column(BigInteger)  # audio seconds, quantized to whole ms
    tts_characters: Mapped[int] = mapped_column(BigInteger)
    # Billing's cost, at the prices below (authoritative), and the producer's, for audit.
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    reported_cost_micros: Mapped[int] = mapped_column(BigInteger)
    # The price rows charged, one per unit consumed (prices are immutable, so an id is a copy).
    prompt_price_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("prices.id"), nullable=True)
    completion_price_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("prices.id"), nullable=True)
    audio_price_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("prices.id"), nullable=True)
    character_price_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("prices.id"), nullable=True)
    event_time: Mapped[datetime] = mapped_column(UtcDateTime)
    event_day: Mapped[str] = mapped_column(String(10))  # UTC day of event_time, YYYY-MM-DD
    record_time: Mapped[datetime] = mapped_column(UtcDateTime)
    # The delivery record, summarized; the attempts are rows of usage_attempts.
    delivery_provider: Mapped[str] = mapped_column(String(64))
    delivery_model: Mapped[str] = mapped_column(String(100))
    fallback_used: Mapped[bool] = mapped_column(Boolean)
    delivery_latency_ns: Mapped[int] = mapped_column(BigInteger)
    attempt_count: Mapped[int] = mapped_column(Integer)  # provider calls, circuit-open skips excluded
    failed_attempt_count: Mapped[int] = mapped_column(Integer)
    circuit_open_skips: Mapped[int] = mapped_column(Integer)
    started_provider: Mapped[str] = mapped_column(String(64))  # provider of the first attempt; empty without
    # SHA-256 of the event as the producer sent it: a re-send with the same id must match it.
    content_sha256: Mapped[str] = mapped_column(String(64))


class UsageAttemptRow(BillingBase):
    """One delivery attempt of a recorded turn. Tenant, time and agent are copied
    from the event so provider performance is one indexed scan."""

    __tablename__ = "usage_attempts"
    __table_args__ = (Index("ix_usage_attempts_tenant_time", "tenant_id", "event_time"),)

    event_id: Mapped[str] = mapped_column(String(128), ForeignKey("usage_events.event_id"), primary_key=True)
    ordinal: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    event_time: Mapped[datetime] = mapped_column(UtcDateTime)
    agent_id: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))  # AttemptOutcome name without ATTEMPT_OUTCOME_
    latency_ns: Mapped[int] = mapped_column(BigInteger)
    backoff_ns: Mapped[int] = mapped_column(BigInteger)
    error_message: Mapped[str] = mapped_column(String(500))


# -- the daily rollups ---------------------------------------------------------------------
# Sums of the ledger per tenant and UTC day, kept by the database itself: triggers on the
# two ledger tables add every inserted row to them in the inserting transaction (migration
# 0002). The services only read them; a report takes its whole days from here and the
# partial days at its edges from the ledger.


class UsageDailyTotalsRow(BillingBase):
    """The summary's sums per day and every dimension it groups or filters by; the
    provider that started the turn is a dimension too, for provider performance."""

    __tablename__ = "usage_daily_totals"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC: the events' event_day
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    started_provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    turns: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    audio_millis: Mapped[int] = mapped_column(BigInteger)
    tts_characters: Mapped[int] = mapped_column(BigInteger)
    cost_micros: Mapped[int] = mapped_column(BigInteger)


class UsageDailyAttemptsRow(BillingBase):
    """Delivery attempts per day, agent and provider."""

    __tablename__ = "usage_daily_attempts"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempts: Mapped[int] = mapped_column(BigInteger)  # calls made: circuit-open skips excluded
    failed_attempts: Mapped[int] = mapped_column(BigInteger)
    circuit_open_skips: Mapped[int] = mapped_column(BigInteger)


class UsageDailyLatencyRow(BillingBase):
    """Successful calls per day, provider and latency bucket (domain.latency_bucket)."""

    __tablename__ = "usage_daily_latencies"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)


class UsageDailyAgentLatencyRow(BillingBase):
    """The same per agent too, for reports of one agent (the histogram above stays small
    for reports of every agent)."""

    __tablename__ = "usage_daily_agent_latencies"

    # Agent before day: it is read for one agent at a time.
    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)
