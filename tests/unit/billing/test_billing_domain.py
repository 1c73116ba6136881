"""Billing's pure logic: event validation, the content digest that tells a
duplicate from a conflict, pricing an event into a ledger entry, the queries
page tokens are bound to, percentiles, and the page-size rule."""

from __future__ import annotations

import dataclasses
import statistics
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocalbridge_billing.domain import (
    AttemptDraft,
    DeliveryDraft,
    Totals,
    UsageEventDraft,
    UsageFilter,
    check_page_size,
    event_cursor,
    event_list_query,
    percentile_cont,
    price_cursor,
    price_event,
    validate_event,
)
from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.pagination import PageRequest
from vocalbridge_common.pricing import SEED_PRICES, PriceUnit
from vocalbridge_common.validation import Violations
from vocalbridge_common.vocabulary import AttemptOutcome, Channel

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
SKEW = timedelta(minutes=5)


def draft(**changes) -> UsageEventDraft:
    values = dict(
        name="usageEvents/evt-1",
        tenant="tenants/ten_1",
        agent="agents/agt_1",
        agent_version=3,
        session="sessions/ses_1",
        message="sessions/ses_1/messages/msg_1",
        channel=Channel.VOICE,
        provider="vendorA",
        model="",
        prompt_tokens=12,
        completion_tokens=30,
        audio_seconds=1.2345,
        tts_characters=7,
        cost_micros=84,
        price_names=("prices/prc_1",),
        event_time=NOW - timedelta(minutes=1),
        delivery=DeliveryDraft("vendorA", "", False, (AttemptDraft("vendorA", AttemptOutcome.SUCCESS, 10, 0, ""),), 10),
    )
    values.update(changes)
    return UsageEventDraft(**values)


def validate(event: UsageEventDraft):
    violations = Violations()
    return validate_event(event, "events[0]", NOW, SKEW, violations), {v.field for v in violations}


def test_a_valid_draft_becomes_a_ledger_entry_with_parsed_ids():
    event, fields = validate(draft())
    assert fields == set()
    assert (event.event_id, event.tenant_id, event.agent_id, event.session_id, event.message_id) == (
        "evt-1",
        "ten_1",
        "agt_1",
        "ses_1",
        "msg_1",
    )
    assert event.quantities.audio_millis == 1235
    assert event.price_ids == ("prc_1",)


def test_message_and_delivery_are_optional():
    event, fields = validate(draft(message="", delivery=None))
    assert fields == set() and event.message_id == "" and event.delivery.attempts == ()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "evt-1"}, "name"),
        ({"name": "usageEvents/" + "x" * 129}, "name"),
        ({"tenant": "tenants/"}, "tenant"),
        ({"agent": ""}, "agent"),
        ({"session": "sessions/a/b"}, "session"),
        ({"message": "sessions/ses_2/messages/msg_1"}, "message"),
        ({"message": "messages/msg_1"}, "message"),
        ({"agent_version": 0}, "agent_version"),
        ({"channel": None}, "channel"),  # unset, or a value this version does not know
        ({"provider": " vendorA", "delivery": None}, "provider"),
        ({"model": "m" * 101}, "model"),
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"tts_characters": 10**9 + 1}, "tts_characters"),
        ({"audio_seconds": float("inf")}, "audio_seconds"),
        ({"audio_seconds": 86_400.5}, "audio_seconds"),
        ({"cost_micros": -5}, "cost_micros"),
        ({"price_names": ("prices/ok", "nope")}, "prices[1].name"),
        ({"event_time": None}, "event_time"),
        ({"event_time": NOW + SKEW + timedelta(seconds=1)}, "event_time"),
        ({"delivery": DeliveryDraft("vendorB", "", False, (), 0)}, "delivery.provider"),
        ({"delivery": DeliveryDraft("vendorA", "", False, (), -1)}, "delivery.latency"),
        # Above bigint in the ledger: refused, not an INTERNAL error at the write.
        ({"delivery": DeliveryDraft("vendorA", "", False, (), 2**63)}, "delivery.latency"),
        ({"cost_micros": 2**63}, "cost_micros"),
        (
            {
                "delivery": DeliveryDraft(
                    "", "", False, (AttemptDraft("vendorA", AttemptOutcome.SUCCESS, 10**20, 0, ""),), 0
                )
            },
            "delivery.attempts[0].latency",
        ),
        (
            {"delivery": DeliveryDraft("", "", False, (AttemptDraft("", AttemptOutcome.SUCCESS, 0, 0, ""),), 0)},
            "delivery.attempts[0].provider",
        ),
        (
            {"delivery": DeliveryDraft("", "", False, (AttemptDraft("vendorA", None, 0, 0, ""),), 0)},
            "delivery.attempts[0].outcome",
        ),
        (
            {
                "delivery": DeliveryDraft(
                    "", "", False, (AttemptDraft("vendorA", AttemptOutcome.TIMEOUT, 0, -1, ""),), 0
                )
            },
            "delivery.attempts[0].backoff",
        ),
        (
            {
                "delivery": DeliveryDraft(
                    "", "", False, (AttemptDraft("vendorA", AttemptOutcome.TIMEOUT, 0, 0, ""),) * 51, 0
                )
            },
            "delivery.attempts",
        ),
    ],
)
def test_each_problem_is_named_by_its_field(changes, field):
    event, fields = validate(draft(**changes))
    assert event is None
    assert fields == {f"events[0].{field}"}


