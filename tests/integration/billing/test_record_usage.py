"""RecordUsage through the real server against PostgreSQL: exactly-once
recording, conflicts, validation, the internal scope, and billing's own pricing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc

from tests.integration.billing.billing_testkit import (
    CIRCUIT_OPEN,
    SUCCESS,
    VOICE,
    attempt,
    expect_failure,
    usage_event,
)
from vocalbridge.billing.v1 import billing_service_pb2 as pb
from vocalbridge.conversation.v1 import delivery_pb2
from vocalbridge_common.ids import new_id

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def record(stub, relay, events) -> pb.RecordUsageResponse:
    return await stub.RecordUsage(pb.RecordUsageRequest(events=events), metadata=relay)


async def ledger(stub, md, **filters) -> list:
    """Every usage event the tenant of `md` can list."""
    events, token = [], ""
    while True:
        page = await stub.ListUsageEvents(
            pb.ListUsageEventsRequest(page_size=1000, page_token=token, **filters), metadata=md
        )
        events.extend(page.usage_events)
        token = page.next_page_token
        if not token:
            return events


async def totals(stub, md) -> pb.UsageTotals:
    return (await stub.GetUsageSummary(pb.GetUsageSummaryRequest(), metadata=md)).totals


async def test_a_batch_sent_twice_is_recorded_once(stub, relay, tenant, md):
    batch = [usage_event(tenant, prompt_tokens=10 * i, completion_tokens=i) for i in range(1, 6)]

    first = await record(stub, relay, batch)
    after_first = await totals(stub, md)
    second = await record(stub, relay, batch)

    assert (first.accepted_count, first.duplicate_count) == (5, 0)
    assert (second.accepted_count, second.duplicate_count) == (0, 5)
    assert len(await ledger(stub, md)) == 5
    assert await totals(stub, md) == after_first
    assert after_first.turns == 5 and after_first.prompt_tokens == 150 and after_first.completion_tokens == 15
    # Half of the batch again with new events: only the new ones count.
    fresh = [usage_event(tenant) for _ in range(2)]
    third = await record(stub, relay, batch[:3] + fresh)
    assert (third.accepted_count, third.duplicate_count) == (2, 3)
    assert len(await ledger(stub, md)) == 7


async def test_the_same_event_twice_in_one_batch_counts_once(stub, relay, tenant, md):
    event = usage_event(tenant)
    response = await record(stub, relay, [event, event])
    assert (response.accepted_count, response.duplicate_count) == (1, 1)
    assert len(await ledger(stub, md)) == 1


async def test_same_id_with_different_content_is_refused_and_never_overwrites(stub, relay, tenant, md):
    original = usage_event(tenant, prompt_tokens=12)
    await record(stub, relay, [original])
    tampered = pb.RecordUsageRequest(events=[original]).events[0]
    tampered.prompt_tokens = 999
    bystander = usage_event(tenant)

    failure = await expect_failure(
        record(stub, relay, [bystander, tampered]), grpc.StatusCode.ALREADY_EXISTS, "USAGE_EVENT_CONFLICT"
    )

    assert failure.metadata["eventIds"] == original.name.removeprefix("usageEvents/")
    assert failure.metadata["conflictCount"] == "1"
    recorded = await ledger(stub, md)
    # The whole batch was refused: the bystander is not recorded, the original is unchanged.
    assert [e.name for e in recorded] == [original.name]
    assert recorded[0].prompt_tokens == 12 and recorded[0].cost_micros == 84
    # The relay sets the conflicting event aside; the rest then goes through.
    assert (await record(stub, relay, [bystander])).accepted_count == 1


async def test_conflicts_inside_one_batch_are_refused(stub, relay, tenant, md):
    event = usage_event(tenant)
    changed = pb.RecordUsageRequest(events=[event]).events[0]
    changed.event_time.seconds -= 60
    await expect_failure(record(stub, relay, [event, changed]), grpc.StatusCode.ALREADY_EXISTS, "USAGE_EVENT_CONFLICT")
    assert await ledger(stub, md) == []


async def test_an_id_recorded_for_another_tenant_is_a_conflict(stub, relay, tenant, as_tenant):
    event = usage_event(tenant)
    await record(stub, relay, [event])
    other = new_id("ten")
    stolen = pb.RecordUsageRequest(events=[event]).events[0]
    stolen.tenant = f"tenants/{other}"
    await expect_failure(record(stub, relay, [stolen]), grpc.StatusCode.ALREADY_EXISTS, "USAGE_EVENT_CONFLICT")
    assert await ledger(stub, as_tenant(other, ("read",))) == []


async def test_one_invalid_event_fails_the_whole_batch_with_field_violations(stub, relay, tenant, md):
    events = [usage_event(tenant) for _ in range(4)]
    events[2].prompt_tokens = -1
    events[3].channel = 0
    events[3].delivery.attempts[0].outcome = delivery_pb2.ATTEMPT_OUTCOME_UNSPECIFIED

    failure = await expect_failure(record(stub, relay, events), INVALID)

    assert failure.fields == {
        "events[2].prompt_tokens",
        "events[3].channel",
        "events[3].delivery.attempts[0].outcome",
    }
    assert await ledger(stub, md) == []


async def test_each_field_is_validated(stub, relay, tenant):
    def broken(**changes):
        event = usage_event(tenant)
        for field, value in changes.items():
            if field == "event_time":
                event.event_time.FromDatetime(value)
            else:
                setattr(event, field, value)
        return event

    future = datetime.now(UTC) + timedelta(hours=1)
    cases = {
        "events[0].name": broken(name="usageEvents/has spaces"),
        "events[1].tenant": broken(tenant=""),
        "events[2].agent": broken(agent="agt_no_collection"),
        "events[3].session": broken(session=""),
        "events[4].message": broken(message="sessions/ses_other/messages/msg_1"),
        "events[5].agent_version": broken(agent_version=0),
        "events[6].channel": broken(channel=7),
        "events[7].provider": broken(provider=""),
        "events[8].audio_seconds": broken(audio_seconds=-0.5),
        "events[9].tts_characters": broken(tts_characters=-3),
        "events[10].event_time": broken(event_time=future),
        "events[11].cost_micros": broken(cost_micros=-1),
        "events[12].completion_tokens": broken(completion_tokens=10**10),
        "events[13].audio_seconds": broken(audio_seconds=float("nan")),
    }
    event = usage_event(tenant)
    event.delivery.provider = "vendorB"
    cases["events[14].delivery.provider"] = event
    event = usage_event(tenant)
    event.ClearField("event_time")
    cases["events[15].event_time"] = event
    event = usage_event(tenant)
    event.prices.add(name="price/x")
    cases[f"events[16].prices[{len(event.prices) - 1}].name"] = event

    failure = await expect_failure(record(stub, relay, list(cases.values())), INVALID)
    assert failure.fields == set(cases)


async def test_batch_size_limits(stub, relay, tenant, md):
    assert (await expect_failure(record(stub, relay, []), INVALID)).fields == {"events"}
    too_many = [usage_event(tenant) for _ in range(501)]
    assert (await expect_failure(record(stub, relay, too_many), INVALID)).fields == {"events"}
    assert await ledger(stub, md) == []
    full = too_many[:500]
    assert (await record(stub, relay, full)).accepted_count == 500
    assert (await record(stub, relay, full[250:] + too_many[500:])).accepted_count == 1
    assert (await totals(stub, md)).turns == 501


async def test_many_invalid_events_are_reported_in_a_bounded_error(stub, relay, tenant):
    events = [usage_event(tenant, prompt_tokens=1) for _ in range(500)]
    for event in events:
        event.prompt_tokens = -1
        event.completion_tokens = -1
    failure = await expect_failure(record(stub, relay, events), INVALID)
    assert len(failure.fields) == 20


async def test_record_usage_needs_the_internal_scope(stub, tenant, as_tenant):
    event = usage_event(tenant)
    for scopes in (("admin",), ("write",), ("read",), ("operator",)):
        failure = await expect_failure(
            stub.RecordUsage(pb.RecordUsageRequest(events=[event]), metadata=as_tenant(tenant, scopes)),
            grpc.StatusCode.PERMISSION_DENIED,
            "SCOPE_INSUFFICIENT",
        )
        assert failure.metadata["requiredScope"] == "internal"
    await expect_failure(
        stub.RecordUsage(pb.RecordUsageRequest(events=[event])), grpc.StatusCode.UNAUTHENTICATED, "INVALID_IDENTITY"
    )
    assert await ledger(stub, as_tenant(tenant, ("read",))) == []


async def test_one_batch_may_carry_many_tenants_each_sees_its_own(stub, relay, as_tenant):
    first, second = new_id("ten"), new_id("ten")
    batch = [usage_event(first), usage_event(second), usage_event(second)]
    assert (await record(stub, relay, batch)).accepted_count == 3
    assert [e.name for e in await ledger(stub, as_tenant(first, ("read",)))] == [batch[0].name]
    assert sorted(e.name for e in await ledger(stub, as_tenant(second, ("read",)))) == sorted(e.name for e in batch[1:])


async def test_vendor_prices_to_the_micro(stub, relay, tenant, md):
    cases = {
        ("vendorA", 12, 30): 84,
        ("vendorA", 1000, 1000): 4000,
        ("vendorA", 1, 0): 2,
        ("vendorB", 12, 30): 126,
        ("vendorB", 1000, 1000): 6000,
        ("vendorB", 333, 0): 999,
    }
    events = {
        key: usage_event(tenant, provider=key[0], prompt_tokens=key[1], completion_tokens=key[2]) for key in cases
    }
    await record(stub, relay, list(events.values()))
    recorded = {e.name: e for e in await ledger(stub, md)}
    for key, expected in cases.items():
        event = recorded[events[key].name]
        assert event.cost_micros == expected, key
        per_1k = 2000 if key[0] == "vendorA" else 3000
        assert {(p.provider, p.micros_per_unit) for p in event.prices} == {(key[0], per_1k)}
    assert (await totals(stub, md)).cost_micros == sum(cases.values())


async def test_voice_turns_pay_for_audio_seconds_and_characters(stub, relay, tenant, md):
    event = usage_event(
        tenant, channel=VOICE, prompt_tokens=10, completion_tokens=5, audio_seconds=2.5, tts_characters=11
    )
    await record(stub, relay, [event])
    (recorded,) = await ledger(stub, md)
    # 15 tokens × 2 + 2.5 s × 100 + 11 chars × 15 = 30 + 250 + 165
    assert recorded.cost_micros == 445 == event.cost_micros
    assert recorded.audio_seconds == 2.5 and recorded.tts_characters == 11
    assert len(recorded.prices) == 4


async def test_billing_recomputes_the_cost_and_records_its_own(stub, relay, tenant, md):
    wrong = usage_event(tenant, cost_micros=1)
    unpriced = usage_event(tenant, provider="vendorB")
    del unpriced.prices[:]
    unpriced.cost_micros = 0
    await record(stub, relay, [wrong, unpriced])
    recorded = {e.name: e for e in await ledger(stub, md)}
    assert recorded[wrong.name].cost_micros == 84
    assert recorded[unpriced.name].cost_micros == 126
    assert [p.name for p in recorded[unpriced.name].prices] == [
        "prices/prc_00000000000000000000000003",
        "prices/prc_00000000000000000000000004",
    ]


async def test_usage_of_a_provider_without_prices_is_recorded_at_zero_cost(stub, relay, tenant, md):
    event = usage_event(tenant, provider="customLLM")
    assert event.cost_micros == 0
    await record(stub, relay, [event])
    (recorded,) = await ledger(stub, md)
    assert recorded.cost_micros == 0 and list(recorded.prices) == []


async def test_events_read_back_as_recorded(stub, relay, tenant, md):
    attempts = [attempt("vendorA", CIRCUIT_OPEN), attempt("vendorB", SUCCESS, 12.3456789)]
    event = usage_event(tenant, provider="vendorB", model="b-large", attempts=attempts, fallback_used=True)
    before = datetime.now(UTC)
    await record(stub, relay, [event])
    (recorded,) = await ledger(stub, md)

    expected = pb.RecordUsageRequest(events=[event]).events[0]
    expected.ClearField("prices")
    got = pb.RecordUsageRequest(events=[recorded]).events[0]
    got.ClearField("prices")
    got.ClearField("record_time")
    assert got == expected
    assert recorded.record_time.ToDatetime(tzinfo=UTC) >= before.replace(microsecond=0)
    assert [p.name for p in recorded.prices] == [p.name for p in event.prices]
    assert recorded.prices[0].micros_per_unit == 3000
    assert recorded.delivery.attempts[1].latency.ToNanoseconds() == 12_345_679


async def test_an_event_without_delivery_or_message_reads_back_without_them(stub, relay, tenant, md):
    event = usage_event(tenant)
    event.ClearField("delivery")
    event.message = ""
    await record(stub, relay, [event])
    (recorded,) = await ledger(stub, md)
    assert not recorded.HasField("delivery") and recorded.message == ""
    assert recorded.name == event.name and recorded.cost_micros == event.cost_micros


async def test_integers_beyond_the_ledgers_range_are_invalid_argument_before_the_write(stub, relay, tenant, md):
    """Each was an INTERNAL error at the INSERT on PostgreSQL (bigint), after the batch had begun."""
    from google.protobuf import duration_pb2

    huge_latency = usage_event(tenant)
    huge_latency.delivery.latency.CopyFrom(duration_pb2.Duration(seconds=10**11))  # 1e20 ns
    huge_attempt = usage_event(tenant)
    huge_attempt.delivery.attempts[0].latency.CopyFrom(duration_pb2.Duration(seconds=2**40))
    huge_cost = usage_event(tenant, cost_micros=2**63 - 1)
    far_time = usage_event(tenant)
    far_time.event_time.seconds = 2**62  # beyond any datetime
    for bad, field in (
        (huge_latency, "events[0].delivery.latency"),
        (huge_attempt, "events[0].delivery.attempts[0].latency"),
        (huge_cost, "events[0].cost_micros"),
        (far_time, "events[0].event_time"),
    ):
        failure = await expect_failure(record(stub, relay, [bad]), INVALID)
        assert field in failure.fields, (field, failure)
    assert await ledger(stub, md) == []
    # The positive control: the same events within range are recorded.
    assert (await record(stub, relay, [usage_event(tenant)])).accepted_count == 1
