"""Values more than one service stores, sends or groups by: the channel of a turn
and the outcome of a delivery attempt. Defined once; their protobuf enums
(`conversation.v1.Channel`, `conversation.v1.AttemptOutcome`) are converted here
and nowhere else."""

from __future__ import annotations

import enum
from typing import cast

from vocalbridge.conversation.v1 import delivery_pb2, session_pb2


class Channel(enum.StrEnum):
    """How a turn reached the gateway. The value is the protobuf value's name: what
    databases store, what usage is grouped by (`groupBy=CHANNEL` keys) and what JSON shows."""

    TEXT = "CHANNEL_TEXT"
    VOICE = "CHANNEL_VOICE"

    def to_proto(self) -> session_pb2.Channel:
        return cast(session_pb2.Channel, session_pb2.Channel.Value(self.value))

    @classmethod
    def from_proto(cls, value: int, *, default: Channel | None = None) -> Channel | None:
        """The channel of a protobuf value; `default` for CHANNEL_UNSPECIFIED, None for an unknown number."""
        if value == session_pb2.CHANNEL_UNSPECIFIED:
            return default
        if value not in session_pb2.Channel.values():
            return None
        return cls(session_pb2.Channel.Name(value))


class AttemptOutcome(enum.StrEnum):
    """What one delivery attempt came to. The value (stored in the ledger, shown in the
    provider performance report) is the protobuf name without its `ATTEMPT_OUTCOME_` prefix."""

    SUCCESS = "SUCCESS"
    UNAVAILABLE = "UNAVAILABLE"
    TIMEOUT = "TIMEOUT"
    RATE_LIMITED = "RATE_LIMITED"
    BAD_REQUEST = "BAD_REQUEST"
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    PROVIDER_ERROR = "PROVIDER_ERROR"

    @property
    def is_failure(self) -> bool:
        """A real call that failed; an open circuit made no call and is not the provider's failure."""
        return self not in (AttemptOutcome.SUCCESS, AttemptOutcome.CIRCUIT_OPEN)

    def to_proto(self) -> delivery_pb2.AttemptOutcome:
        return cast(delivery_pb2.AttemptOutcome, delivery_pb2.AttemptOutcome.Value(f"ATTEMPT_OUTCOME_{self.value}"))

    @classmethod
    def from_proto(cls, value: int) -> AttemptOutcome | None:
        """None for ATTEMPT_OUTCOME_UNSPECIFIED or a number this version does not know."""
        if value not in delivery_pb2.AttemptOutcome.values() or value == delivery_pb2.ATTEMPT_OUTCOME_UNSPECIFIED:
            return None
        return cls(delivery_pb2.AttemptOutcome.Name(value).removeprefix("ATTEMPT_OUTCOME_"))
