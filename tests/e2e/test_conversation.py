"""Conversations through Envoy: JSON (with SSE) and gRPC, delivery under faults, idempotency."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from grpc_status import rpc_status

from tests.e2e.client import error_reason, sse_events, violated_fields
from tests.support import error_reason as grpc_error_reason
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge.conversation.v1 import conversation_service_pb2_grpc, delivery_pb2


async def start_chat(tenant, primary="vendorA", fallback="vendorB", prompt="You are the Acme helper."):
    agent = await tenant.post(
        "/v1/agents",
        {"displayName": "Chat", "systemPrompt": prompt, "primaryProvider": primary, "fallbackProvider": fallback},
    )
    assert agent.status_code == 200, agent.text
    session = await tenant.post("/v1/sessions", {"agent": agent.json()["name"]})
    assert session.status_code == 200, session.text
    return session.json()


async def say(tenant, session, content, key=None):
    key = key or uuid.uuid4().hex
    return await tenant.http.post(
        f"/v1/{session['name']}/messages", json={"content": content}, headers=tenant.headers(**{"Idempotency-Key": key})
    )


def outcomes(body):
    return [(a["provider"], a["outcome"].removeprefix("ATTEMPT_OUTCOME_")) for a in body["delivery"]["attempts"]]


async def test_chat_over_json_matches_the_documented_shape(new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant)
    assert session["name"].startswith("sessions/ses_") and session["agentVersion"] == 1
    response = await say(tenant, session, "Hello")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["userMessage"]["role"] == "USER" and body["userMessage"]["content"] == "Hello"
    assert body["assistantMessage"]["role"] == "ASSISTANT" and "Hello" in body["assistantMessage"]["content"]
    assert body["delivery"]["provider"] == "vendorA" and body["delivery"]["fallbackUsed"] is False
    assert outcomes(body) == [("vendorA", "SUCCESS")]
    assert body["delivery"]["attempts"][0]["latency"].endswith("s")
    usage = body["usage"]
    assert isinstance(usage["promptTokens"], int) and isinstance(usage["costMicros"], str)
    assert int(usage["costMicros"]) == 2 * (usage["promptTokens"] + usage["completionTokens"])
    history = await tenant.get(f"/v1/{session['name']}/messages")
    assert [m["role"] for m in history.json()["messages"]] == ["USER", "ASSISTANT"]


async def test_fallback_with_retries_visible(new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant, primary="down", fallback="vendorB")
    body = (await say(tenant, session, "Anyone there?")).json()
    assert body["delivery"]["fallbackUsed"] is True and body["delivery"]["provider"] == "vendorB"
    assert outcomes(body) == [("down", "UNAVAILABLE")] * 3 + [("vendorB", "SUCCESS")]
    # Fallback turns are billed at the serving provider's price (vendorB: 3 micros a token).
    assert int(body["usage"]["costMicros"]) == 3 * (body["usage"]["promptTokens"] + body["usage"]["completionTokens"])


async def test_breaker_opens_then_recovers(new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant, primary="flaky", fallback="vendorB")
    first = (await say(tenant, session, "one")).json()
    assert outcomes(first) == [("flaky", "UNAVAILABLE")] * 3 + [("vendorB", "SUCCESS")]
    second = (await say(tenant, session, "two")).json()
    assert outcomes(second) == [("flaky", "CIRCUIT_OPEN"), ("vendorB", "SUCCESS")]
    await asyncio.sleep(0.6)  # the breaker's reset timeout: the next turn is its half-open probe
    third = (await say(tenant, session, "three")).json()
    assert outcomes(third) == [("flaky", "SUCCESS")] and third["delivery"]["fallbackUsed"] is False
    fourth = (await say(tenant, session, "four")).json()
    assert outcomes(fourth) == [("flaky", "SUCCESS")]


async def test_non_retryable_error_is_not_retried(new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant, primary="picky", fallback="vendorB")
    response = await say(tenant, session, "bad request")
    assert response.status_code == 503 and error_reason(response) == "PROVIDERS_EXHAUSTED"
    delivery = next(d for d in response.json()["details"] if d["@type"].endswith("conversation.v1.Delivery"))
    assert [(a["provider"], a["outcome"]) for a in delivery["attempts"]] == [("picky", "ATTEMPT_OUTCOME_BAD_REQUEST")]


async def test_exhausted_turn_is_kept_as_failed_and_not_billed(new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant, primary="dead", fallback="dead2")
    response = await say(tenant, session, "hello?")
    assert response.status_code == 503 and error_reason(response) == "PROVIDERS_EXHAUSTED"
    history = (await tenant.get(f"/v1/{session['name']}/messages")).json()["messages"]
    assert [(m["role"], m["status"]) for m in history] == [("USER", "MESSAGE_STATUS_FAILED")]
    await asyncio.sleep(0.5)
    usage = await tenant.get("/v1/usage:summary")
    assert usage.status_code == 200, usage.text
    assert int(usage.json()["totals"].get("turns", "0")) == 0


async def test_deadline_shorter_than_the_backoff_is_honoured(stack, new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant, primary="throttled", fallback="")
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = conversation_service_pb2_grpc.ConversationServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            # The provider asks to retry after 0.8 s; the caller allows 0.5 s in all.
            await stub.SendMessage(
                cs.SendMessageRequest(session=session["name"], content="hi"),
                timeout=0.5,
                metadata=(("authorization", f"Bearer {tenant.key}"), ("idempotency-key", "dl")),
            )
        elapsed = time.monotonic() - started
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    assert grpc_error_reason(caught.value) == "PROVIDERS_EXHAUSTED"
    delivery = delivery_pb2.Delivery()
    assert any(d.Unpack(delivery) for d in rpc_status.from_call(caught.value).details)
    assert [a.outcome for a in delivery.attempts] == [
        delivery_pb2.ATTEMPT_OUTCOME_RATE_LIMITED,
        delivery_pb2.ATTEMPT_OUTCOME_DEADLINE_EXCEEDED,
    ]
    assert elapsed < 0.5, "no sleep past the caller's deadline"


async def test_idempotent_replay_reuse_and_missing_key(new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant)
    first = await say(tenant, session, "Same question", key="key-1")
    replay = await say(tenant, session, "Same question", key="key-1")
    assert replay.status_code == 200 and replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    reused = await say(tenant, session, "Another question", key="key-1")
    assert reused.status_code == 409 and error_reason(reused) == "IDEMPOTENCY_KEY_REUSED"
    missing = await tenant.post(f"/v1/{session['name']}/messages", {"content": "no key"})
    assert missing.status_code == 400 and error_reason(missing) == "IDEMPOTENCY_KEY_REQUIRED"
    assert violated_fields(missing) == {"Idempotency-Key"}
    history = (await tenant.get(f"/v1/{session['name']}/messages")).json()["messages"]
    assert len(history) == 2


async def test_key_in_use_then_replay(new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant, primary="slow", fallback="")  # a reply takes 3 s
    racing = asyncio.create_task(say(tenant, session, "Slowly", key="busy"))
    await asyncio.sleep(0.3)
    duplicate = await say(tenant, session, "Slowly", key="busy")
    assert duplicate.status_code == 409 and error_reason(duplicate) == "IDEMPOTENCY_KEY_IN_USE"
    original = await racing
    assert original.status_code == 200
    replay = await say(tenant, session, "Slowly", key="busy")
    assert replay.json() == original.json() and replay.headers["idempotent-replayed"] == "true"


async def test_streaming_over_sse_and_its_replay(new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant)
    headers = tenant.headers(**{"Idempotency-Key": "stream-1"})
    response = await tenant.http.post(
        f"/v1/{session['name']}/messages:stream", json={"content": "Stream it"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    deltas = "".join(e.get("textDelta", "") for e in events[:-1])
    final = events[-1]
    assert len(events) > 2 and deltas == final["assistantMessage"]["content"]
    assert final["delivery"]["provider"] == "vendorA" and int(final["usage"]["costMicros"]) > 0
    replay = await tenant.http.post(
        f"/v1/{session['name']}/messages:stream", json={"content": "Stream it"}, headers=headers
    )
    replayed = sse_events(replay)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replayed[-1]["assistantMessage"] == final["assistantMessage"]
    assert "".join(e.get("textDelta", "") for e in replayed[:-1]) == final["assistantMessage"]["content"]
    history = (await tenant.get(f"/v1/{session['name']}/messages")).json()["messages"]
    assert len(history) == 2


async def test_client_leaving_mid_stream_keeps_a_truncated_billed_reply(stack, new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant, primary="slow", fallback="")
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = conversation_service_pb2_grpc.ConversationServiceStub(channel)
        call = stub.StreamMessage(
            cs.StreamMessageRequest(session=session["name"], content="Tell me a long story"),
            metadata=(("authorization", f"Bearer {tenant.key}"), ("idempotency-key", "leave")),
        )
        received = ""
        async for event in call:
            received += event.text_delta
            if received:
                break
        call.cancel()
    for _ in range(50):
        history = (await tenant.get(f"/v1/{session['name']}/messages")).json()["messages"]
        if len(history) == 2:
            break
        await asyncio.sleep(0.1)
    assert [m["status"] for m in history] == ["MESSAGE_STATUS_COMPLETE", "MESSAGE_STATUS_TRUNCATED"]
    assert history[1]["content"].startswith(received) and history[1]["content"]
    for _ in range(50):
        summary = (await tenant.get("/v1/usage:summary")).json()
        if summary["totals"].get("turns") == "1":
            break
        await asyncio.sleep(0.1)
    # Billed for what was generated: the tokens of the partial reply ("slow" has no price
    # row, so its cost is zero; the quantities are what the ledger bills on).
    assert summary["totals"]["turns"] == "1" and int(summary["totals"]["completionTokens"]) > 0


async def test_other_tenants_sessions_do_not_exist(new_tenant):
    owner, stranger = await new_tenant("Owner"), await new_tenant("Stranger")
    session = await start_chat(owner)
    await say(owner, session, "private")
    for response in (
        await stranger.get(f"/v1/{session['name']}"),
        await stranger.get(f"/v1/{session['name']}/messages"),
        await say(stranger, session, "let me in"),
        await stranger.http.post(
            f"/v1/{session['name']}/messages:stream",
            json={"content": "x"},
            headers=stranger.headers(**{"Idempotency-Key": "s"}),
        ),
    ):
        assert response.status_code == 404, response.text
    assert session["name"] not in [s["name"] for s in (await stranger.get("/v1/sessions")).json().get("sessions", [])]
    assert (await stranger.post("/v1/sessions", {"agent": session["agent"]})).status_code == 404
    assert len((await owner.get(f"/v1/{session['name']}/messages")).json()["messages"]) == 2


@pytest.mark.parametrize("content, status", [("", 400), ("   ", 400), ("x" * 32_001, 400)])
async def test_bad_turns_store_nothing(new_tenant, content, status):
    tenant = await new_tenant()
    session = await start_chat(tenant)
    response = await say(tenant, session, content)
    assert response.status_code == status and violated_fields(response) == {"content"}
    assert (await tenant.get(f"/v1/{session['name']}/messages")).json().get("messages", []) == []


async def test_unknown_session_and_bad_page_token(new_tenant):
    tenant = await new_tenant()
    missing = await tenant.http.post(
        "/v1/sessions/ses_01m87srx2qrnbdce06p98dr0wk/messages",
        json={"content": "hi"},
        headers=tenant.headers(**{"Idempotency-Key": "k"}),
    )
    assert missing.status_code == 404 and error_reason(missing) == "SESSION_NOT_FOUND"
    session = await start_chat(tenant)
    bad = await tenant.get(f"/v1/{session['name']}/messages", params={"pageToken": "nope"})
    assert bad.status_code == 400 and error_reason(bad) == "INVALID_PAGE_TOKEN"
