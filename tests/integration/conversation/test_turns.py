"""Sessions and turns through the real conversation and agents servers."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.integration.conversation.conftest import with_key
from tests.support import error_reason, violated_fields
from vocalbridge.agents.v1 import agent_pb2, agents_service_pb2
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge.conversation.v1 import delivery_pb2, message_pb2, session_pb2
from vocalbridge_common.db import async_url


def send(session, content="Hello there"):
    return cs.SendMessageRequest(session=session.name, content=content)


async def outbox_count(pg_url, tenant) -> int:
    engine = create_async_engine(async_url(pg_url))
    try:
        async with engine.begin() as connection:
            return await connection.scalar(
                text("SELECT count(*) FROM conversation.usage_outbox WHERE tenant_id = :t"), {"t": tenant}
            )
    finally:
        await engine.dispose()


async def test_turn_stores_history_usage_and_outbox(conversation, new_session, md, tenant, pg_url):
    _agent, session = await new_session(conversation)
    assert session.agent_version == 1 and session.channel == session_pb2.CHANNEL_TEXT
    first = await conversation.SendMessage(send(session, "What are your opening hours?"), metadata=with_key(md, "k1"))
    assert first.user_message.role == message_pb2.USER and first.assistant_message.role == message_pb2.ASSISTANT
    assert "opening hours" in first.assistant_message.content
    assert first.delivery.provider == "vendorA" and not first.delivery.fallback_used
    assert [a.outcome for a in first.delivery.attempts] == [delivery_pb2.ATTEMPT_OUTCOME_SUCCESS]
    # vendorA: 2 micros per token.
    assert first.usage.cost_micros == 2 * (first.usage.prompt_tokens + first.usage.completion_tokens) > 0
    second = await conversation.SendMessage(send(session, "And on Sundays?"), metadata=with_key(md, "k2"))
    # The second turn's prompt carries the first turn as history.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens
    history = await conversation.ListMessages(cs.ListMessagesRequest(parent=session.name), metadata=md)
    assert [m.name for m in history.messages] == [
        first.user_message.name,
        first.assistant_message.name,
        second.user_message.name,
        second.assistant_message.name,
    ]
    assert await outbox_count(pg_url, tenant) == 2


async def test_session_keeps_its_pinned_agent_version(conversation, new_session, agents, md):
    agent, session = await new_session(conversation, system_prompt="You are Version One.")
    await agents.UpdateAgent(
        agents_service_pb2.UpdateAgentRequest(
            agent=agent_pb2.Agent(name=agent.name, system_prompt="You are Version Two."),
            update_mask=field_mask_pb2.FieldMask(paths=["system_prompt"]),
        ),
        metadata=md,
    )
    reply = await conversation.SendMessage(send(session), metadata=with_key(md, "pinned"))
    assert "Version One" in reply.assistant_message.content
    fresh = await conversation.CreateSession(
        cs.CreateSessionRequest(session=session_pb2.Session(agent=agent.name)), metadata=md
    )
    assert fresh.agent_version == 2


async def test_replay_returns_the_stored_turn_without_running_it_again(conversation, new_session, md, tenant, pg_url):
    _, session = await new_session(conversation)
    call = conversation.SendMessage(send(session), metadata=with_key(md, "same-key"))
    first = await call
    assert dict(await call.initial_metadata()).get("idempotent-replayed") is None
    again = conversation.SendMessage(send(session), metadata=with_key(md, "same-key"))
    assert await again == first
    assert dict(await again.initial_metadata())["idempotent-replayed"] == "true"
    history = await conversation.ListMessages(cs.ListMessagesRequest(parent=session.name), metadata=md)
    assert len(history.messages) == 2
    assert await outbox_count(pg_url, tenant) == 1


async def test_key_reuse_with_another_body_and_missing_key(conversation, new_session, md):
    _, session = await new_session(conversation)
    await conversation.SendMessage(send(session, "one"), metadata=with_key(md, "reused"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await conversation.SendMessage(send(session, "two"), metadata=with_key(md, "reused"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(caught.value) == "IDEMPOTENCY_KEY_REUSED"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await conversation.SendMessage(send(session), metadata=md)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "IDEMPOTENCY_KEY_REQUIRED"
    assert violated_fields(caught.value) == {"Idempotency-Key"}
    history = await conversation.ListMessages(cs.ListMessagesRequest(parent=session.name), metadata=md)
    assert len(history.messages) == 2


async def test_concurrent_identical_requests_run_once(start_conversation, new_session, md, tenant, pg_url):
    slow = await start_conversation(VB_PROVIDER_VENDORA_LATENCY_MS="300")
    _, session = await new_session(slow)
    results = await asyncio.gather(
        *(slow.SendMessage(send(session, "Once only"), metadata=with_key(md, "burst")) for _ in range(50)),
        return_exceptions=True,
    )
    replies = [r for r in results if not isinstance(r, Exception)]
    errors = [r for r in results if isinstance(r, Exception)]
    assert replies, "one request ran"
    assert all(e.code() == grpc.StatusCode.ABORTED and error_reason(e) == "IDEMPOTENCY_KEY_IN_USE" for e in errors)
    assert len({r.assistant_message.name for r in replies}) == 1
    # Everyone who was told IN_USE gets the same stored reply on retry.
    again = await asyncio.gather(
        *(slow.SendMessage(send(session, "Once only"), metadata=with_key(md, "burst")) for _ in errors)
    )
    assert {r.assistant_message.name for r in again} <= {replies[0].assistant_message.name}
    history = await slow.ListMessages(cs.ListMessagesRequest(parent=session.name), metadata=md)
    assert len(history.messages) == 2
    assert await outbox_count(pg_url, tenant) == 1


async def test_fallback_when_the_primary_always_fails(start_conversation, new_session, md):
    failing = await start_conversation(VB_PROVIDER_VENDORA_FAILURE_RATE="1", VB_BREAKER_FAILURE_THRESHOLD="100")
    _, session = await new_session(failing)
    reply = await failing.SendMessage(send(session), metadata=with_key(md, "fb"))
    assert reply.delivery.provider == "vendorB" and reply.delivery.fallback_used
    assert [(a.provider, a.outcome) for a in reply.delivery.attempts] == [
        ("vendorA", delivery_pb2.ATTEMPT_OUTCOME_UNAVAILABLE)
    ] * 3 + [("vendorB", delivery_pb2.ATTEMPT_OUTCOME_SUCCESS)]
    # Billed at the serving provider's price: vendorB, 3 micros per token.
    assert reply.usage.cost_micros == 3 * (reply.usage.prompt_tokens + reply.usage.completion_tokens)


async def test_exhausted_providers_fail_the_turn_visibly_and_unbilled(
    start_conversation, new_session, md, tenant, pg_url
):
    down = await start_conversation(
        VB_PROVIDER_VENDORA_FAILURE_RATE="1", VB_PROVIDER_VENDORB_FAILURE_RATE="1", VB_BREAKER_FAILURE_THRESHOLD="100"
    )
    _, session = await new_session(down)
    before = await outbox_count(pg_url, tenant)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await down.SendMessage(send(session), metadata=with_key(md, "doomed"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) == "PROVIDERS_EXHAUSTED"
    from grpc_status import rpc_status

    delivery = delivery_pb2.Delivery()
    assert any(d.Unpack(delivery) for d in rpc_status.from_call(caught.value).details)
    assert len(delivery.attempts) == 6
    history = await down.ListMessages(cs.ListMessagesRequest(parent=session.name), metadata=md)
    assert [(m.role, m.status) for m in history.messages] == [(message_pb2.USER, message_pb2.MESSAGE_STATUS_FAILED)]
    assert await outbox_count(pg_url, tenant) == before


async def test_bad_input_changes_nothing(conversation, new_session, md):
    _, session = await new_session(conversation)
    cases = [
        (send(session, ""), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (send(session, "   "), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (send(session, "x" * 32_001), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (
            cs.SendMessageRequest(session="sessions/ses_01m87srx2qrnbdce06p98dr0wk", content="hi"),
            grpc.StatusCode.NOT_FOUND,
            "SESSION_NOT_FOUND",
        ),
        (cs.SendMessageRequest(session="nonsense", content="hi"), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"),
    ]
    for i, (request, code, reason) in enumerate(cases):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await conversation.SendMessage(request, metadata=with_key(md, f"bad-{i}"))
        assert (caught.value.code(), error_reason(caught.value)) == (code, reason)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await conversation.ListMessages(cs.ListMessagesRequest(parent=session.name, page_token="zzz"), metadata=md)
    assert error_reason(caught.value) == "INVALID_PAGE_TOKEN"
    history = await conversation.ListMessages(cs.ListMessagesRequest(parent=session.name), metadata=md)
    assert history.messages == []


async def test_other_tenants_sessions_do_not_exist(conversation, new_session, md, as_tenant):
    _, session = await new_session(conversation)
    stranger = as_tenant("ten_01m87srx2qrnbdce06p98dr0wk")
    calls = [
        conversation.GetSession(cs.GetSessionRequest(name=session.name), metadata=stranger),
        conversation.ListMessages(cs.ListMessagesRequest(parent=session.name), metadata=stranger),
        conversation.SendMessage(send(session), metadata=with_key(stranger, "x")),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND and error_reason(caught.value) == "SESSION_NOT_FOUND"
    listed = await conversation.ListSessions(cs.ListSessionsRequest(), metadata=stranger)
    assert session.name not in [s.name for s in listed.sessions]
    agent_of_other = await conversation.ListSessions(cs.ListSessionsRequest(agent=session.agent), metadata=stranger)
    assert agent_of_other.sessions == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await conversation.CreateSession(
            cs.CreateSessionRequest(session=session_pb2.Session(agent=session.agent)), metadata=stranger
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and error_reason(caught.value) == "AGENT_NOT_FOUND"


async def test_sessions_and_messages_paginate_and_filter_by_agent(conversation, new_session, md):
    agent, session = await new_session(conversation)
    _, other_session = await new_session(conversation)
    for i in range(3):
        await conversation.SendMessage(send(session, f"turn {i}"), metadata=with_key(md, f"page-{i}"))
    names, token = [], ""
    while True:
        page = await conversation.ListMessages(
            cs.ListMessagesRequest(parent=session.name, page_size=4, page_token=token), metadata=md
        )
        names += [m.name for m in page.messages]
        contents = [m.content for m in page.messages]
        token = page.next_page_token
        if not token:
            break
    assert len(names) == len(set(names)) == 6
    full = await conversation.ListMessages(cs.ListMessagesRequest(parent=session.name), metadata=md)
    assert [m.name for m in full.messages] == names
    assert [m.content for m in full.messages if m.role == message_pb2.USER] == ["turn 0", "turn 1", "turn 2"]
    assert contents  # the last page was not empty
    only_agent = await conversation.ListSessions(cs.ListSessionsRequest(agent=agent.name), metadata=md)
    assert [s.name for s in only_agent.sessions] == [session.name]
    everything = await conversation.ListSessions(cs.ListSessionsRequest(page_size=1), metadata=md)
    assert [s.name for s in everything.sessions] == [other_session.name]  # newest first
    second = await conversation.ListSessions(
        cs.ListSessionsRequest(page_size=1, page_token=everything.next_page_token), metadata=md
    )
    assert [s.name for s in second.sessions] == [session.name]
