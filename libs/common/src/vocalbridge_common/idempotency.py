"""Idempotency keys, after Stripe and the IETF Idempotency-Key draft: one set of rules for
every service that runs a request once per key (conversation's turns, voice's Transcribe
and Synthesize).

The first request with a key claims it (a record, unique per tenant and key) and runs; a
repeat with the same request gets the stored response; the same key with a different
request is refused (IDEMPOTENCY_KEY_REUSED); a repeat while the first still runs is told
to retry (IDEMPOTENCY_KEY_IN_USE). A claim whose worker died is taken over once its lease
runs out; a key is kept for the TTL (at least 24 h), after which it may run again.

The database's unique constraint decides who claims a key, not a lock in memory, so this
holds across replicas and restarts. Every claim gets a record id of its own, also when it
takes over an abandoned one: completing or releasing acts on that id only, so a worker
whose claim was taken over can neither complete nor free the key it lost.

Each service keeps its keys in a table of its own schema (one migration history per
service): `IdempotencyKeyColumns` gives the columns, `SqlIdempotencyStore` the statements
for any table that has them, `claim` the rules over any `IdempotencyStore` (a hot path may
implement the protocol with statements of its own, as conversation's PostgreSQL turns do).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol, cast

from sqlalchemy import CursorResult, Index, LargeBinary, String, UniqueConstraint, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from vocalbridge_common.config import Env
from vocalbridge_common.db import UtcDateTime, insert_or_ignore
from vocalbridge_common.errors import Aborted, AlreadyExists, FieldViolation, InvalidArgument
from vocalbridge_common.headers import IDEMPOTENCY_KEY_HEADER
from vocalbridge_common.ids import new_id
from vocalbridge_common.repository import TenantRepository

MAX_KEY_LENGTH = 255


# -- values ------------------------------------------------------------------------------


class KeyState(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


@dataclass(frozen=True)
class IdempotencyRecord:
    """One claim of a tenant's key (the tenant is the store's)."""

    id: str
    key: str
    fingerprint: str
    state: KeyState
    response: bytes | None
    create_time: datetime
    # An in-progress claim whose lease ran out belongs to a crashed worker and may be taken over.
    lease_expire_time: datetime
    # After this the key is forgotten: the next request with it runs.
    expire_time: datetime


@dataclass(frozen=True)
class IdempotencySettings:
    """How long a running claim is held and a finished key kept."""

    # An in-progress key whose worker has not finished within this is taken over.
    lease: timedelta = timedelta(minutes=2)
    # A key is kept at least this long (24 h or more, as clients expect).
    ttl: timedelta = timedelta(hours=24)

    @classmethod
    def from_env(cls, env: Env) -> IdempotencySettings:
        return cls(
            lease=timedelta(seconds=env.float("VB_IDEMPOTENCY_LEASE_SECONDS", cls.lease.total_seconds())),
            ttl=timedelta(hours=env.float("VB_IDEMPOTENCY_TTL_HOURS", cls.ttl.total_seconds() / 3600)),
        )


def fingerprint(operation: str, **request: object) -> str:
    """A digest of what the request asks for; equal requests have equal digests. Changing
    what a service passes here changes every stored fingerprint: a client's retry across the
    change would be refused as a reused key."""
    canonical = json.dumps({"op": operation, **request}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: str | None, *, required: bool = True) -> str | None:
    """The key as sent (None when it is optional and absent), checked before any work."""
    if not key:
        if not required:
            return None
        raise InvalidArgument(
            f"the Idempotency-Key header is required (gRPC metadata `{IDEMPOTENCY_KEY_HEADER}`)",
            reason="IDEMPOTENCY_KEY_REQUIRED",
            field_violations=[FieldViolation("Idempotency-Key", "header is required")],
        )
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidArgument(
            f"the Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} printable characters",
            reason="IDEMPOTENCY_KEY_INVALID",
            field_violations=[FieldViolation("Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} printable characters")],
        )
    return key


def required_key(key: str | None) -> str:
    """validate_key for a request that cannot run without one."""
    checked = validate_key(key, required=True)
    assert checked is not None  # required: absent raised
    return checked


class ClaimLost(Aborted):
    """This request's claim on its key was taken over (its lease ran out while it was still
    running, and a retry claimed the key): the retry's result is the one stored and billed."""

    default_reason = "IDEMPOTENCY_KEY_IN_USE"

    def __init__(self, key: str) -> None:
        super().__init__(
            "a retry with this Idempotency-Key took it over while this request was still running; "
            "retry shortly to get the retry's result",
            metadata={"idempotencyKey": key},
        )


# -- the rules ---------------------------------------------------------------------------


class IdempotencyStore(Protocol):
    """Where a tenant's keys are kept (SqlIdempotencyStore, a service's own fast path, a fake)."""

    async def insert_if_absent(self, record: IdempotencyRecord) -> bool:
        """Adds `record` unless its key exists; whether it was added."""

    async def get(self, key: str) -> IdempotencyRecord | None: ...

    async def take_over(self, key: str, old_id: str, record: IdempotencyRecord) -> bool:
        """Replaces the claim `old_id` of `key` by `record`, only if it is still the one stored."""

    async def complete(self, record_id: str, response: bytes) -> bool:
        """Stores the response of claim `record_id`, if it still holds its key unfinished;
        whether it did (nothing changes when the claim is gone)."""

    async def release(self, record_id: str) -> bool:
        """Frees the key of claim `record_id`, if it still holds it unfinished; whether it did."""


@dataclass(frozen=True)
class Claimed:
    """This request owns the key and must run; `record_id` completes or releases it."""

    record_id: str


@dataclass(frozen=True)
class Replay:
    """The key's request already completed; `response` is what it returned."""

    response: bytes


