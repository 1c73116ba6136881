"""Rows and delivery results as protobuf messages. Shared by the servicer and by
the service, which stores each turn's response for idempotent replays."""

from __future__ import annotations

import json

from google.protobuf import duration_pb2

from vocalbridge.conversation.v1 import delivery_pb2, message_pb2, session_pb2
from vocalbridge_common.protoconv import to_duration, to_timestamp
from vocalbridge_conversation.delivery import DeliveryResult
from vocalbridge_conversation.models import MessageRow, SessionRow


def duration(seconds: float) -> duration_pb2.Duration:
    return to_duration(round(seconds * 1e9))


def session_to_proto(row: SessionRow) -> session_pb2.Session:
    return session_pb2.Session(
        name=f"sessions/{row.id}",
        agent=f"agents/{row.agent_id}",
        agent_version=row.agent_version,
        channel=row.channel,
        external_user_id=row.external_user_id,
        metadata=json.loads(row.metadata_json),
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
    )


def message_to_proto(row: MessageRow) -> message_pb2.Message:
    return message_pb2.Message(
        name=f"sessions/{row.session_id}/messages/{row.id}",
        role=row.role,
        content=row.content,
        status=row.status,
        channel=row.channel,
        create_time=to_timestamp(row.create_time),
    )


def delivery_to_proto(result: DeliveryResult) -> delivery_pb2.Delivery:
    return delivery_pb2.Delivery(
        provider=result.provider,
        model=result.model,
        fallback_used=result.fallback_used,
        latency=duration(result.latency),
        attempts=[
            delivery_pb2.Attempt(
                provider=attempt.provider,
                outcome=delivery_pb2.AttemptOutcome.Value(f"ATTEMPT_OUTCOME_{attempt.outcome.name}"),
                latency=duration(attempt.latency),
                backoff=duration(attempt.backoff),
                error_message=attempt.error_message,
            )
            for attempt in result.attempts
        ],
    )
