"""Prices come from billing in the background: a turn is priced with what the service
has (the seed rows until billing first answers) and never waits on billing, and new
prices apply once billing has answered."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from tests.integration.conversation.conftest import with_key
from tests.integration.conversation.fake_billing import FakeBilling, billing_on, free_port
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge_common.pricing import SEED_PRICES, PriceUnit
from vocalbridge_conversation.server import create_server

# vendorA's prompt tokens at twice the seed price, from a time before any test turn.
RAISED = replace(
    next(row for row in SEED_PRICES if row.provider == "vendorA" and row.unit is PriceUnit.PER_1K_PROMPT_TOKENS),
    price_id="prc_raised_prompt",
    micros_per_unit=4000,
    effective_time=datetime(2020, 1, 1, tzinfo=UTC),
)


def seed_cost(usage) -> int:
    return 2 * (usage.prompt_tokens + usage.completion_tokens)  # vendorA's seed price: 2 micros a token


async def test_turns_never_wait_on_billing_and_pick_up_its_prices(start_conversation, new_session, md):
    port = free_port()
    billing = FakeBilling([*SEED_PRICES, RAISED])
    billing.answering.clear()  # billing accepts calls and answers none of them
    async with billing_on(port, billing):
        conversation = await start_conversation(
            VB_BILLING_ADDRESS=f"127.0.0.1:{port}", VB_CONVERSATION_PRICE_REFRESH_SECONDS="0.2"
        )
        _, session = await new_session(conversation)

        async def turn(key: str) -> cs.SendMessageResponse:
            request = cs.SendMessageRequest(session=session.name, content="What does this cost?")
            # Shorter than a price call's own timeout (2 s): a turn that waited on billing would miss it.
            return await conversation.SendMessage(request, metadata=with_key(md, key), timeout=1.5)

        stalled = await turn("while-billing-hangs")
        assert stalled.usage.cost_micros == seed_cost(stalled.usage) > 0
        assert billing.identities("ListPrices"), "the refresh is running (and waiting on billing)"

        billing.answering.set()
        for attempt in range(100):
            priced = await turn(f"after-billing-answers-{attempt}")
            if priced.usage.cost_micros != seed_cost(priced.usage):
                break
            await asyncio.sleep(0.1)
        usage = priced.usage
        assert usage.cost_micros == 4 * usage.prompt_tokens + 2 * usage.completion_tokens

    callers = billing.identities("ListPrices")
    # The service's own identity, never a tenant's: no tenant, internal scope plus read.
    assert {(i.tenant_id, i.key_id, i.scopes) for i in callers} == {
        ("", "svc_conversation", frozenset({"internal", "read"}))
    }


async def test_stopping_the_server_stops_its_background_work(conversation_settings):
    before = asyncio.all_tasks()
    running = await create_server(conversation_settings(), run_relay=True)
    started = {task for task in asyncio.all_tasks() - before if task.get_name() in ("price-refresh", "outbox-relay")}
    assert len(started) == 2 and not any(task.done() for task in started)
    await running.stop(0)
    assert all(task.done() for task in started)
