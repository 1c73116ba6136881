"""Bad audio, idempotency, tenants, identity and the standalone engines, against the real servers."""

from __future__ import annotations

import asyncio
import base64
import io
import wave

import grpc
import pytest
from prometheus_client import REGISTRY

from tests.integration.voice.conftest import with_key
from tests.support import error_reason
from vocalbridge.agents.v1 import agent_pb2
from vocalbridge.billing.v1 import billing_service_pb2
from vocalbridge.conversation.v1 import conversation_service_pb2
from vocalbridge.voice.v1 import audio_pb2
from vocalbridge.voice.v1 import voice_service_pb2 as pb
from vocalbridge_common.ids import new_id


def wav(samples: bytes, rate: int = 16000, width: int = 2, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(samples)
    return buffer.getvalue()


async def _nothing_stored_or_billed(conversation, billing, session, md):
    messages = await conversation.ListMessages(
        conversation_service_pb2.ListMessagesRequest(parent=session.name), metadata=md
    )
    assert list(messages.messages) == []
    await asyncio.sleep(0.3)  # two relay rounds: anything queued would have reached billing
    events = await billing.ListUsageEvents(billing_service_pb2.ListUsageEventsRequest(), metadata=md)
    assert list(events.usage_events) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "AUDIO_EMPTY"),
        (b"ID3\x03 this is an mp3, not a wav file", "AUDIO_NOT_WAV"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt garbage", "AUDIO_NOT_WAV"),
        (wav(b"\0" * 16000, width=1), "AUDIO_SAMPLE_WIDTH_UNSUPPORTED"),
        (wav(b"\0\0" * 16000, rate=12345), "AUDIO_SAMPLE_RATE_UNSUPPORTED"),
        (wav(b"\0\0" * 16000 * 61), "AUDIO_TOO_LONG"),
        (wav(b"\0\0" * 16000), "NO_SPEECH_RECOGNIZED"),  # a second of silence
    ],
    ids=["empty", "not-wav", "corrupt-header", "8-bit", "odd-rate", "too-long", "silence"],
)
async def test_bad_audio_is_refused_with_a_reason_and_nothing_is_stored_or_billed(
    voice, conversation, billing, new_session, md, content, reason
):
    _, session = await new_session()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await voice.Converse(
            pb.ConverseRequest(session=session.name, audio=audio_pb2.Audio(content=content)),
            metadata=with_key(md, "bad"),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == reason
    await _nothing_stored_or_billed(conversation, billing, session, md)


async def test_converse_needs_an_idempotency_key(voice, new_session, spoken, md):
    _, session = await new_session()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await voice.Converse(
            pb.ConverseRequest(session=session.name, audio=audio_pb2.Audio(content=await spoken("Hello there."))),
            metadata=md,
        )
    assert error_reason(caught.value) == "IDEMPOTENCY_KEY_REQUIRED"


async def test_an_idempotent_replay_returns_the_same_reply_and_bills_nothing_more(
    voice, conversation, billing, new_session, spoken, md
):
    _, session = await new_session()
    request = pb.ConverseRequest(
        session=session.name, audio=audio_pb2.Audio(content=await spoken("What time do you open tomorrow?"))
    )
    first = await voice.Converse(request, metadata=with_key(md, "same"))
    call = voice.Converse(request, metadata=with_key(md, "same"))
    again = await call
    assert ("idempotent-replayed", "true") in tuple(await call.initial_metadata())
    assert (again.transcript, again.reply_text, again.usage) == (first.transcript, first.reply_text, first.usage)
    assert again.reply_audio.content  # spoken again from the stored reply
    messages = await conversation.ListMessages(
        conversation_service_pb2.ListMessagesRequest(parent=session.name), metadata=md
    )
    assert len(messages.messages) == 2
    await asyncio.sleep(0.3)
    events = await billing.ListUsageEvents(
        billing_service_pb2.ListUsageEventsRequest(session=session.name), metadata=md
    )
    assert len(events.usage_events) == 1
    assert events.usage_events[0].tts_characters == len(first.reply_text)


async def test_tenant_b_cannot_speak_into_tenant_a_session(voice, conversation, new_session, spoken, as_tenant, md):
    _, session = await new_session()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await voice.Converse(
            pb.ConverseRequest(session=session.name, audio=audio_pb2.Audio(content=await spoken("Hello there."))),
            metadata=with_key(as_tenant("ten_intruder"), "b-1"),
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "SESSION_NOT_FOUND"
    messages = await conversation.ListMessages(
        conversation_service_pb2.ListMessagesRequest(parent=session.name), metadata=md
    )
    assert list(messages.messages) == []


async def test_an_agent_voice_that_is_not_installed_fails_before_any_turn(voice, conversation, new_session, spoken, md):
    _, session = await new_session(voice=agent_pb2.VoiceSettings(voice="piper/en_GB-nobody-low"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await voice.Converse(
            pb.ConverseRequest(session=session.name, audio=audio_pb2.Audio(content=await spoken("Hello there."))),
            metadata=with_key(md, "v-1"),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "AGENT_VOICE_NOT_INSTALLED"
    messages = await conversation.ListMessages(
        conversation_service_pb2.ListMessagesRequest(parent=session.name), metadata=md
    )
    assert list(messages.messages) == []


async def _voice_events(billing, md, count: int):
    for _ in range(100):
        events = (await billing.ListUsageEvents(billing_service_pb2.ListUsageEventsRequest(), metadata=md)).usage_events
        if len(events) >= count:
            return events
        await asyncio.sleep(0.05)
    return events


async def test_transcribe_and_synthesize_are_billed_once_per_key(voice, billing, spoken, md):
    audio = await spoken("Good morning everyone.")
    transcribed = await voice.Transcribe(
        pb.TranscribeRequest(audio=audio_pb2.Audio(content=audio)), metadata=with_key(md, "t")
    )
    assert "morning" in transcribed.transcript and transcribed.usage.audio_seconds > 0.5
    call = voice.Transcribe(pb.TranscribeRequest(audio=audio_pb2.Audio(content=audio)), metadata=with_key(md, "t"))
    assert await call == transcribed
    assert ("idempotent-replayed", "true") in tuple(await call.initial_metadata())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await voice.Transcribe(
            pb.TranscribeRequest(audio=audio_pb2.Audio(content=await spoken("Something else."))),
            metadata=with_key(md, "t"),
        )
    assert error_reason(caught.value) == "IDEMPOTENCY_KEY_REUSED"
    said = await voice.Synthesize(pb.SynthesizeRequest(text="Hello there", voice="en-us"), metadata=with_key(md, "s"))
    assert said.usage.tts_characters == 11 and said.usage.cost_micros == 11 * 15
    assert (
        await voice.Synthesize(pb.SynthesizeRequest(text="Hello there", voice="en-us"), metadata=with_key(md, "s"))
        == said
    )
    events = await _voice_events(billing, md, 2)
    await asyncio.sleep(0.2)
    events = (await billing.ListUsageEvents(billing_service_pb2.ListUsageEventsRequest(), metadata=md)).usage_events
    assert sorted((e.audio_seconds > 0, e.tts_characters, e.agent, e.session) for e in events) == [
        (False, 11, "", ""),
        (True, 0, "", ""),
    ]
    assert {e.cost_micros for e in events} == {transcribed.usage.cost_micros, said.usage.cost_micros}


def _piper_syntheses() -> float:
    """Piper jobs this process's voice server ran so far (its real-time-factor histogram)."""
    labels = {"kind": "tts", "engine": "piper"}
    return REGISTRY.get_sample_value("vocalbridge_voice_real_time_factor_count", labels) or 0.0


async def test_concurrent_requests_with_one_key_run_and_bill_once(voice, billing, as_tenant):
    """Standalone speech follows the turn's idempotency rules: a request claims its key before
    any engine runs, so a second one with the key while the first runs is told the key is in
    use (or, once the first has finished, gets its response): never a second synthesis or bill."""
    md = as_tenant(new_id("ten"))
    text = "A longer sentence, spoken in the natural voice, so that the first request is still running."
    request = pb.SynthesizeRequest(text=text, voice="piper/en_US-joe-medium")
    syntheses = _piper_syntheses()
    outcomes = await asyncio.gather(
        *(voice.Synthesize(request, metadata=with_key(md, "together")) for _ in range(3)), return_exceptions=True
    )
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert done and all(o == done[0] for o in done)
    assert all(error_reason(o) == "IDEMPOTENCY_KEY_IN_USE" for o in refused)
    assert await voice.Synthesize(request, metadata=with_key(md, "together")) == done[0]  # a replay now
    assert _piper_syntheses() == syntheses + 1  # the engine ran once
    events = await _voice_events(billing, md, 1)
    await asyncio.sleep(0.2)  # a few more relay rounds: nothing else arrives
    events = (await billing.ListUsageEvents(billing_service_pb2.ListUsageEventsRequest(), metadata=md)).usage_events
    assert [e.tts_characters for e in events] == [len(text)]


async def test_synthesize_refuses_voices_that_are_not_installed_with_field_violations(voice, md):
    from tests.support import violated_fields

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await voice.Synthesize(pb.SynthesizeRequest(text="", voice="klingon", words_per_minute=20), metadata=md)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == {"text", "voice", "words_per_minute"}


async def test_a_forged_identity_is_refused_on_every_rpc_kind(voice, signer):
    from tests.conftest import TEST_IDENTITY_SECRET  # noqa: F401 - the real secret is not used below
    from vocalbridge_common.identity import IdentitySigner

    forged = (("x-vb-identity", IdentitySigner(b"not-the-secret-" * 3).mint("ten_victim", "key_x", ("admin",))),)
    unary = [
        voice.Converse(
            pb.ConverseRequest(session="sessions/ses_x", audio=audio_pb2.Audio(content=wav(b"\0\0"))), metadata=forged
        ),
        voice.Transcribe(pb.TranscribeRequest(audio=audio_pb2.Audio(content=wav(b"\0\0"))), metadata=forged),
        voice.Synthesize(pb.SynthesizeRequest(text="hi"), metadata=forged),
    ]
    for call in unary:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(caught.value) == "INVALID_IDENTITY"

    async def requests():
        yield pb.StreamingConverseRequest(
            config=pb.StreamingConverseConfig(session="sessions/ses_x", sample_rate_hertz=16000)
        )

    for metadata in (forged, ()):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in voice.StreamingConverse(requests(), metadata=metadata):
                pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_read_only_key_cannot_speak(voice, as_tenant, tenant):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await voice.Synthesize(pb.SynthesizeRequest(text="hi"), metadata=as_tenant(tenant, ("read",)))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_base64_is_the_json_form_of_audio():
    # The JSON mapping of `bytes` (what Envoy transcodes) is standard base64.
    assert base64.b64decode(base64.b64encode(wav(b"\0\0"))) == wav(b"\0\0")


async def test_a_stereo_recording_is_mixed_down_and_heard(voice, spoken, md):
    from tests.integration.voice.conftest import wav_frames

    mono, rate = wav_frames(await spoken("Good morning everyone."))
    # Both channels carry the voice (as a stereo microphone would).
    stereo = b"".join(mono[i : i + 2] * 2 for i in range(0, len(mono), 2))
    heard = await voice.Transcribe(
        pb.TranscribeRequest(audio=audio_pb2.Audio(content=wav(stereo, rate=rate, channels=2))), metadata=md
    )
    assert "morning" in heard.transcript
    assert heard.usage.audio_seconds == pytest.approx(len(mono) / 2 / rate, abs=0.01)
