"""Idempotency keys, after Stripe and the IETF Idempotency-Key draft.

The first request with a key claims it (a record, unique per tenant and key) and
runs; a repeat with the same request gets the stored response; the same key with
a different request is refused; a repeat while the first still runs is told to
retry. A claim whose worker died is taken over once its lease runs out; a key is
kept for the TTL (at least 24 h), after which it may run again.

The database's unique constraint decides who claims a key, not a lock in memory,
so this holds across replicas and restarts. Every claim gets a record id of its own,
also when it takes over an abandoned one: completing or releasing acts on that id
only, so a worker whose claim was taken over can neither complete nor free the key
it lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from vocalbridge_common.errors import Aborted, AlreadyExists
from vocalbridge_common.ids import new_id
from vocalbridge_conversation.domain.idempotency import IdempotencyRecord, KeyState


class IdempotencyStore(Protocol):
    """Where a tenant's keys are kept (IdempotencyRepository; a fake in unit tests)."""

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
