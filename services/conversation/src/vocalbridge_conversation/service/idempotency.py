"""Idempotency keys, after Stripe and the IETF Idempotency-Key draft.

The first request with a key claims it (a row, unique per tenant and key) and
runs; a repeat with the same request gets the stored response; the same key
with a different request is refused; a repeat while the first still runs is
told to retry. A claim whose worker died is taken over once its lease runs
out; a completed key is kept for the TTL (at least 24 h).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from vocalbridge_common.errors import Aborted, AlreadyExists, FieldViolation, InvalidArgument
from vocalbridge_common.ids import new_id
from vocalbridge_conversation.repository import IdempotencyRepository

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255


def fingerprint(operation: str, **request) -> str:
    """A digest of what the request asks for; equal requests have equal digests."""
    canonical = json.dumps({"op": operation, **request}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: str | None) -> str:
    if not key:
        raise InvalidArgument(
            "the Idempotency-Key header is required (gRPC metadata `idempotency-key`)",
            reason="IDEMPOTENCY_KEY_REQUIRED",
            field_violations=[FieldViolation("Idempotency-Key", "header is required")],
        )
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidArgument(
            "the Idempotency-Key header must be 1 to 255 printable characters",
            reason="IDEMPOTENCY_KEY_INVALID",
            field_violations=[FieldViolation("Idempotency-Key", "must be 1 to 255 printable characters")],
        )
    return key


@dataclass(frozen=True)
class Claimed:
    """This request owns the key and must run; `record_id` completes or releases it."""

    record_id: str


@dataclass(frozen=True)
class Replay:
    """The key's request already completed; `response` is what it returned."""

    response: bytes


async def claim(
    repository: IdempotencyRepository,
    tenant_id: str,
    key: str,
    request_fingerprint: str,
    now: datetime,
    lease: timedelta,
    ttl: timedelta,
) -> Claimed | Replay:
    fresh = {
        "id": new_id("idk"),
        "tenant_id": tenant_id,
        "key": key,
        "fingerprint": request_fingerprint,
        "state": "in_progress",
        "response": None,
        "create_time": now,
        "lease_expire_time": now + lease,
        "expire_time": now + ttl,
    }
    if await repository.insert_if_absent(fresh):
        return Claimed(fresh["id"])
    existing = await repository.get(tenant_id, key)
    if existing is None:  # released between our insert and read: the key is free again
        if await repository.insert_if_absent(fresh):
            return Claimed(fresh["id"])
        raise _in_use(key)
    expired = existing.expire_time <= now
    abandoned = existing.state == "in_progress" and existing.lease_expire_time <= now
    if expired or abandoned:
        replacement = {k: v for k, v in fresh.items() if k not in ("tenant_id", "key")}
        if await repository.take_over(tenant_id, key, existing.id, replacement):
            return Claimed(fresh["id"])
        raise _in_use(key)
    if existing.fingerprint != request_fingerprint:
        raise AlreadyExists(
            "this Idempotency-Key was already used with a different request",
            reason="IDEMPOTENCY_KEY_REUSED",
            metadata={"idempotencyKey": key},
        )
    if existing.state == "completed" and existing.response is not None:
        return Replay(existing.response)
    raise _in_use(key)


def _in_use(key: str) -> Aborted:
    return Aborted(
        "a request with this Idempotency-Key is still running; retry shortly to get its result",
        reason="IDEMPOTENCY_KEY_IN_USE",
        metadata={"idempotencyKey": key},
    )
