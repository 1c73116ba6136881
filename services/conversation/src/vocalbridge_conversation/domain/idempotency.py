"""Idempotency keys as values: a key's record, its states, the fingerprint of a
request and what a valid key is. The rules for claiming one are in
`service.idempotency`."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from vocalbridge_common.errors import Aborted, FieldViolation, InvalidArgument
from vocalbridge_common.headers import IDEMPOTENCY_KEY_HEADER

MAX_KEY_LENGTH = 255


class KeyState(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


@dataclass(frozen=True)
class IdempotencyRecord:
    """One claim of a tenant's key (the tenant is the repository's)."""

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


def fingerprint(operation: str, **request: object) -> str:
    """A digest of what the request asks for; equal requests have equal digests."""
    canonical = json.dumps({"op": operation, **request}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: str | None) -> str:
    if not key:
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


class ClaimLost(Aborted):
    """This request's claim on its key was taken over (its lease ran out while it was still
    running, and a retry claimed the key): the retry's turn is the one stored and billed."""

    default_reason = "IDEMPOTENCY_KEY_IN_USE"

    def __init__(self, key: str) -> None:
        super().__init__(
            "a retry with this Idempotency-Key took it over while this request was still running; "
            "retry shortly to get the retry's result",
            metadata={"idempotencyKey": key},
        )
