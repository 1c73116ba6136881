"""Exactly-once billing under faults, with real processes: billing stopped while
turns are served, the conversation service killed with SIGKILL while usage is
still in its outbox, and a batch delivered twice."""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg

from tests.e2e.test_conversation import say, start_chat


async def send_turns(tenant, session, count: int, concurrency: int = 10) -> list[int]:
    """Sends `count` turns; every one must succeed. Returns their costs as the client saw them."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with gate:
            response = await say(tenant, session, f"Question number {i}", key=uuid.uuid4().hex)
            assert response.status_code == 200, response.text
            return int(response.json()["usage"]["costMicros"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def ledger(tenant) -> tuple[int, int]:
    """(turns, cost) in the tenant's usage summary."""
    response = await tenant.get("/v1/usage:summary")
    assert response.status_code == 200, response.text
    totals = response.json()["totals"]
    return int(totals.get("turns", "0")), int(totals.get("costMicros", "0"))


async def wait_for_ledger(tenant, turns: int, timeout: float = 60.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        current = await ledger(tenant)
        if current[0] >= turns or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.2)


async def all_event_names(tenant) -> list[str]:
    names, token = [], ""
    while True:
        params = {"pageSize": 1000, **({"pageToken": token} if token else {})}
        page = (await tenant.get("/v1/usageEvents", params=params)).json()
        names += [event["name"] for event in page.get("usageEvents", [])]
        token = page.get("nextPageToken", "")
        if not token:
            return names


async def test_turns_succeed_while_billing_is_down_and_are_billed_once_later(stack, new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant)
    await stack.stop_service("billing")
    try:
        costs = await send_turns(tenant, session, 200)
    finally:
        await stack.start_service("billing")
    turns, cost = await wait_for_ledger(tenant, 200)
    assert (turns, cost) == (200, sum(costs))
    names = await all_event_names(tenant)
    assert len(names) == len(set(names)) == 200
    # Nothing further trickles in.
    await asyncio.sleep(1.0)
    assert await ledger(tenant) == (200, sum(costs))


async def test_sigkill_between_commit_and_relay_loses_and_doubles_nothing(stack, new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant)
    await stack.stop_service("billing")
    try:
        costs = await send_turns(tenant, session, 30)
        old_pid = stack.children["conversation"].process.pid
        stack.kill("conversation")  # SIGKILL: its outbox still holds all 30 events
        deadline = time.monotonic() + 30
        while stack.children["conversation"].process.pid == old_pid and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await stack.wait_serving("conversation")
        costs += await send_turns(tenant, session, 10)
    finally:
        await stack.start_service("billing")
    turns, cost = await wait_for_ledger(tenant, 40)
    assert (turns, cost) == (40, sum(costs))
    assert len(set(await all_event_names(tenant))) == 40


async def test_a_batch_delivered_twice_is_counted_once(stack, new_tenant):
    tenant = await new_tenant()
    session = await start_chat(tenant)
    costs = await send_turns(tenant, session, 15)
    assert await wait_for_ledger(tenant, 15) == (15, sum(costs))
    tenant_id = tenant.name.split("/")[1]
    # As if the relay had died after RecordUsage succeeded but before it marked the
    # rows delivered: they are pending again, and the relay sends them again.
    async with await psycopg.AsyncConnection.connect(stack.config.database_url, autocommit=True) as connection:
        reset = await connection.execute(
            "UPDATE conversation.usage_outbox SET delivered_time = NULL WHERE tenant_id = %s", (tenant_id,)
        )
        assert reset.rowcount == 15
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cursor = await connection.execute(
                "SELECT count(*) FROM conversation.usage_outbox WHERE tenant_id = %s AND delivered_time IS NULL",
                (tenant_id,),
            )
            pending = (await cursor.fetchone())[0]
            if pending == 0:
                break
            await asyncio.sleep(0.2)
        assert pending == 0, "the relay delivered the batch again"
    assert await ledger(tenant) == (15, sum(costs))


async def test_usage_queries_refuse_bad_input(new_tenant):
    from tests.e2e.client import violated_fields

    tenant = await new_tenant()
    inverted = await tenant.get(
        "/v1/usage:summary", params={"startTime": "2026-11-24T00:00:00Z", "endTime": "2026-11-01T00:00:00Z"}
    )
    assert inverted.status_code == 400 and violated_fields(inverted)
    unknown_group = await tenant.get("/v1/usage:summary", params={"groupBy": "WEEK"})
    assert unknown_group.status_code == 400
    # Above the maximum is clamped (AIP-158), not refused: a new tenant's first page, empty.
    too_big = await tenant.get("/v1/usageEvents", params={"pageSize": 5000})
    assert too_big.status_code == 200, too_big.text
    assert too_big.json().get("usageEvents", []) == [] and not too_big.json().get("nextPageToken")
    negative = await tenant.get("/v1/usageEvents", params={"pageSize": -1})
    assert negative.status_code == 400 and violated_fields(negative) == {"page_size"}


async def test_usage_is_tenant_scoped_and_groups_add_up(new_tenant):
    owner, stranger = await new_tenant("Owner"), await new_tenant("Stranger")
    session = await start_chat(owner)
    costs = await send_turns(owner, session, 5)
    assert await wait_for_ledger(owner, 5) == (5, sum(costs))
    for group_by in ("DAY", "AGENT", "PROVIDER", "CHANNEL"):
        body = (await owner.get("/v1/usage:summary", params={"groupBy": group_by})).json()
        assert sum(int(g["totals"]["costMicros"]) for g in body["groups"]) == sum(costs), group_by
        assert sum(int(g["totals"]["turns"]) for g in body["groups"]) == 5, group_by
    assert await ledger(stranger) == (0, 0)
    assert (await stranger.get("/v1/usageEvents")).json().get("usageEvents", []) == []
    assert (await stranger.get("/v1/usage:providerPerformance")).json().get("providers", []) == []
