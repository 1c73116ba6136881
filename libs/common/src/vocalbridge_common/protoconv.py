"""Conversions between protobuf well-known types and Python values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

# What an unset Timestamp means where a time is required.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.astimezone(UTC)  # a naive time is local time, as datetime.astimezone has it
    # Integer arithmetic (exact, and cheaper than Timestamp.FromDatetime's time tuples).
    seconds, micros = divmod((value - EPOCH) // _MICROSECOND, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=micros * 1000)


def from_timestamp(message: Message, field: str) -> datetime | None:
    """The datetime in `message.<field>`, or None when the field is unset."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def to_duration(nanoseconds: int) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(nanoseconds))
    return value
