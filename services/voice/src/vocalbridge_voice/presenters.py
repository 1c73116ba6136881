"""Protobuf messages built from the voice domain's values (and the conversation service's
serialized records, passed on as they came)."""

from __future__ import annotations

from google.protobuf import duration_pb2

from vocalbridge.billing.v1 import usage_event_pb2
from vocalbridge.conversation.v1 import delivery_pb2
from vocalbridge.voice.v1 import audio_pb2
from vocalbridge.voice.v1 import voice_service_pb2 as pb
from vocalbridge_common.price_protos import price_to_proto
from vocalbridge_common.protoconv import to_timestamp
from vocalbridge_common.vocabulary import Channel
from vocalbridge_voice.conversation_client import StoredTurn
from vocalbridge_voice.domain.audio import Pcm, to_wav
from vocalbridge_voice.domain.turns import Latency
from vocalbridge_voice.domain.usage import SpeechUsage
from vocalbridge_voice.service import streaming
from vocalbridge_voice.service.converse import SpokenTurn
from vocalbridge_voice.service.standalone import Synthesis, Transcription
from vocalbridge_voice.service.voices import VoicePage


def voices_response(page: VoicePage) -> pb.ListVoicesResponse:
    variants = page.catalogue.variants
    return pb.ListVoicesResponse(
        voices=[
            pb.Voice(
                name=voice.qualified_name,
                engine=voice.engine,
                language=voice.language,
                variants=sorted(variants.get(voice.engine, ())),
            )
            for _, voice in page.voices.items
        ],
        next_page_token=page.voices.next_page_token,
        default_voice=page.catalogue.default_voice,
    )


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


def audio(pcm: Pcm) -> audio_pb2.Audio:
    return audio_pb2.Audio(content=to_wav(pcm), sample_rate_hertz=pcm.sample_rate, duration=duration(pcm.seconds))


def latency(value: Latency) -> pb.Latency:
    message = pb.Latency(speech_recognized=duration(value.speech_recognized))
    if value.first_reply_token is not None:
        message.first_reply_token.CopyFrom(duration(value.first_reply_token))
    if value.first_reply_audio is not None:
        message.first_reply_audio.CopyFrom(duration(value.first_reply_audio))
    if value.total is not None:
        message.total.CopyFrom(duration(value.total))
    return message


def _delivery(turn: StoredTurn) -> delivery_pb2.Delivery:
    return delivery_pb2.Delivery.FromString(turn.delivery)


def _turn_usage(turn: StoredTurn) -> delivery_pb2.Usage:
    return delivery_pb2.Usage.FromString(turn.usage)


def converse_response(spoken: SpokenTurn) -> pb.ConverseResponse:
    return pb.ConverseResponse(
        transcript=spoken.turn.transcript,
        reply_text=spoken.turn.reply_text,
        reply_audio=audio(spoken.reply_audio),
        delivery=_delivery(spoken.turn),
        usage=_turn_usage(spoken.turn),
        latency=latency(spoken.latency),
    )


def speech_usage(usage: SpeechUsage) -> delivery_pb2.Usage:
    return delivery_pb2.Usage(
        cost_micros=usage.charge.cost_micros,
        audio_seconds=float(usage.quantities.audio_seconds),
        tts_characters=usage.quantities.tts_characters,
    )


def transcription_bytes(result: Transcription) -> bytes:
    return pb.TranscribeResponse(
        transcript=result.transcript,
        audio_duration=duration(result.audio_seconds),
        usage=speech_usage(result.usage),
    ).SerializeToString()


def synthesis_bytes(result: Synthesis) -> bytes:
    return pb.SynthesizeResponse(audio=audio(result.audio), usage=speech_usage(result.usage)).SerializeToString()


def usage_event_bytes(usage: SpeechUsage) -> bytes:
    """The outbox payload: a billing.v1.UsageEvent with no agent, session or message."""
    return usage_event_pb2.UsageEvent(
        name=f"usageEvents/{usage.event_id}",
        tenant=f"tenants/{usage.tenant_id}",
        channel=Channel.VOICE.to_proto(),
        provider=usage.speech_provider,
        model=usage.engine,
        audio_seconds=float(usage.quantities.audio_seconds),
        tts_characters=usage.quantities.tts_characters,
        cost_micros=usage.charge.cost_micros,
        prices=[price_to_proto(row) for row in usage.charge.prices_used],
        event_time=to_timestamp(usage.event_time),
    ).SerializeToString()


def stream_event(event: streaming.StreamEvent) -> pb.StreamingConverseResponse:
    if isinstance(event, streaming.SpeechStarted):
        return pb.StreamingConverseResponse(speech_started=pb.SpeechStarted(audio_offset=duration(event.audio_offset)))
    if isinstance(event, streaming.PartialTranscript):
        return pb.StreamingConverseResponse(partial_transcript=pb.PartialTranscript(transcript=event.transcript))
    if isinstance(event, streaming.UtteranceEnded):
        return pb.StreamingConverseResponse(
            utterance_ended=pb.UtteranceEnded(transcript=event.transcript, audio_duration=duration(event.audio_seconds))
        )
    if isinstance(event, streaming.ReplyText):
        return pb.StreamingConverseResponse(reply_text=pb.ReplyText(text_delta=event.text_delta, restart=event.restart))
    if isinstance(event, streaming.ReplyAudio):
        return pb.StreamingConverseResponse(reply_audio=pb.ReplyAudio(audio=audio(event.audio), text=event.text))
    if isinstance(event, streaming.ReplyInterrupted):
        return pb.StreamingConverseResponse(reply_interrupted=pb.ReplyInterrupted(spoken_text=event.spoken_text))
    return pb.StreamingConverseResponse(
        turn_completed=pb.TurnCompleted(
            user_message=event.turn.user_message,
            assistant_message=event.turn.assistant_message,
            delivery=_delivery(event.turn),
            usage=_turn_usage(event.turn),
            latency=latency(event.latency),
        )
    )