def test_a_clock_skew_within_the_allowance_is_accepted():
    event, fields = validate(draft(event_time=NOW + SKEW))
    assert fields == set() and event.event_time == NOW + SKEW


def test_the_digest_is_stable_and_sees_every_field():
    base = draft()
    assert base.content_digest() == draft().content_digest()
    # The same instant in another time zone is the same event.
    shifted = draft(event_time=base.event_time.astimezone(timezone(timedelta(hours=2))))
    assert shifted.content_digest() == base.content_digest()
    changed = {
        "prompt_tokens": 13,
        "cost_micros": 85,
        "price_names": (),
        "channel": Channel.TEXT,
        "model": "x",
        "event_time": base.event_time + timedelta(microseconds=1),
        "tenant": "tenants/ten_2",
        "delivery": dataclasses.replace(base.delivery, fallback_used=True),
    }
    digests = {base.content_digest()}
    for field, value in changed.items():
        digests.add(draft(**{field: value}).content_digest())
    assert len(digests) == len(changed) + 1


def test_the_digest_of_a_recorded_event_never_changes():
    """The ledger stores each event's digest and compares a re-send against it: a digest
    that changed between versions would refuse the relay's re-sends as conflicts."""
    event = draft(
        event_time=datetime(2026, 11, 24, 11, 59, tzinfo=UTC),
        delivery=DeliveryDraft(
            "vendorA",
            "",
            False,
            (
                AttemptDraft("vendorA", AttemptOutcome.TIMEOUT, 10, 5, "slow"),
                AttemptDraft("vendorA", AttemptOutcome.SUCCESS, 10, 0, ""),
            ),
            25,
        ),
    )
    assert event.content_digest() == "ddce4affb25536b56667e7081e9041e69c1c607d3eea4c0fc10974ea7bc68761"
    text_only = dataclasses.replace(event, channel=Channel.TEXT, delivery=None, audio_seconds=0.0, price_names=())
    assert text_only.content_digest() == "af3d2238e37b22fcacaa9b02f60b1c6f3cec6a39dc9a263ca4da6b87a729a29a"


def test_billing_prices_an_event_itself_at_the_rows_in_effect_at_its_time():
    attempts = (
        AttemptDraft("vendorA", AttemptOutcome.CIRCUIT_OPEN, 0, 0, ""),
        AttemptDraft("vendorB", AttemptOutcome.TIMEOUT, 30, 0, "x" * 600),
        AttemptDraft("vendorB", AttemptOutcome.SUCCESS, 20, 5, ""),
    )
    event, _ = validate(
        draft(provider="vendorB", delivery=DeliveryDraft("vendorB", "", True, attempts, 55), cost_micros=1)
    )
    entry = price_event(event, SEED_PRICES, NOW)
    # 42 tokens at vendorB's 3000 per 1K, 1.235 s at 100 a second, 7 characters at 15:
    # 126 + 123.5 + 105, rounded once, on the total.
    assert entry.cost_micros == 355
    assert entry.price_ids == {
        PriceUnit.PER_1K_PROMPT_TOKENS: "prc_00000000000000000000000003",
        PriceUnit.PER_1K_COMPLETION_TOKENS: "prc_00000000000000000000000004",
        PriceUnit.PER_AUDIO_SECOND: "prc_00000000000000000000000005",
        PriceUnit.PER_CHARACTER: "prc_00000000000000000000000006",
    }
    assert not entry.agrees_with_producer  # the producer said 1 micro at prices/prc_1
    assert (entry.attempt_count, entry.failed_attempt_count, entry.circuit_open_skips) == (2, 1, 1)
    assert entry.started_provider == "vendorA" and entry.event_day == "2026-11-24"
    assert len(entry.attempts[1].error_message) == 500
    before_any_price = price_event(
        dataclasses.replace(event, event_time=datetime(1999, 12, 31, tzinfo=UTC)), SEED_PRICES, NOW
    )
    assert before_any_price.cost_micros == 0 and len(before_any_price.unpriced_units) == 4


