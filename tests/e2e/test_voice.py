"""The voice channel through the front door: JSON over HTTP for a spoken turn, gRPC for a
streamed conversation with barge-in, through a real Envoy to the whole stack."""

from __future__ import annotations

import asyncio
import base64
import io
import wave

import grpc
import pytest

from tests.e2e.client import error_reason
from tests.support import error_reason as grpc_error_reason
from vocalbridge.conversation.v1 import conversation_service_pb2, conversation_service_pb2_grpc, message_pb2
from vocalbridge.voice.v1 import voice_service_pb2 as pb
from vocalbridge.voice.v1 import voice_service_pb2_grpc

SENTENCE = "Please book a table for two tonight."


def frames(content: bytes) -> tuple[bytes, int]:
    with wave.open(io.BytesIO(content)) as reader:
        return reader.readframes(reader.getnframes()), reader.getframerate()


def wav(samples: bytes, rate: int = 16000, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(samples)
    return buffer.getvalue()


async def _usage_events(tenant, session: str, count: int, seconds: float = 10.0) -> list[dict]:
    """The session's usage events once `count` have reached billing (the relay delivers them
    every 100 ms here), or what arrived within `seconds`."""
    for _ in range(int(seconds / 0.1)):
        response = await tenant.get("/v1/usageEvents", params={"session": session})
        assert response.status_code == 200, response.text
        events = response.json().get("usageEvents", [])
        if len(events) >= count:
            return events
        await asyncio.sleep(0.1)
    return events


async def _voice_session(tenant) -> str:
    agent = await tenant.post(
        "/v1/agents",
        {
            "displayName": "Voice",
            "systemPrompt": "You are the booking assistant of a small restaurant.",
            "primaryProvider": "vendorA",
            "voice": {"voice": "espeak/en-us", "wordsPerMinute": 300},
        },
    )
    assert agent.status_code == 200, agent.text
    session = await tenant.post("/v1/sessions", {"agent": agent.json()["name"]})
    assert session.status_code == 200, session.text
    return session.json()["name"]


async def test_a_spoken_turn_over_json_is_transcribed_answered_spoken_and_billed(new_tenant):
    tenant = await new_tenant("Voice JSON")
    session = await _voice_session(tenant)
    said = await tenant.post("/v1/voice:synthesize", {"text": SENTENCE, "voice": "piper/en_US-joe-medium"})
    assert said.status_code == 200, said.text
    audio = said.json()["audio"]
    assert audio["sampleRateHertz"] == 22050
    turn = await tenant.http.post(
        f"/v1/{session}/voice:converse",
        json={"audio": {"content": audio["content"]}},
        headers=tenant.headers(**{"Idempotency-Key": "spoken-1"}),
    )
    assert turn.status_code == 200, turn.text
    body = turn.json()
    # Piper's voice varies from one synthesis to the next; the recognizer may hear "two" as a homophone.
    words = set(body["transcript"].lower().split())
    assert "table" in words and words & {"two", "to", "too", "2"}, body["transcript"]
    samples, rate = frames(base64.b64decode(body["replyAudio"]["content"]))
    assert rate == 22050 and len(samples) / 2 / rate > 1.0  # the reply, spoken
    assert body["usage"]["ttsCharacters"] == str(len(body["replyText"]))
    assert body["latency"]["total"].endswith("s")
    # The same request again: the stored turn, spoken again, and nothing billed twice.
    again = await tenant.http.post(
        f"/v1/{session}/voice:converse",
        json={"audio": {"content": audio["content"]}},
        headers=tenant.headers(**{"Idempotency-Key": "spoken-1"}),
    )
    assert again.status_code == 200, again.text
    assert again.headers.get("idempotent-replayed") == "true"
    replay = again.json()
    assert (replay["transcript"], replay["replyText"], replay["usage"]) == (
        body["transcript"],
        body["replyText"],
        body["usage"],
    )
    assert frames(base64.b64decode(replay["replyAudio"]["content"]))[1] == 22050
    messages = (await tenant.get(f"/v1/{session}/messages")).json()["messages"]
    assert [m["role"] for m in messages] == ["USER", "ASSISTANT"]
    await _usage_events(tenant, session, 1)
    # Ten relay rounds after the turn's event arrived: a second one would have too.
    events = await _usage_events(tenant, session, 2, seconds=1.0)
    assert len(events) == 1 and events[0]["ttsCharacters"] == body["usage"]["ttsCharacters"]
    for _ in range(100):
        summary = (await tenant.get("/v1/usage:summary")).json()["totals"]
        if int(summary.get("turns", "0")) >= 2:  # the turn and the synthesis
            break
        await asyncio.sleep(0.1)
    assert summary["audioSeconds"] >= float(body["usage"]["audioSeconds"]) > 1.0
    assert int(summary["costMicros"]) >= int(body["usage"]["costMicros"]) > 0


async def test_bad_audio_over_json_is_a_400_with_its_reason(new_tenant):
    tenant = await new_tenant("Voice bad audio")
    session = await _voice_session(tenant)
    for content, reason in (
        (base64.b64encode(b"not a wav file at all").decode(), "AUDIO_NOT_WAV"),
        ("", "AUDIO_EMPTY"),
        (base64.b64encode(wav(b"\x80" * 16000, width=1)).decode(), "AUDIO_SAMPLE_WIDTH_UNSUPPORTED"),
        (base64.b64encode(wav(b"\0\0" * 16000)).decode(), "NO_SPEECH_RECOGNIZED"),  # a second of silence
    ):
        response = await tenant.http.post(
            f"/v1/{session}/voice:converse",
            json={"audio": {"content": content}},
            headers=tenant.headers(**{"Idempotency-Key": reason}),
        )
        assert response.status_code == 400, response.text
        assert error_reason(response) == reason
    corrupt = await tenant.http.post(
        f"/v1/{session}/voice:converse",
        json={"audio": {"content": "%%% not base64 %%%"}},
        headers=tenant.headers(**{"Idempotency-Key": "corrupt"}),
    )
    assert corrupt.status_code == 400
    assert (await tenant.get(f"/v1/{session}/messages")).json().get("messages", []) == []
    assert await _usage_events(tenant, session, 1, seconds=1.0) == []


async def test_a_streamed_conversation_over_grpc_with_barge_in(stack, new_tenant):
    tenant = await new_tenant("Voice stream")
    session = await _voice_session(tenant)
    first = (await tenant.post("/v1/voice:synthesize", {"text": SENTENCE, "voice": "piper/en_US-joe-medium"})).json()
    second = (
        await tenant.post(
            "/v1/voice:synthesize", {"text": "Actually make it three.", "voice": "piper/en_US-joe-medium"}
        )
    ).json()
    auth = (("authorization", f"Bearer {tenant.key}"),)
    outgoing: asyncio.Queue = asyncio.Queue()

    def say(content: str) -> None:
        samples, rate = frames(base64.b64decode(content))
        samples += b"\0\0" * int(rate * 0.8)
        for i in range(0, len(samples), rate // 5):
            outgoing.put_nowait(pb.StreamingConverseRequest(audio=samples[i : i + rate // 5]))

    async def requests():
        yield pb.StreamingConverseRequest(config=pb.StreamingConverseConfig(session=session, sample_rate_hertz=22050))
        while (item := await outgoing.get()) is not None:
            yield item

    kinds: list[str] = []
    events: list[pb.StreamingConverseResponse] = []
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        voice = voice_service_pb2_grpc.VoiceServiceStub(channel)
        call = voice.StreamingConverse(requests(), metadata=auth, timeout=60)
        say(first["audio"]["content"])
        async for event in call:
            kind = event.WhichOneof("event")
            kinds.append(kind)
            events.append(event)
            if kind == "reply_audio" and "reply_interrupted" not in kinds and kinds.count("reply_audio") == 1:
                say(second["audio"]["content"])  # speak over the reply
            if kind == "turn_completed":
                outgoing.put_nowait(None)
        conversation = conversation_service_pb2_grpc.ConversationServiceStub(channel)
        messages = (
            await conversation.ListMessages(conversation_service_pb2.ListMessagesRequest(parent=session), metadata=auth)
        ).messages
    assert kinds.count("utterance_ended") == 2 and "partial_transcript" in kinds
    assert kinds.index("reply_interrupted") < kinds.index("turn_completed")
    assert [m.status for m in messages if m.role == message_pb2.ASSISTANT] == [
        message_pb2.MESSAGE_STATUS_TRUNCATED,
        message_pb2.MESSAGE_STATUS_COMPLETE,
    ]
    # The cut reply is stored and billed as far as its audio was sent, no further.
    interrupted = events[kinds.index("reply_interrupted")].reply_interrupted.spoken_text
    produced = ""  # the first reply's text as it streamed, up to the barge-in
    for event in events[: kinds.index("reply_interrupted")]:
        if event.WhichOneof("event") == "reply_text":
            produced = ("" if event.reply_text.restart else produced) + event.reply_text.text_delta
    cut = next(m for m in messages if m.status == message_pb2.MESSAGE_STATUS_TRUNCATED)
    assert cut.content == interrupted and interrupted and produced.startswith(interrupted)
    billed = {e["message"]: e for e in await _usage_events(tenant, session, 2)}
    assert len(billed) == 2
    assert billed[cut.name]["ttsCharacters"] == str(len(interrupted))
    whole = next(
        m for m in messages if m.role == message_pb2.ASSISTANT and m.status == message_pb2.MESSAGE_STATUS_COMPLETE
    )
    assert billed[whole.name]["ttsCharacters"] == str(len(whole.content))


async def test_a_tenant_key_cannot_send_a_spoken_turn_itself(stack, new_tenant):
    """The internal StreamVoiceTurn through Envoy with a tenant's own key: auth.Check refuses it
    (the internal scope is no API key's), and nothing is stored."""
    tenant = await new_tenant("Voice internal")
    session = await _voice_session(tenant)
    metadata = (("authorization", f"Bearer {tenant.key}"), ("idempotency-key", "sneaky"))

    async def requests():
        yield conversation_service_pb2.StreamVoiceTurnRequest(
            turn=conversation_service_pb2.VoiceTurnStart(
                session=session,
                content="Label me as a spoken turn.",
                voice=conversation_service_pb2.VoiceTurn(audio_seconds=30),
            )
        )

    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        conversation = conversation_service_pb2_grpc.ConversationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in conversation.StreamVoiceTurn(requests(), metadata=metadata, timeout=10):
                pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_error_reason(caught.value) == "SCOPE_INSUFFICIENT"
    assert (await tenant.get(f"/v1/{session}/messages")).json().get("messages", []) == []


async def test_a_text_turn_cannot_be_labelled_as_spoken(new_tenant):
    """`voice` left the public SendMessage and StreamMessage: over JSON it is an unknown field,
    refused like any other."""
    tenant = await new_tenant("Voice label")
    session = await _voice_session(tenant)
    for path in (f"/v1/{session}/messages", f"/v1/{session}/messages:stream"):
        response = await tenant.http.post(
            path,
            json={"content": "Hello", "voice": {"audioSeconds": 30}},
            headers=tenant.headers(**{"Idempotency-Key": f"label-{path}"}),
        )
        assert response.status_code == 400, response.text
    assert (await tenant.get(f"/v1/{session}/messages")).json().get("messages", []) == []


async def test_another_tenant_cannot_speak_into_a_session(stack, new_tenant):
    """Tenant B's key on tenant A's session, spoken over JSON and streamed over gRPC: not
    found (another tenant's session does not exist), and A's session stays empty."""
    owner, intruder = await new_tenant("Voice owner"), await new_tenant("Voice intruder")
    session = await _voice_session(owner)
    said = await intruder.post("/v1/voice:synthesize", {"text": SENTENCE, "voice": "espeak/en-us"})
    assert said.status_code == 200, said.text
    content = said.json()["audio"]["content"]
    response = await intruder.http.post(
        f"/v1/{session}/voice:converse",
        json={"audio": {"content": content}},
        headers=intruder.headers(**{"Idempotency-Key": "intrude"}),
    )
    assert response.status_code == 404, response.text
    assert error_reason(response) == "SESSION_NOT_FOUND"

    samples, rate = frames(base64.b64decode(content))

    async def requests():
        yield pb.StreamingConverseRequest(config=pb.StreamingConverseConfig(session=session, sample_rate_hertz=rate))
        yield pb.StreamingConverseRequest(audio=samples + b"\0\0" * rate)

    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        voice = voice_service_pb2_grpc.VoiceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in voice.StreamingConverse(
                requests(), metadata=(("authorization", f"Bearer {intruder.key}"),), timeout=30
            ):
                pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert grpc_error_reason(caught.value) == "SESSION_NOT_FOUND"
    assert (await owner.get(f"/v1/{session}/messages")).json().get("messages", []) == []
    assert await _usage_events(owner, session, 1, seconds=1.0) == []
