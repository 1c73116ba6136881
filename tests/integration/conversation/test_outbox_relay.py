"""The conversation service's billing outbox relay (the common one, on its table), as the
server runs it against real PostgreSQL: turns answered while billing is down, and every
queued event delivered exactly once when it is back. (The relay's own promises, on every
service's outbox: tests/integration/common/test_outbox_relay.py.)"""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import select

from tests.integration.conversation.conftest import with_key
from tests.integration.conversation.fake_billing import FakeBilling, billing_on, free_port
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge_conversation.models import OutboxRow


async def outbox_of(db, tenant_id: str) -> dict[str, bool]:
    """The tenant's outbox: event id → delivered."""
    async with db.tenant_transaction(tenant_id) as tx:
        rows = await tx.execute(
            select(OutboxRow.event_id, OutboxRow.delivered_time).where(OutboxRow.tenant_id == tenant_id)
        )
        return {event_id: delivered is not None for event_id, delivered in rows}


async def eventually(condition, timeout: float = 20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_events_queued_while_billing_is_down_are_delivered_once_when_it_is_back(
    start_conversation, new_session, md, tenant, database
):
    port = free_port()
    relay_env = {"VB_RELAY_POLL_INTERVAL_MS": "50", "VB_RELAY_BACKOFF_BASE_MS": "20", "VB_RELAY_BACKOFF_CAP_MS": "200"}
    conversation = await start_conversation(run_relay=True, VB_BILLING_ADDRESS=f"127.0.0.1:{port}", **relay_env)
    _, session = await new_session(conversation)
    replies = [
        await conversation.SendMessage(
            cs.SendMessageRequest(session=session.name, content=f"turn {i}"), metadata=with_key(md, f"relay-{i}")
        )
        for i in range(5)
    ]
    await asyncio.sleep(0.3)  # the relay has tried, and failed, a few times by now
    queued = await outbox_of(database, tenant)
    assert len(queued) == 5 and not any(queued.values())  # billing down: every turn answered, none billed yet

    async with billing_on(port, FakeBilling()) as billing:

        async def all_delivered() -> bool:
            return all((await outbox_of(database, tenant)).values())

        await eventually(all_delivered)
        await asyncio.sleep(0.3)  # a few more relay rounds: nothing is sent again
        mine = [event for event in billing.events if event.tenant == f"tenants/{tenant}"]
        received = Counter(event.name.removeprefix("usageEvents/") for event in mine)
        assert received == Counter(queued.keys())  # each queued event, exactly once
        assert sorted(event.message for event in mine) == sorted(r.assistant_message.name for r in replies)
        relay = billing.identities("RecordUsage")
        assert relay and all(i.tenant_id == "" and i.scopes == frozenset({"internal"}) for i in relay)
