"""Auth tables: the tenant registry and the tenants' API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vocalbridge_common.db import NAMING_CONVENTION, UtcDateTime


class AuthBase(DeclarativeBase):
    """The auth tables' own MetaData: one service, one schema, one migration history.
    Declared as a class (not built by a factory) so type checkers accept it as a base."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TenantRow(AuthBase):
    """The tenant registry. Operator-managed, so not under row-level security:
    it is read only in system transactions by operator RPCs."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(100))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKeyRow(AuthBase):
    """An API key. Only the SHA-256 digest of the secret is stored; `prefix` is
    the public part of the secret, unique, used to find the row."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40), ForeignKey("tenants.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(20), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(100))  # comma-separated scope names
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    expire_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoke_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Updated at most once a minute per key and process, off the request path.
    last_use_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The key that replaced this one by rotation; set once (compare-and-set on NULL).
    successor_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class RateLimitRow(AuthBase):
    """A tenant's rate limit for one target: `tenant`, a key id or an agent id."""

    __tablename__ = "rate_limits"

    tenant_id: Mapped[str] = mapped_column(String(40), ForeignKey("tenants.id"), primary_key=True)
    target: Mapped[str] = mapped_column(String(40), primary_key=True)
    requests_per_minute: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    revision: Mapped[int] = mapped_column(Integer)


class BudgetRow(AuthBase):
    """A tenant's spend budget for one target."""

    __tablename__ = "budgets"

    tenant_id: Mapped[str] = mapped_column(String(40), ForeignKey("tenants.id"), primary_key=True)
    target: Mapped[str] = mapped_column(String(40), primary_key=True)
    limit_micros: Mapped[int] = mapped_column(BigInteger)
    period: Mapped[str] = mapped_column(String(20))  # limits.model.BudgetPeriod
    window_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    revision: Mapped[int] = mapped_column(Integer)
