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
    assert {"table", "two"} <= set(body["transcript"].split())
    samples, rate = frames(base64.b64decode(body["replyAudio"]["content"]))
    assert rate == 22050 and len(samples) / 2 / rate > 1.0  # the reply, spoken
    assert body["usage"]["ttsCharacters"] == str(len(body["replyText"]))
    assert body["latency"]["total"].endswith("s")
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
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        voice = voice_service_pb2_grpc.VoiceServiceStub(channel)
        call = voice.StreamingConverse(requests(), metadata=auth, timeout=60)
        say(first["audio"]["content"])
        async for event in call:
            kind = event.WhichOneof("event")
            kinds.append(kind)
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
