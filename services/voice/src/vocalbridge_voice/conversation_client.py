"""The conversation service as the voice service sees it: the one module that knows how a
spoken turn reaches it. Everything goes with the caller's identity, so the tenant, the
session's owner and the scopes are the caller's, exactly as for a text turn.

Today a spoken turn is SendMessage / StreamMessage with their `voice` field. When that
field moves to a path only this service may use, this module is the one place to change.

What a turn returns that the voice service only passes on (the delivery record, the usage)
stays serialized here (`bytes`), so the use cases never handle protobuf.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vocalbridge.conversation.v1 import conversation_service_pb2 as pb
from vocalbridge.conversation.v1 import conversation_service_pb2_grpc, delivery_pb2
from vocalbridge_common.clients import forwarded_metadata
from vocalbridge_common.errors import DomainError, FieldViolation, Unavailable
from vocalbridge_common.headers import IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER

# The reply stream is read only as fast as the reply is spoken (service/streaming.py). With
# gRPC's default flow-control window (64 KiB and growing) the conversation service would
# write the whole reply into the window at once and finish the turn before the caller heard
# its first sentence; with a window of a few bytes it produces each piece of text when this
# service takes the previous one, so cancelling the stream (barge-in) stops the reply there.
PACED_CHANNEL_OPTIONS = (("grpc.http2.lookahead_bytes", 1), ("grpc.http2.bdp_probe", 0))


@dataclass(frozen=True)
class SessionRef:
    """The session as a turn needs it: its agent version."""

    name: str
    agent: str
    agent_version: int


@dataclass(frozen=True)
class StoredTurn:
    """A turn the conversation service stored."""

    user_message: str  # resource names
    assistant_message: str
    transcript: str  # the user message's content
    reply_text: str
    delivery: bytes  # conversation.v1.Delivery, serialized
    usage: bytes  # conversation.v1.Usage, serialized
    replayed: bool = False


@dataclass(frozen=True)
class ReplyDelta:
    text: str
    restart: bool


class RemoteError(DomainError):
    """An error the conversation service returned, passed on to the caller as it was."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        status = rpc_status.from_call(cast(grpc.Call, error))
        reason, metadata = "UNAVAILABLE", {}
        violations: list[FieldViolation] = []
        details: list[Message] = []
        for detail in status.details if status is not None else ():
            info, bad_request, delivery = (
                error_details_pb2.ErrorInfo(),
                error_details_pb2.BadRequest(),
                delivery_pb2.Delivery(),
            )
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Unpack(bad_request):
                violations = [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
            elif detail.Unpack(delivery):
                details.append(delivery)  # a failed turn's attempts
        super().__init__(
            error.details() or "conversation error",
            reason=reason,
            metadata=metadata,
            field_violations=violations,
            details=details,
        )
        self.code = error.code()


def _translate(error: grpc.aio.AioRpcError) -> DomainError:
    if rpc_status.from_call(cast(grpc.Call, error)) is None:
        # Not the conversation service's own answer (it was unreachable, or timed out).
        return Unavailable(
            f"the conversation service could not be reached ({error.code().name})", reason="CONVERSATION_UNAVAILABLE"
        )
    return RemoteError(error)


def _stored(response: pb.SendMessageResponse | pb.StreamMessageResponse, replayed: bool) -> StoredTurn:
    return StoredTurn(
        user_message=response.user_message.name,
        assistant_message=response.assistant_message.name,
        transcript=response.user_message.content,
        reply_text=response.assistant_message.content,
        delivery=response.delivery.SerializeToString(),
        usage=response.usage.SerializeToString(),
        replayed=replayed,
    )


def _voice(audio_seconds: float, speech_provider: str) -> pb.VoiceTurn:
    return pb.VoiceTurn(audio_seconds=audio_seconds, speech_provider=speech_provider)


class ConversationTurns:
    def __init__(self, channel: grpc.aio.Channel, paced_channel: grpc.aio.Channel) -> None:
        self._stub = conversation_service_pb2_grpc.ConversationServiceStub(channel)
        self._paced = conversation_service_pb2_grpc.ConversationServiceStub(paced_channel)

    async def session(self, name: str, timeout: float) -> SessionRef:
        try:
            session = await self._stub.GetSession(
                pb.GetSessionRequest(name=name), metadata=forwarded_metadata(), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _translate(error) from None
        return SessionRef(session.name, session.agent, session.agent_version)

    async def send(
        self,
        session: str,
        transcript: str,
        audio_seconds: float,
        speech_provider: str,
        idempotency_key: str,
        timeout: float,
    ) -> StoredTurn:
        """One spoken turn, whole. A repeat of an idempotent request returns the stored turn."""
        call = self._stub.SendMessage(
            pb.SendMessageRequest(session=session, content=transcript, voice=_voice(audio_seconds, speech_provider)),
            metadata=(*forwarded_metadata(), (IDEMPOTENCY_KEY_HEADER, idempotency_key)),
            timeout=timeout,
        )
        try:
            response = await call
            initial: Any = await call.initial_metadata()
        except grpc.aio.AioRpcError as error:
            raise _translate(error) from None
        replayed = any(key == IDEMPOTENT_REPLAYED_HEADER and value == "true" for key, value in initial or ())
        return _stored(response, replayed)

    async def stream(
        self,
        session: str,
        transcript: str,
        audio_seconds: float,
        speech_provider: str,
        idempotency_key: str,
        timeout: float,
    ) -> AsyncIterator[ReplyDelta | StoredTurn]:
        """The reply as it is produced, then the stored turn. Leaving the iteration early
        cancels the call: the conversation service stores the reply as far as it was taken,
        marked truncated, and bills that much."""
        call = self._paced.StreamMessage(
            pb.StreamMessageRequest(session=session, content=transcript, voice=_voice(audio_seconds, speech_provider)),
            metadata=(*forwarded_metadata(), (IDEMPOTENCY_KEY_HEADER, idempotency_key)),
            timeout=timeout,
        )
        try:
            async for event in call:
                if event.HasField("assistant_message"):
                    yield _stored(event, replayed=False)
                else:
                    yield ReplyDelta(event.text_delta, event.restart)
        except grpc.aio.AioRpcError as error:
            raise _translate(error) from None
        finally:
            call.cancel()
