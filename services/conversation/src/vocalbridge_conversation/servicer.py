"""ConversationService RPCs: protobuf ⇄ service layer, nothing else."""

from __future__ import annotations

import time

from vocalbridge.conversation.v1 import conversation_service_pb2, conversation_service_pb2_grpc
from vocalbridge_common.clients import remaining_timeout
from vocalbridge_common.context import current_tenant_id
from vocalbridge_conversation import idempotency
from vocalbridge_conversation.presenters import message_to_proto, session_to_proto
from vocalbridge_conversation.service import ConversationService, TurnRequest, VoiceInput

REPLAYED_HEADER = "idempotent-replayed"


def _deadline(context) -> float | None:
    """The caller's deadline on the monotonic clock the delivery engine uses."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _idempotency_key(context) -> str | None:
    return dict(context.invocation_metadata()).get(idempotency.HEADER)


class ConversationServicer(conversation_service_pb2_grpc.ConversationServiceServicer):
    def __init__(self, service: ConversationService) -> None:
        self._service = service

    async def CreateSession(self, request, context):
        row = await self._service.create_session(current_tenant_id(), request.session, remaining_timeout(context))
        return session_to_proto(row)

    async def GetSession(self, request, context):
        return session_to_proto(await self._service.get_session(current_tenant_id(), request.name))

    async def ListSessions(self, request, context):
        page = await self._service.list_sessions(
            current_tenant_id(), request.agent, request.page_size, request.page_token
        )
        return conversation_service_pb2.ListSessionsResponse(
            sessions=[session_to_proto(row) for row in page.items], next_page_token=page.next_page_token
        )

    async def ListMessages(self, request, context):
        page = await self._service.list_messages(
            current_tenant_id(), request.parent, request.page_size, request.page_token
        )
        return conversation_service_pb2.ListMessagesResponse(
            messages=[message_to_proto(row) for row in page.items], next_page_token=page.next_page_token
        )

    async def SendMessage(self, request, context):
        voice = None
        if request.HasField("voice"):
            voice = VoiceInput(request.voice.audio_seconds, request.voice.speech_provider)
        turn = TurnRequest(current_tenant_id(), request.session, request.content, _idempotency_key(context), voice)
        response, replayed = await self._service.send_message(turn, _deadline(context))
        if replayed:
            await context.send_initial_metadata(((REPLAYED_HEADER, "true"),))
        return response

    async def StreamMessage(self, request, context):
        turn = TurnRequest(current_tenant_id(), request.session, request.content, _idempotency_key(context))
        events, replayed = await self._service.stream_message(turn, _deadline(context))
        if replayed:
            await context.send_initial_metadata(((REPLAYED_HEADER, "true"),))
        async for event in events:
            yield event
