"""VoiceService over gRPC: protobuf ⇄ domain, nothing else. The tenant comes from the
caller's verified identity and is handed to every use case."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from vocalbridge.voice.v1 import voice_service_pb2 as pb
from vocalbridge.voice.v1 import voice_service_pb2_grpc
from vocalbridge_common.clients import remaining_timeout
from vocalbridge_common.context import current_tenant_id
from vocalbridge_common.errors import FieldViolation, InvalidArgument
from vocalbridge_common.headers import IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER
from vocalbridge_voice import presenters
from vocalbridge_voice.service.converse import ConverseService
from vocalbridge_voice.service.standalone import Replay, StandaloneService
from vocalbridge_voice.service.streaming import StreamConfig, StreamingService
from vocalbridge_voice.service.voices import VoiceListService

Context = grpc.aio.ServicerContext[Any, Any]
REPLAYED = ((IDEMPOTENT_REPLAYED_HEADER, "true"),)
# A spoken turn may take a while (speech-to-text, a provider with retries, text-to-speech).
TURN_TIMEOUT_SECONDS = 60.0


def _idempotency_key(context: Context) -> str | None:
    found = None
    for key, value in context.invocation_metadata() or ():
        if key == IDEMPOTENCY_KEY_HEADER and isinstance(value, str):
            found = value
    return found


def _config_required(field: str = "config") -> InvalidArgument:
    return InvalidArgument(
        "the first message of the stream must be its config, and only the first",
        reason="STREAM_CONFIG_REQUIRED",
        field_violations=[FieldViolation(field, "must be sent first, and once")],
    )


async def _audio_after_config(requests: AsyncIterator[pb.StreamingConverseRequest]) -> AsyncIterator[bytes]:
    async for request in requests:
        if request.HasField("config"):
            raise _config_required()
        yield request.audio


class VoiceServicer(voice_service_pb2_grpc.VoiceServiceServicer):
    def __init__(
        self,
        converse: ConverseService,
        standalone: StandaloneService,
        streaming: StreamingService,
        voices: VoiceListService,
    ) -> None:
        self._converse = converse
        self._standalone = standalone
        self._streaming = streaming
        self._voices = voices

    async def Converse(self, request: pb.ConverseRequest, context: Context) -> pb.ConverseResponse:
        spoken = await self._converse.converse(
            current_tenant_id(),
            request.session,
            request.audio.content,
            _idempotency_key(context),
            remaining_timeout(context, TURN_TIMEOUT_SECONDS),
        )
        if spoken.turn.replayed:
            await context.send_initial_metadata(REPLAYED)
        return presenters.converse_response(spoken)

    async def Transcribe(self, request: pb.TranscribeRequest, context: Context) -> pb.TranscribeResponse:
        result = await self._standalone.transcribe(
            current_tenant_id(), request.audio.content, _idempotency_key(context)
        )
        if isinstance(result, Replay):
            await context.send_initial_metadata(REPLAYED)
            return pb.TranscribeResponse.FromString(result.response)
        return pb.TranscribeResponse.FromString(presenters.transcription_bytes(result))

    async def Synthesize(self, request: pb.SynthesizeRequest, context: Context) -> pb.SynthesizeResponse:
        result = await self._standalone.synthesize(
            current_tenant_id(), request.text, request.voice, request.words_per_minute, _idempotency_key(context)
        )
        if isinstance(result, Replay):
            await context.send_initial_metadata(REPLAYED)
            return pb.SynthesizeResponse.FromString(result.response)
        return pb.SynthesizeResponse.FromString(presenters.synthesis_bytes(result))

    async def ListVoices(self, request: pb.ListVoicesRequest, context: Context) -> pb.ListVoicesResponse:
        return presenters.voices_response(self._voices.list_voices(request.page_size, request.page_token))

    async def StreamingConverse(
        self, request_iterator: AsyncIterator[pb.StreamingConverseRequest], context: Context
    ) -> AsyncIterator[pb.StreamingConverseResponse]:
        tenant_id = current_tenant_id()
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("config"):
            raise _config_required()
        config = StreamConfig(first.config.session, first.config.sample_rate_hertz)
        async for event in self._streaming.run(tenant_id, config, _audio_after_config(request_iterator)):
            yield presenters.stream_event(event)
