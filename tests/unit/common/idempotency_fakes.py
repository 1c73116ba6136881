"""Test doubles for the common idempotency rules: a wall clock that only moves when told, and
an in-memory key store with the repositories' semantics. Used by the rules' own tests and by
every service's use-case tests."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from vocalbridge_common.idempotency import IdempotencyRecord, KeyState


class FakeClock:
    """Wall-clock time (aware datetimes) that only moves when a test advances it."""

    def __init__(self, start: datetime = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


class FakeIdempotencyStore:
    """One tenant's keys in memory, with the repository's semantics: one record per key
    (the unique constraint), take-over only of the record the caller saw, and complete /
    release acting on a record id, never on a key, and only while it is unfinished."""

    def __init__(self) -> None:
        self.records: dict[str, IdempotencyRecord] = {}

    async def insert_if_absent(self, record: IdempotencyRecord) -> bool:
        if record.key in self.records:
            return False
        self.records[record.key] = record
        return True

    async def get(self, key: str) -> IdempotencyRecord | None:
        return self.records.get(key)

    async def take_over(self, key: str, old_id: str, record: IdempotencyRecord) -> bool:
        current = self.records.get(key)
        if current is None or current.id != old_id:
            return False
        self.records[key] = record
        return True

    def _key_of(self, record_id: str) -> str | None:
        return next((key for key, record in self.records.items() if record.id == record_id), None)

    def _unfinished(self, record_id: str) -> str | None:
        key = self._key_of(record_id)
        return key if key is not None and self.records[key].state is KeyState.IN_PROGRESS else None

    async def complete(self, record_id: str, response: bytes) -> bool:
        key = self._unfinished(record_id)
        if key is not None:
            self.records[key] = dataclasses.replace(self.records[key], state=KeyState.COMPLETED, response=response)
        return key is not None

    async def release(self, record_id: str) -> bool:
        key = self._unfinished(record_id)
        if key is not None:
            del self.records[key]
        return key is not None