def new_claim(key: str, request_fingerprint: str, now: datetime, lease: timedelta, ttl: timedelta) -> IdempotencyRecord:
    """The record a request claims `key` with: in progress until its lease runs out."""
    return IdempotencyRecord(
        id=new_id("idk"),
        key=key,
        fingerprint=request_fingerprint,
        state=KeyState.IN_PROGRESS,
        response=None,
        create_time=now,
        lease_expire_time=now + lease,
        expire_time=now + ttl,
    )


async def claim(
    store: IdempotencyStore,
    key: str,
    request_fingerprint: str,
    now: datetime,
    lease: timedelta,
    ttl: timedelta,
) -> Claimed | Replay:
    """Claims `key` for a request, or says why it must not run: a Replay of the stored
    response, AlreadyExists (IDEMPOTENCY_KEY_REUSED) or Aborted (IDEMPOTENCY_KEY_IN_USE)."""
    fresh = new_claim(key, request_fingerprint, now, lease, ttl)
    if await store.insert_if_absent(fresh):
        return Claimed(fresh.id)
    existing = await store.get(key)
    if existing is None:  # released between our insert and read: the key is free again
        if await store.insert_if_absent(fresh):
            return Claimed(fresh.id)
        raise _in_use(key)
    expired = existing.expire_time <= now
    abandoned = existing.state is KeyState.IN_PROGRESS and existing.lease_expire_time <= now
    if expired or abandoned:
        if await store.take_over(key, existing.id, fresh):
            return Claimed(fresh.id)
        raise _in_use(key)  # another request took it over first
    if existing.fingerprint != request_fingerprint:
        raise AlreadyExists(
            "this Idempotency-Key was already used with a different request",
            reason="IDEMPOTENCY_KEY_REUSED",
            metadata={"idempotencyKey": key},
        )
    if existing.state is KeyState.COMPLETED and existing.response is not None:
        return Replay(existing.response)
    raise _in_use(key)


def _in_use(key: str) -> Aborted:
    return Aborted(
        "a request with this Idempotency-Key is still running; retry shortly to get its result",
        reason="IDEMPOTENCY_KEY_IN_USE",
        metadata={"idempotencyKey": key},
    )


# -- the table and its statements ----------------------------------------------------------


class IdempotencyKeyColumns:
    """The columns of a service's idempotency key table: mix into a model of the service's own
    DeclarativeBase with its `__tablename__`. The unique constraint on (tenant, key) is what
    runs a request once, across replicas and restarts."""

    __tablename__: str  # the service's model names its table

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            UniqueConstraint("tenant_id", "key", name=f"uq_{cls.__tablename__}_tenant_key"),
            # The retention sweeper's (vocalbridge_common.retention) way to the expired keys.
            Index(f"ix_{cls.__tablename__}_expire_time", "expire_time"),
        )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # a KeyState value
    response: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    lease_expire_time: Mapped[datetime] = mapped_column(UtcDateTime)
    expire_time: Mapped[datetime] = mapped_column(UtcDateTime)


def _values(record: IdempotencyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "fingerprint": record.fingerprint,
        "state": record.state.value,
        "response": record.response,
        "create_time": record.create_time,
        "lease_expire_time": record.lease_expire_time,
        "expire_time": record.expire_time,
    }


def _record_of(row: IdempotencyKeyColumns) -> IdempotencyRecord:
    return IdempotencyRecord(
        id=row.id,
        key=row.key,
        fingerprint=row.fingerprint,
        state=KeyState(row.state),
        response=row.response,
        create_time=row.create_time,
        lease_expire_time=row.lease_expire_time,
        expire_time=row.expire_time,
    )


def _rowcount(result: object) -> int:
    return cast(CursorResult[Any], result).rowcount


class SqlIdempotencyStore(TenantRepository):
    """A tenant's idempotency keys in `table` (a model with IdempotencyKeyColumns), through
    SQLAlchemy: an IdempotencyStore. Flushes, never commits."""

    table: ClassVar[type[IdempotencyKeyColumns]]

    def __init__(self, session: AsyncSession, tenant_id: str, table: type[IdempotencyKeyColumns] | None = None):
        super().__init__(session, tenant_id)
        # A mapped model of the service's (the mixin alone maps to no table).
        self._table: Any = table or type(self).table

    async def insert_if_absent(self, record: IdempotencyRecord) -> bool:
        row = {**_values(record), "tenant_id": self.tenant_id, "key": record.key}
        return await insert_or_ignore(self.session, self._table, [row], ["tenant_id", "key"]) == 1

    async def get(self, key: str) -> IdempotencyRecord | None:
        t = self._table
        row = (await self.session.scalars(select(t).where(t.tenant_id == self.tenant_id, t.key == key))).one_or_none()
        return _record_of(row) if row else None

    async def take_over(self, key: str, old_id: str, record: IdempotencyRecord) -> bool:
        t = self._table
        result = await self.session.execute(
            update(t).where(t.tenant_id == self.tenant_id, t.key == key, t.id == old_id).values(**_values(record))
        )
        return _rowcount(result) == 1

    def _unfinished(self, record_id: str) -> list[Any]:
        t = self._table
        return [t.tenant_id == self.tenant_id, t.id == record_id, t.state == KeyState.IN_PROGRESS.value]

    async def complete(self, record_id: str, response: bytes) -> bool:
        result = await self.session.execute(
            update(self._table)
            .where(*self._unfinished(record_id))
            .values(state=KeyState.COMPLETED.value, response=response)
        )
        return _rowcount(result) == 1

    async def release(self, record_id: str) -> bool:
        result = await self.session.execute(delete(self._table).where(*self._unfinished(record_id)))
        return _rowcount(result) == 1
