"""ConversationService over gRPC: protobuf ⇄ domain, nothing else. The tenant comes
from the caller's verified identity and is handed to every use case."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from vocalbridge.conversation.v1 import conversation_service_pb2 as pb
from vocalbridge.conversation.v1 import conversation_service_pb2_grpc, session_pb2
from vocalbridge_common.clients import remaining_timeout
from vocalbridge_common.context import current_tenant_id
from vocalbridge_common.errors import FieldViolation, InvalidArgument
from vocalbridge_common.headers import IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER
from vocalbridge_common.idempotency import Replay
from vocalbridge_common.vocabulary import Channel
from vocalbridge_conversation import presenters
from vocalbridge_conversation.domain.sessions import DEFAULT_CHANNEL, NewSession
from vocalbridge_conversation.domain.turns import Playback, ProvidersExhausted, TurnRequest, VoiceInput
from vocalbridge_conversation.service.sessions import SessionService
from vocalbridge_conversation.service.turns import TurnService

Context = grpc.aio.ServicerContext[Any, Any]

REPLAYED = ((IDEMPOTENT_REPLAYED_HEADER, "true"),)


def _deadline(context: Context) -> float | None:
    """The caller's deadline on the monotonic clock the delivery engine uses."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _idempotency_key(context: Context) -> str | None:
    found = None
    for key, value in context.invocation_metadata() or ():
        if key == IDEMPOTENCY_KEY_HEADER and isinstance(value, str):
            found = value  # the last one, if a client sent several
    return found


def _voice_turn(request: pb.StreamVoiceTurnRequest, key: str | None) -> TurnRequest:
    if not request.HasField("turn"):
        raise InvalidArgument(
            "the first message of a voice turn must be the turn, and only the first",
            reason="VOICE_TURN_REQUIRED",
            field_violations=[FieldViolation("turn", "must be sent first, and once")],
        )
    turn = request.turn
    return TurnRequest(
        turn.session, turn.content, key, VoiceInput(turn.voice.audio_seconds, turn.voice.speech_provider)
    )


async def _playback(requests: AsyncIterator[pb.StreamVoiceTurnRequest]) -> Playback:
    """The voice service's next message: what the caller heard of the reply."""
    request = await anext(requests, None)
    if request is None or not request.HasField("playback"):
        raise InvalidArgument(
            "after the turn, the voice service sends the reply's playback, once",
            reason="PLAYBACK_REQUIRED",
            field_violations=[FieldViolation("playback", "must follow the turn")],
        )
    played = request.playback
    return Playback(played.interrupted, played.spoken_characters, played.restarts)


def new_session_from_proto(message: session_pb2.Session) -> NewSession:
    return NewSession(
        agent=message.agent,
        # None: a channel number this version does not know, refused by validation.
        channel=Channel.from_proto(message.channel, default=DEFAULT_CHANNEL),
        external_user_id=message.external_user_id,
        metadata=dict(message.metadata),
    )


@contextlib.contextmanager
def _delivery_in_error_details() -> Iterator[None]:
    """A turn no provider could answer fails with its delivery record in the status details."""
    try:
        yield
    except ProvidersExhausted as error:
        error.details = (*error.details, presenters.delivery_to_proto(error.delivery))
        raise


class ConversationServicer(conversation_service_pb2_grpc.ConversationServiceServicer):
    def __init__(self, sessions: SessionService, turns: TurnService) -> None:
        self._sessions = sessions
        self._turns = turns

    async def CreateSession(self, request: pb.CreateSessionRequest, context: Context) -> session_pb2.Session:
        session = await self._sessions.create_session(
            current_tenant_id(), new_session_from_proto(request.session), remaining_timeout(context)
        )
        return presenters.session_to_proto(session)

    async def GetSession(self, request: pb.GetSessionRequest, context: Context) -> session_pb2.Session:
        return presenters.session_to_proto(await self._sessions.get_session(current_tenant_id(), request.name))

    async def ListSessions(self, request: pb.ListSessionsRequest, context: Context) -> pb.ListSessionsResponse:
        page = await self._sessions.list_sessions(
            current_tenant_id(), request.agent, request.page_size, request.page_token
        )
        return pb.ListSessionsResponse(
            sessions=[presenters.session_to_proto(session) for session in page.items],
            next_page_token=page.next_page_token,
        )

    async def ListMessages(self, request: pb.ListMessagesRequest, context: Context) -> pb.ListMessagesResponse:
        page = await self._sessions.list_messages(
            current_tenant_id(), request.parent, request.page_size, request.page_token
        )
        return pb.ListMessagesResponse(
            messages=[presenters.message_to_proto(message) for message in page.items],
            next_page_token=page.next_page_token,
        )

    async def SendMessage(self, request: pb.SendMessageRequest, context: Context) -> pb.SendMessageResponse:
        turn = TurnRequest(request.session, request.content, _idempotency_key(context))
        with _delivery_in_error_details():
            outcome = await self._turns.send_message(current_tenant_id(), turn, _deadline(context))
        if isinstance(outcome, Replay):
            await context.send_initial_metadata(REPLAYED)
            return presenters.send_response_from_bytes(outcome.response)
        return presenters.completed_response(outcome)

    async def StreamMessage(
        self, request: pb.StreamMessageRequest, context: Context
    ) -> AsyncIterator[pb.StreamMessageResponse]:
        turn = TurnRequest(request.session, request.content, _idempotency_key(context))
        with _delivery_in_error_details():
            outcome = await self._turns.stream_message(current_tenant_id(), turn, _deadline(context))
            if isinstance(outcome, Replay):
                await context.send_initial_metadata(REPLAYED)
                for replayed in presenters.replay_stream(outcome.response):
                    yield replayed
                return
            async for event in outcome:
                yield presenters.stream_event(event)

    async def StreamVoiceTurn(
        self, request_iterator: AsyncIterator[pb.StreamVoiceTurnRequest], context: Context
    ) -> AsyncIterator[pb.StreamVoiceTurnResponse]:
        requests = aiter(request_iterator)
        turn = _voice_turn(await anext(requests, pb.StreamVoiceTurnRequest()), _idempotency_key(context))
        with _delivery_in_error_details():
            outcome = await self._turns.voice_turn(
                current_tenant_id(), turn, _deadline(context), lambda: _playback(requests)
            )
            if isinstance(outcome, Replay):
                yield presenters.voice_replay(outcome.response)
                return
            async for event in outcome:
                yield presenters.voice_event(event)
