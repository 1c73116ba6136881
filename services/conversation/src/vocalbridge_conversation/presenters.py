"""Every protobuf message the conversation service builds from domain values: the
resources it serves, a turn's response and stream events, the delivery record (also
in a failed turn's error details) and the billing UsageEvent the outbox carries.

A turn's response is stored serialized (`send_response_bytes`) and served again, as
stored, to an idempotent replay (`send_response_from_bytes`, `replay_stream`)."""

from __future__ import annotations

from typing import cast

from google.protobuf import duration_pb2

from vocalbridge.billing.v1 import usage_event_pb2
from vocalbridge.conversation.v1 import conversation_service_pb2, delivery_pb2, message_pb2, session_pb2
from vocalbridge_common.price_protos import price_to_proto
from vocalbridge_common.protoconv import to_duration, to_timestamp
from vocalbridge_conversation.delivery import DeliveryResult, Delta, Restart
from vocalbridge_conversation.domain.sessions import Message, MessageStatus, Role, Session, agent_name, session_name
from vocalbridge_conversation.domain.turns import CompletedTurn, ReplyGenerated, TurnEvent, VoiceTurnEvent
from vocalbridge_conversation.domain.usage import TurnUsage, UsageRecord

SendMessageResponse = conversation_service_pb2.SendMessageResponse
StreamMessageResponse = conversation_service_pb2.StreamMessageResponse
StreamVoiceTurnResponse = conversation_service_pb2.StreamVoiceTurnResponse
VoiceTurnResult = conversation_service_pb2.VoiceTurnResult


def duration(seconds: float) -> duration_pb2.Duration:
    return to_duration(round(seconds * 1e9))


# -- resources ---------------------------------------------------------------------


def session_to_proto(session: Session) -> session_pb2.Session:
    return session_pb2.Session(
        name=session.name,
        agent=session.agent,
        agent_version=session.agent_version,
        channel=session.channel.to_proto(),
        external_user_id=session.external_user_id,
        metadata=dict(session.metadata),
        create_time=to_timestamp(session.create_time),
        update_time=to_timestamp(session.update_time),
    )


def role_to_proto(role: Role) -> message_pb2.Role:
    return cast(message_pb2.Role, message_pb2.Role.Value(role.name))


def status_to_proto(status: MessageStatus) -> message_pb2.MessageStatus:
    return cast(message_pb2.MessageStatus, message_pb2.MessageStatus.Value(f"MESSAGE_STATUS_{status.name}"))


def message_to_proto(message: Message) -> message_pb2.Message:
    return message_pb2.Message(
        name=message.name,
        role=role_to_proto(message.role),
        content=message.content,
        status=status_to_proto(message.status),
        channel=message.channel.to_proto(),
        create_time=to_timestamp(message.create_time),
    )


# -- a turn ------------------------------------------------------------------------


def delivery_to_proto(result: DeliveryResult) -> delivery_pb2.Delivery:
    return delivery_pb2.Delivery(
        provider=result.provider,
        model=result.model,
        fallback_used=result.fallback_used,
        latency=duration(result.latency),
        attempts=[
            delivery_pb2.Attempt(
                provider=attempt.provider,
                outcome=attempt.outcome.to_proto(),
                latency=duration(attempt.latency),
                backoff=duration(attempt.backoff),
                error_message=attempt.error_message,
            )
            for attempt in result.attempts
        ],
    )


def usage_to_proto(usage: TurnUsage) -> delivery_pb2.Usage:
    quantities = usage.quantities
    return delivery_pb2.Usage(
        prompt_tokens=quantities.prompt_tokens,
        completion_tokens=quantities.completion_tokens,
        cost_micros=usage.cost_micros,
        audio_seconds=float(quantities.audio_seconds),
        tts_characters=quantities.tts_characters,
    )


def send_response(turn: CompletedTurn) -> conversation_service_pb2.SendMessageResponse:
    return SendMessageResponse(
        user_message=message_to_proto(turn.user_message),
        assistant_message=message_to_proto(turn.assistant_message),
        delivery=delivery_to_proto(turn.delivery),
        usage=usage_to_proto(turn.usage),
    )


def send_response_bytes(turn: CompletedTurn) -> bytes:
    """What an idempotency key stores for a completed turn."""
    return send_response(turn).SerializeToString()


def send_response_from_bytes(stored: bytes) -> conversation_service_pb2.SendMessageResponse:
    return SendMessageResponse.FromString(stored)


def _final_event(response: conversation_service_pb2.SendMessageResponse) -> StreamMessageResponse:
    return StreamMessageResponse(
        user_message=response.user_message,
        assistant_message=response.assistant_message,
        delivery=response.delivery,
        usage=response.usage,
    )


def completed_response(turn: CompletedTurn) -> conversation_service_pb2.SendMessageResponse:
    """A stored turn's response: parsed from what was stored (the same message, for less work
    than building it again)."""
    return send_response_from_bytes(turn.stored_response) if turn.stored_response else send_response(turn)


def stream_event(event: TurnEvent) -> conversation_service_pb2.StreamMessageResponse:
    if isinstance(event, Delta):
        return StreamMessageResponse(text_delta=event.text)
    if isinstance(event, Restart):
        return StreamMessageResponse(restart=True)
    return _final_event(completed_response(event))


def replay_stream(stored: bytes) -> list[conversation_service_pb2.StreamMessageResponse]:
    """A stored turn as a stream: the whole reply as one delta, then the final event."""
    response = send_response_from_bytes(stored)
    return [StreamMessageResponse(text_delta=response.assistant_message.content), _final_event(response)]


def voice_event(event: VoiceTurnEvent) -> conversation_service_pb2.StreamVoiceTurnResponse:
    if isinstance(event, Delta):
        return StreamVoiceTurnResponse(text_delta=event.text)
    if isinstance(event, Restart):
        return StreamVoiceTurnResponse(restart=True)
    if isinstance(event, ReplyGenerated):
        return StreamVoiceTurnResponse(
            reply_generated=conversation_service_pb2.ReplyGenerated(characters=event.characters)
        )
    return StreamVoiceTurnResponse(result=VoiceTurnResult(turn=completed_response(event)))


def voice_replay(stored: bytes) -> conversation_service_pb2.StreamVoiceTurnResponse:
    """A stored spoken turn, whole, at once."""
    return StreamVoiceTurnResponse(result=VoiceTurnResult(turn=send_response_from_bytes(stored), replayed=True))


# -- billing -----------------------------------------------------------------------


def usage_event(record: UsageRecord) -> usage_event_pb2.UsageEvent:
    quantities = record.usage.quantities
    return usage_event_pb2.UsageEvent(
        name=f"usageEvents/{record.event_id}",
        tenant=f"tenants/{record.tenant_id}",
        agent=agent_name(record.agent_id),
        agent_version=record.agent_version,
        session=session_name(record.session_id) if record.session_id else "",  # "": a completion outside sessions
        message=record.message_name,
        channel=record.channel.to_proto(),
        provider=record.provider,
        model=record.model,
        prompt_tokens=quantities.prompt_tokens,
        completion_tokens=quantities.completion_tokens,
        audio_seconds=float(quantities.audio_seconds),
        tts_characters=quantities.tts_characters,
        cost_micros=record.usage.cost_micros,
        prices=[price_to_proto(row) for row in record.usage.charge.prices_used],
        event_time=to_timestamp(record.event_time),
        delivery=delivery_to_proto(record.delivery),
    )


def usage_event_bytes(record: UsageRecord) -> bytes:
    """The outbox payload of a turn: a serialized billing.v1.UsageEvent."""
    return usage_event(record).SerializeToString()
