"""Converse against the real server: a spoken turn through the conversation service."""

from __future__ import annotations

from tests.integration.voice.conftest import wav_frames, with_key
from vocalbridge.conversation.v1 import conversation_service_pb2, message_pb2
from vocalbridge.voice.v1 import audio_pb2, voice_service_pb2


async def test_a_spoken_turn_is_transcribed_answered_spoken_and_stored(voice, conversation, new_session, spoken, md):
    _, session = await new_session()
    audio = await spoken("Please book a table for two tonight.")
    response = await voice.Converse(
        voice_service_pb2.ConverseRequest(session=session.name, audio=audio_pb2.Audio(content=audio)),
        metadata=with_key(md, "turn-1"),
    )
    # Piper's voice varies from one synthesis to the next; the recognizer may hear "two" as a homophone.
    words = set(response.transcript.lower().split())
    assert "table" in words and words & {"two", "to", "too", "2"}, response.transcript
    assert response.transcript in response.reply_text  # the simulated provider quotes the user
    samples, rate = wav_frames(response.reply_audio.content)
    assert rate == response.reply_audio.sample_rate_hertz == 22050
    assert len(samples) / 2 / rate > 1.0
    assert response.usage.audio_seconds > 1.0
    assert response.usage.tts_characters == len(response.reply_text)
    assert response.usage.completion_tokens > 0 and response.usage.cost_micros > 0
    assert response.delivery.provider == "vendorA"
    assert response.latency.total.ToNanoseconds() >= response.latency.speech_recognized.ToNanoseconds() > 0
    messages = await conversation.ListMessages(
        conversation_service_pb2.ListMessagesRequest(parent=session.name), metadata=md
    )
    assert [(m.role, m.content, m.channel) for m in messages.messages] == [
        (message_pb2.USER, response.transcript, 2),
        (message_pb2.ASSISTANT, response.reply_text, 2),
    ]
