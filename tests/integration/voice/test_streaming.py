"""StreamingConverse against the real servers: turns over one stream, and a barge-in that
stores and bills the interrupted reply cut at exactly what was spoken."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.integration.voice.conftest import wav_frames
from tests.support import error_reason
from vocalbridge.billing.v1 import billing_service_pb2
from vocalbridge.conversation.v1 import conversation_service_pb2, message_pb2
from vocalbridge.voice.v1 import voice_service_pb2 as pb
from vocalbridge_conversation.providers.base import count_tokens

SILENCE_SECONDS = 0.8


def chunks(samples: bytes, rate: int, seconds: float = 0.1):
    size = int(rate * seconds) * 2
    return [samples[i : i + size] for i in range(0, len(samples), size)]


class Caller:
    """A client of one stream: sends audio when told, collects every event."""

    def __init__(self, voice, metadata, session: str, rate: int) -> None:
        self.outgoing: asyncio.Queue = asyncio.Queue()
        self.outgoing.put_nowait(
            pb.StreamingConverseRequest(config=pb.StreamingConverseConfig(session=session, sample_rate_hertz=rate))
        )
        self.call = voice.StreamingConverse(self._requests(), metadata=metadata, timeout=60)
        self.events: list[pb.StreamingConverseResponse] = []

    async def _requests(self):
        while (item := await self.outgoing.get()) is not None:
            yield item

    def say(self, samples: bytes, rate: int, silence: float = SILENCE_SECONDS) -> None:
        for chunk in chunks(samples + b"\0\0" * int(rate * silence), rate):
            self.outgoing.put_nowait(pb.StreamingConverseRequest(audio=chunk))

    def hang_up(self) -> None:
        self.outgoing.put_nowait(None)

    async def until(self, kind: str, count: int = 1) -> pb.StreamingConverseResponse:
        seen = sum(1 for e in self.events if e.WhichOneof("event") == kind)
        async for event in self.call:
            self.events.append(event)
            if event.WhichOneof("event") == kind:
                seen += 1
                if seen >= count:
                    return event
        raise AssertionError(f"the stream ended before {count} {kind}: {[e.WhichOneof('event') for e in self.events]}")

    def of(self, kind: str) -> list:
        return [getattr(e, kind) for e in self.events if e.WhichOneof("event") == kind]


async def _messages(conversation, session, md):
    return (
        await conversation.ListMessages(conversation_service_pb2.ListMessagesRequest(parent=session.name), metadata=md)
    ).messages


async def _usage_of(billing, md, message_name, tries=100):
    for _ in range(tries):
        events = (await billing.ListUsageEvents(billing_service_pb2.ListUsageEventsRequest(), metadata=md)).usage_events
        found = [e for e in events if e.message == message_name]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no usage event for {message_name}")


async def test_turns_over_one_stream_with_a_barge_in_that_truncates_reply_and_bill(
    voice, conversation, billing, new_session, spoken, md
):
    _, session = await new_session(system_prompt="You are the booking assistant of a small restaurant.")
    first, rate = wav_frames(await spoken("Please book a table for two tonight."))
    second, _ = wav_frames(await spoken("Actually make it three people."))
    caller = Caller(voice, md, session.name, rate)

    caller.say(first, rate)
    ended = await caller.until("utterance_ended")
    assert "table" in ended.utterance_ended.transcript
    assert caller.of("speech_started") and caller.of("partial_transcript")
    await caller.until("reply_audio")  # the first sentence is playing: speak over it
    caller.say(second, rate)
    interrupted = await caller.until("reply_interrupted")
    spoken_text = interrupted.reply_interrupted.spoken_text
    assert spoken_text  # what had been sent as audio
    second_end = await caller.until("utterance_ended", count=2)
    assert "three" in second_end.utterance_ended.transcript
    completed = await caller.until("turn_completed")
    caller.hang_up()
    async for event in caller.call:
        caller.events.append(event)

    messages = await _messages(conversation, session, md)
    assert [m.role for m in messages] == [message_pb2.USER, message_pb2.ASSISTANT] * 2
    cut, whole = messages[1], messages[3]
    assert cut.status == message_pb2.MESSAGE_STATUS_TRUNCATED
    assert whole.status == message_pb2.MESSAGE_STATUS_COMPLETE
    assert whole.name == completed.turn_completed.assistant_message
    # The first reply as it was produced (its text deltas, up to the second utterance's end):
    # longer than what was spoken, which is exactly what was stored and billed.
    first_reply = ""
    for event in caller.events[: caller.events.index(second_end)]:
        if event.WhichOneof("event") == "reply_text":
            first_reply = ("" if event.reply_text.restart else first_reply) + event.reply_text.text_delta
    audio_before_cut = [
        e.reply_audio.text for e in caller.events[: caller.events.index(interrupted)] if e.HasField("reply_audio")
    ]
    assert spoken_text == "".join(audio_before_cut) and first_reply.startswith(spoken_text)
    assert len(spoken_text) < len(first_reply)
    assert cut.content == spoken_text
    cut_usage = await _usage_of(billing, md, cut.name)
    assert cut_usage.tts_characters == len(spoken_text)
    assert cut_usage.completion_tokens == count_tokens(spoken_text)
    assert cut_usage.audio_seconds == pytest.approx(
        ended.utterance_ended.audio_duration.ToTimedelta().total_seconds(), abs=0.001
    )
    # Text deltas, then audio a sentence at a time, for the completed turn.
    audio_texts = [a.text for a in caller.of("reply_audio")]
    assert "".join(audio_texts).endswith(whole.content.strip()[-10:])
    assert completed.turn_completed.usage.tts_characters == len(whole.content)


async def test_a_stream_that_never_ends_an_utterance_is_refused_and_nothing_is_stored(
    voice, conversation, billing, new_session, spoken, md
):
    _, session = await new_session()
    words, rate = wav_frames(await spoken("one two three four five six seven eight nine ten"))
    caller = Caller(voice, md, session.name, rate)
    for _ in range(4):  # longer than VB_VOICE_MAX_UTTERANCE_SECONDS without a pause
        caller.say(words, rate, silence=0.1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await caller.until("utterance_ended")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "UTTERANCE_TOO_LONG"
    assert list(await _messages(conversation, session, md)) == []
    await asyncio.sleep(0.3)  # several relay rounds: anything queued would have reached billing
    events = (await billing.ListUsageEvents(billing_service_pb2.ListUsageEventsRequest(), metadata=md)).usage_events
    assert list(events) == []


async def test_audio_before_the_config_is_refused(voice, md):
    async def requests():
        yield pb.StreamingConverseRequest(audio=b"\0" * 3200)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in voice.StreamingConverse(requests(), metadata=md):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "STREAM_CONFIG_REQUIRED"


async def test_another_tenants_session_cannot_be_streamed_into(voice, new_session, as_tenant, md):
    _, session = await new_session()
    caller = Caller(voice, as_tenant("ten_someoneelse"), session.name, 16000)
    caller.say(b"\0" * 3200, 16000)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await caller.until("utterance_ended")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "SESSION_NOT_FOUND"