def test_a_list_token_is_bound_to_the_tenant_and_every_filter():
    base = UsageFilter()
    changed = [
        UsageFilter(start=NOW),
        UsageFilter(end=NOW),
        UsageFilter(agent_id="agt_1"),
        UsageFilter(provider="vendorA"),
        UsageFilter(channel=Channel.TEXT),
        UsageFilter(channel=Channel.VOICE),
        UsageFilter(session_id="ses_1"),
    ]
    queries = {event_list_query("ten_1", base), event_list_query("ten_2", base)}
    queries |= {event_list_query("ten_1", f) for f in changed}
    assert len(queries) == len(changed) + 2


def test_a_page_token_gives_back_the_position_it_was_made_at():
    assert event_cursor(PageRequest("q", 1, None)) is None
    assert event_cursor(PageRequest("q", 1, ["2026-11-24T00:00:00+00:00", "evt-1"])) == (
        datetime(2026, 11, 24, tzinfo=UTC),
        "evt-1",
    )
    assert price_cursor(PageRequest("q", 1, None)) is None
    assert price_cursor(
        PageRequest("q", 1, ["vendorA", "", "PER_CHARACTER", "2000-01-01T00:00:00+00:00", "prc_1"])
    ) == ("vendorA", "", "PER_CHARACTER", datetime(2000, 1, 1, tzinfo=UTC), "prc_1")


@pytest.mark.parametrize(
    "key", ["evt-1", 7, ["2026-11-24T00:00:00+00:00"], ["2026-11-24T00:00:00+00:00", 7], ["a", "b", "c"]]
)
def test_a_page_key_of_another_shape_is_a_bad_token(key):
    for cursor in (event_cursor, price_cursor):
        with pytest.raises(InvalidArgument) as caught:
            cursor(PageRequest("q", 1, key))
        assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_percentile_cont_interpolates_like_postgresql():
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([7], 0.95) == 7
    assert percentile_cont([100, 200], 0.5) == 150
    assert percentile_cont([100, 200], 0.95) == pytest.approx(195)
    assert percentile_cont([150, 250, 400], 0.95) == pytest.approx(385)
    assert percentile_cont([1, 2, 3, 4], 0.5) == 2.5


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=2, max_size=200))
def test_percentile_cont_agrees_with_the_inclusive_quantile_method(values):
    values.sort()
    expected = statistics.quantiles(values, n=100, method="inclusive")
    assert percentile_cont(values, 0.5) == pytest.approx(statistics.median(values))
    assert percentile_cont(values, 0.95) == pytest.approx(expected[94])


def test_totals_add_field_by_field():
    assert Totals(1, 2, 3, 4, 5, 6) + Totals(10, 20, 30, 40, 50, 60) == Totals(11, 22, 33, 44, 55, 66)


@pytest.mark.parametrize("asked", [0, 1, 1000, 1001, 2**31 - 1])
def test_page_sizes_from_zero_up_are_accepted_and_left_to_the_common_clamp(asked):
    violations = Violations()
    check_page_size(asked, violations)
    assert violations == []


@pytest.mark.parametrize("asked", [-1, -(2**31)])
def test_negative_page_sizes_are_reported_with_the_other_violations(asked):
    violations = Violations()
    violations.add("agent", "must be `agents/{agent_id}`")
    check_page_size(asked, violations)
    assert [v.field for v in violations] == ["agent", "page_size"]
