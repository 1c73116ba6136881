"""Conversation's internal StreamVoiceTurn over real gRPC against PostgreSQL: only an identity
with the internal scope may call it (a tenant's key is refused on the port, before anything
runs); a barge-in stores and bills the reply cut at exactly the character the caller heard;
and the public SendMessage no longer takes a voice label (a gRPC client's old field is an
unknown field: the turn stays a text turn)."""

from __future__ import annotations

import struct

import grpc
import pytest
from google.protobuf import unknown_fields
from sqlalchemy import select

from tests.integration.conversation.conftest import with_key
from tests.integration.conversation.voice_turns import as_voice_service, spoken_turn
from tests.support import error_reason
from vocalbridge.billing.v1 import usage_event_pb2
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge.conversation.v1 import message_pb2, session_pb2
from vocalbridge_conversation.models import OutboxRow
from vocalbridge_conversation.providers.base import count_tokens


async def usage_event_of(database, tenant: str, message_name: str) -> usage_event_pb2.UsageEvent:
    """The usage event the outbox holds for a stored reply (what billing will be sent)."""
    async with database.tenant_transaction(tenant) as tx:
        payloads = (await tx.execute(select(OutboxRow.payload).where(OutboxRow.tenant_id == tenant))).scalars()
        events = [usage_event_pb2.UsageEvent.FromString(payload) for payload in payloads]
    found = [event for event in events if event.message == message_name]
    assert len(found) == 1, f"{len(found)} usage events for {message_name}"
    return found[0]


async def messages_of(stub, md, session: str) -> list[message_pb2.Message]:
    return list((await stub.ListMessages(cs.ListMessagesRequest(parent=session), metadata=md)).messages)


@pytest.mark.parametrize("spoken", [0, 9])
async def test_a_barge_in_stores_and_bills_exactly_what_was_spoken(
    conversation, new_session, md, signer, tenant, database, spoken
):
    _, session = await new_session(conversation)
    voice = as_voice_service(signer, tenant, f"barge-in-{spoken}")
    result, streamed = await spoken_turn(conversation, voice, session.name, "Tell me about your menu.", 2.5, spoken)
    assert len(streamed) > spoken  # the reply was longer than what the caller heard
    kept = streamed[:spoken]
    reply = result.turn.assistant_message
    assert (reply.content, reply.status) == (kept, message_pb2.MESSAGE_STATUS_TRUNCATED)
    assert reply.channel == session_pb2.CHANNEL_VOICE
    stored = await messages_of(conversation, md, session.name)
    assert [(m.role, m.content) for m in stored] == [
        (message_pb2.USER, "Tell me about your menu."),
        (message_pb2.ASSISTANT, kept),
    ]
    usage = result.turn.usage
    assert (usage.tts_characters, usage.completion_tokens, usage.audio_seconds) == (spoken, count_tokens(kept), 2.5)
    billed = await usage_event_of(database, tenant, reply.name)
    assert (billed.tts_characters, billed.completion_tokens, billed.audio_seconds) == (
        spoken,
        count_tokens(kept),
        2.5,
    )
    assert billed.prompt_tokens == usage.prompt_tokens > 0 and billed.cost_micros == usage.cost_micros


async def test_a_reply_heard_whole_is_stored_whole_and_a_repeat_replays_it(
    conversation, new_session, signer, tenant, database
):
    _, session = await new_session(conversation)
    voice = as_voice_service(signer, tenant, "whole")
    result, streamed = await spoken_turn(conversation, voice, session.name, "Hello there.", 1.25)
    reply = result.turn.assistant_message
    assert reply.content == streamed and reply.status == message_pb2.MESSAGE_STATUS_COMPLETE
    assert result.turn.usage.tts_characters == len(streamed)
    again, replayed_text = await spoken_turn(conversation, voice, session.name, "Hello there.", 1.25)
    assert again.replayed and again.turn == result.turn and replayed_text == ""
    await usage_event_of(database, tenant, reply.name)  # one event, not two


async def test_a_tenant_key_cannot_call_the_internal_rpc_on_the_port(conversation, new_session, as_tenant, tenant, md):
    _, session = await new_session(conversation)
    for scopes in (("admin",), ("write",), ("read",)):
        call = conversation.StreamVoiceTurn(metadata=with_key(as_tenant(tenant, scopes), "sneaky"), timeout=10)
        await call.write(
            cs.StreamVoiceTurnRequest(
                turn=cs.VoiceTurnStart(
                    session=session.name, content="label me as voice", voice=cs.VoiceTurn(audio_seconds=9)
                )
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(caught.value) == "SCOPE_INSUFFICIENT"
    assert await messages_of(conversation, md, session.name) == []


async def test_a_voice_turn_needs_its_key_and_starts_with_the_turn(conversation, new_session, signer, tenant):
    _, session = await new_session(conversation)
    internal = as_voice_service(signer, tenant, "k")[:1]  # the identity, no idempotency key
    call = conversation.StreamVoiceTurn(metadata=internal, timeout=10)
    await call.write(
        cs.StreamVoiceTurnRequest(
            turn=cs.VoiceTurnStart(session=session.name, content="hi", voice=cs.VoiceTurn(audio_seconds=1))
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert error_reason(caught.value) == "IDEMPOTENCY_KEY_REQUIRED"

    call = conversation.StreamVoiceTurn(metadata=as_voice_service(signer, tenant, "k"), timeout=10)
    await call.write(cs.StreamVoiceTurnRequest(playback=cs.ReplyPlayback(interrupted=True)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "VOICE_TURN_REQUIRED"


async def test_the_public_send_message_takes_no_voice_label(conversation, new_session, md):
    """A gRPC client built from the old contract still sends field 3 (`voice`): it is an unknown
    field to the server, dropped as proto3 drops unknown fields, and the turn is a text turn."""
    _, session = await new_session(conversation)
    assert "voice" not in cs.SendMessageRequest.DESCRIPTOR.fields_by_name
    # The old `VoiceTurn voice = 3` with audio_seconds = 1.5: tag 3 (length-delimited), then a
    # double in field 1.
    old_voice = bytes([0x1A, 0x09, 0x09]) + struct.pack("<d", 1.5)
    raw = cs.SendMessageRequest(session=session.name, content="Am I spoken?").SerializeToString() + old_voice
    request = cs.SendMessageRequest.FromString(raw)
    assert [field.field_number for field in unknown_fields.UnknownFieldSet(request)] == [3]
    assert request.SerializeToString() == raw  # what goes on the wire, old field included
    reply = await conversation.SendMessage(request, metadata=with_key(md, "old-client"))
    assert reply.user_message.channel == reply.assistant_message.channel == session_pb2.CHANNEL_TEXT
    assert reply.usage.audio_seconds == 0 and reply.usage.tts_characters == 0
